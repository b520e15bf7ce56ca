"""Console fixtures: a real sidecar (AdminService behind a real principals file) and the console in front of it.

`stack` runs both in this test's event loop: the sidecar on loopback gRPC, the console app
through httpx's ASGI transport (the real app, its middleware and templates; no sockets), with
a `FakeClock` the test advances instead of sleeping. `console_client()` is a fresh browser
(own cookie jar) with helpers to sign in and to post forms with the page's CSRF token.
Test modules import nothing from here at run time (types under TYPE_CHECKING only).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from consent_sidecar.audit import AuditLog, AuditRecord
from consent_sidecar.auth.gate import Authenticator, PrincipalsFile
from consent_sidecar.auth.principals import hash_token
from consent_sidecar.config import ServeConfig
from consent_sidecar.console.app import ConsoleApp, create_app
from consent_sidecar.console.server import bind, serve
from consent_sidecar.console.settings import ConsoleConfig
from consent_sidecar.process.server import Sidecar
from consent_sidecar.store.policy import PolicyStore
from consent_sidecar.store.writer import PolicyWriter

from .support import csrf_of

OWNER_TOKEN = "owner-secret-token-4d1f9a"
MEMBER_TOKEN = "member-secret-token-77c2e0"
OTHER_OWNER_TOKEN = "second-owner-token-0b5e"

MAPPING = """\
# The shop's consent mapping (hand-edited too).
version: 1
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude, mixpanel]
  - id: C0003
    name: Functional Cookies
    shadow: true
    destinations: [hotjar]
  - id: C0004
    name: Targeting Cookies
    destinations: [google-ads, braze]
  - id: C0006
    name: Legacy Cookies
    enabled: false
    destinations: [doubleclick]
"""


@dataclass(frozen=True)
class Tokens:
    owner: str = OWNER_TOKEN  # alice
    member: str = MEMBER_TOKEN  # bob
    other_owner: str = OTHER_OWNER_TOKEN  # carol


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens()


def principals_yaml() -> str:
    return (
        "principals:\n"
        f"  - {{id: alice, role: owner, token_sha256: {hash_token(OWNER_TOKEN)}}}\n"
        f"  - {{id: bob, role: member, token_sha256: {hash_token(MEMBER_TOKEN)}}}\n"
        f"  - {{id: carol, role: owner, token_sha256: {hash_token(OTHER_OWNER_TOKEN)}}}\n"
    )


@dataclass
class RunningAdmin:
    """A sidecar whose admin listener authenticates alice (owner), bob (member) and carol (owner)."""

    address: str
    store: PolicyStore
    audit: AuditLog
    writer: PolicyWriter
    path: Path
    principals: PrincipalsFile

    def events(self, after: int = 0) -> list[AuditRecord]:
        records, _ = self.audit.page(page_size=1000, after_sequence=after)
        return records

    def state(self) -> tuple[bytes, int, int]:
        """What "nothing changed" compares: the mapping file, the policy generation, the trail's length."""
        return self.path.read_bytes(), self.store.current.generation, len(self.events())


@contextlib.asynccontextmanager
async def admin_sidecar(directory: Path, mapping: str = MAPPING, **serve_config: Any) -> AsyncIterator[RunningAdmin]:
    """The sidecar as `serve` builds it with --admin-listen and --principals, on 127.0.0.1:0."""
    path = directory / "mappings.yaml"
    path.write_text(mapping, encoding="utf-8")
    principals_path = directory / "principals.yaml"
    principals_path.write_text(principals_yaml(), encoding="utf-8")
    cfg = ServeConfig(
        mappings=str(path), listen=("127.0.0.1:0",), admin_listen="127.0.0.1:0", principals=str(principals_path),
        grace_period=1.0, **serve_config,
    )
    store = PolicyStore()
    store.load_initial(cfg.mappings)
    audit = AuditLog.open(directory / "audit.db")
    writer = PolicyWriter(store, audit)
    await writer.start()
    principals = PrincipalsFile.load(str(principals_path))
    sidecar = Sidecar(cfg, store, audit=audit, writer=writer, gate=Authenticator(principals, audit))
    await sidecar.start()
    assert sidecar.admin_address is not None
    try:
        yield RunningAdmin(sidecar.admin_address, store, audit, writer, path, principals)
    finally:
        await sidecar.stop(None)
        await writer.aclose()
        audit.close()


class FakeClock:
    """A monotonic clock the test moves by hand (session expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class ConsoleClient:
    """One browser: an httpx client with its own cookies, talking to the console app."""

    http: httpx.AsyncClient
    pages: list[httpx.Response] = field(default_factory=list)  # every response, for "no token anywhere"

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        r = await self.http.get(path, **kwargs)
        self.pages.append(r)
        return r

    async def post(self, path: str, data: dict[str, str] | None = None, *, csrf_from: str | None = None,
                   **kwargs: Any) -> httpx.Response:
        """POSTs `data`; with `csrf_from`, adds the csrf_token of that page (as a browser submitting it would)."""
        fields = dict(data or {})
        if csrf_from is not None:
            fields["csrf_token"] = csrf_of((await self.get(csrf_from)).text)
        r = await self.http.post(path, data=fields, **kwargs)
        self.pages.append(r)
        return r

    async def login(self, token: str) -> httpx.Response:
        r = await self.post("/login", {"token": token}, csrf_from="/login")
        assert r.status_code == 303, r.text
        return r

    async def csrf(self) -> str:
        return csrf_of((await self.get("/categories")).text)


@dataclass
class Stack:
    """The sidecar, the console app in front of it, and the clock its sessions use."""

    sidecar: RunningAdmin
    app: ConsoleApp
    clock: FakeClock
    config: ConsoleConfig
    clients: list[ConsoleClient] = field(default_factory=list)

    def client(self, base_url: str = "http://console.test") -> ConsoleClient:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=base_url)
        c = ConsoleClient(http)
        self.clients.append(c)
        return c

    async def client_for(self, token: str) -> ConsoleClient:
        """A fresh browser, signed in with `token`."""
        c = self.client()
        await c.login(token)
        return c

    async def owner(self) -> ConsoleClient:
        return await self.client_for(OWNER_TOKEN)

    async def member(self) -> ConsoleClient:
        return await self.client_for(MEMBER_TOKEN)


@contextlib.asynccontextmanager
async def console_stack(directory: Path, *, mapping: str = MAPPING, **config: Any) -> AsyncIterator[Stack]:
    async with admin_sidecar(directory, mapping) as sidecar:
        clock = FakeClock()
        cfg = ConsoleConfig(admin_address=sidecar.address, **config)
        app = create_app(cfg, clock=clock)
        stack = Stack(sidecar, app, clock, cfg)
        try:
            yield stack
        finally:
            for c in stack.clients:
                await c.http.aclose()
            await app.console.gateway.close()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with console_stack(tmp_path) as s:
        yield s


@pytest.fixture
def start_stack(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[Stack]]:
    """`console_stack` bound to tmp_path: `async with start_stack(mapping=..., session_idle=...) as s:`."""

    def start(**kwargs: Any) -> contextlib.AbstractAsyncContextManager[Stack]:
        return console_stack(tmp_path, **kwargs)

    return start


# -- the console served for real (uvicorn on a socket), for a browser -------------------------------

T = TypeVar("T")


class ServedStack:
    """A sidecar and the console on uvicorn at 127.0.0.1:0, in their own thread's event loop.

    For tests that drive it synchronously (Selenium): `url` is where it answers; `sidecar`
    exposes the mapping file and the store, read from the test's thread (both atomic reads).
    """

    def __init__(self, directory: Path) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="served-stack", daemon=True)
        self._exit = contextlib.AsyncExitStack()
        self._directory = directory
        self.url = ""

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> None:
        self._thread.start()
        self.sidecar = self.call(self._exit.enter_async_context(admin_sidecar(self._directory)))
        ready = threading.Event()

        def on_ready(url: str) -> None:
            self.url = url
            ready.set()

        async def make_stop() -> asyncio.Event:
            return asyncio.Event()

        self._stop = self.call(make_stop())
        config = ConsoleConfig(admin_address=self.sidecar.address, listen="127.0.0.1:0")
        self._serving = asyncio.run_coroutine_threadsafe(
            serve(config, bind(config.listen), stop=self._stop, ready=on_ready), self._loop
        )
        assert ready.wait(timeout=30), "the console did not start"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._serving.result(timeout=30)
        self.call(self._exit.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedStack]:
    stack = ServedStack(tmp_path_factory.mktemp("served"))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@contextlib.asynccontextmanager
async def served_console(config: ConsoleConfig) -> AsyncIterator[str]:
    """The console served by uvicorn in this event loop (port 0); yields its URL, stops (draining) after."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(serve(config, bind(config.listen), stop=stop, ready=ready.set_result))
    try:
        yield await asyncio.wait_for(asyncio.shield(ready), timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


@pytest.fixture
def serve_console() -> Callable[[ConsoleConfig], contextlib.AbstractAsyncContextManager[str]]:
    """`async with serve_console(config) as url:` the console on a real socket in this test's loop."""
    return served_console


@pytest.fixture
def start_admin(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[RunningAdmin]]:
    """`admin_sidecar` bound to tmp_path: `async with start_admin(admin_tls_cert=...) as sidecar:`."""

    def start(**kwargs: Any) -> contextlib.AbstractAsyncContextManager[RunningAdmin]:
        return admin_sidecar(tmp_path, **kwargs)

    return start
