"""The owner console's categories page with 1,000 categories: server-side time against its baselines.

`python -m bench.bench_console [--rounds N] [--requests N]` (not part of `make test`). Starts a
sidecar in-process with an authenticated admin listener on a mapping of 1,000 categories (the
default limit) of 5 destinations each, and the console app in front of it (in-process ASGI:
no browser, no socket, so the figures are the server's own time). Rows take turns within each
round; the table shows the median of the rounds' medians, and each ratio compares rows of the
same round:

    rpc       ListCategories of the 1,000 categories, as the console makes it (its floor)
    render    the categories template alone, rendering that answer (no I/O)
    page      GET /categories as an owner: session, RPC, render, security headers
    small     GET /categories of a 3-category mapping on the same sidecar stack (page overhead)

The budget is the page under 100 ms; the last line says whether it was met (exit 1 if not).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from consent_sidecar.audit import AuditLog
from consent_sidecar.auth.gate import Authenticator, PrincipalsFile
from consent_sidecar.auth.principals import hash_token
from consent_sidecar.config import ServeConfig
from consent_sidecar.console.admin import AdminGateway
from consent_sidecar.console.app import create_app, templates
from consent_sidecar.console.settings import ConsoleConfig
from consent_sidecar.process.server import Sidecar
from consent_sidecar.store.policy import PolicyStore
from consent_sidecar.store.writer import PolicyWriter

__all__ = ["BUDGET_MS", "Row", "format_rows", "main", "mapping", "run"]

BUDGET_MS: Final = 100.0
CATEGORIES: Final = 1000
DESTINATIONS_EACH: Final = 5
TOKEN: Final = "bench-owner-token"


def mapping(categories: int, destinations_each: int = DESTINATIONS_EACH) -> str:
    lines = ["version: 1", "categories:"]
    for i in range(categories):
        dests = ", ".join(f"dest-{(i * destinations_each + j) % 4000:04d}" for j in range(destinations_each))
        lines += [f"  - id: C{i:05d}", f"    name: Category number {i}", f"    enabled: {str(i % 7 != 0).lower()}",
                  f"    destinations: [{dests}]"]
    return "\n".join(lines) + "\n"


def _write_files(directory: Path, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mappings.yaml").write_text(text, encoding="utf-8")
    (directory / "principals.yaml").write_text(
        f"principals:\n  - {{id: bench, role: owner, token_sha256: {hash_token(TOKEN)}}}\n", encoding="utf-8"
    )


@contextlib.asynccontextmanager
async def sidecar(directory: Path, text: str) -> AsyncIterator[str]:
    """A sidecar with an admin listener that knows TOKEN as an owner; yields its admin address."""
    _write_files(directory, text)
    cfg = ServeConfig(mappings=str(directory / "mappings.yaml"), listen=("127.0.0.1:0",),
                      admin_listen="127.0.0.1:0", principals=str(directory / "principals.yaml"), grace_period=1.0)
    store = PolicyStore()
    store.load_initial(cfg.mappings)
    audit = AuditLog.open(directory / "audit.db")
    writer = PolicyWriter(store, audit)
    await writer.start()
    gate = Authenticator(PrincipalsFile.load(str(directory / "principals.yaml")), audit)
    server = Sidecar(cfg, store, audit=audit, writer=writer, gate=gate)
    await server.start()
    assert server.admin_address is not None
    try:
        yield server.admin_address
    finally:
        await server.stop(None)
        await writer.aclose()
        audit.close()


@contextlib.asynccontextmanager
async def signed_in(address: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ConsoleConfig(admin_address=address))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.bench") as http:
        form = (await http.get("/login")).text
        csrf = form.split('name="csrf_token" value="')[1].split('"')[0]
        r = await http.post("/login", data={"token": TOKEN, "csrf_token": csrf})
        assert r.status_code == 303, r.text
        try:
            yield http
        finally:
            await app.console.gateway.close()


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    what: str
    rounds_ms: list[float]  # each round's median

    @property
    def median_ms(self) -> float:
        return statistics.median(self.rounds_ms)


async def _timed(action: Callable[[], Awaitable[object]], requests: int) -> float:
    """The median milliseconds of `requests` calls of `action`."""
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        await action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def run(*, rounds: int = 5, requests: int = 20) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        base = Path(tmp)
        async with sidecar(base / "big", mapping(CATEGORIES)) as big, sidecar(base / "small", mapping(3)) as small, \
                signed_in(big) as page, signed_in(small) as small_page:
            gateway = AdminGateway(big)
            listing = await gateway.list_categories(TOKEN)
            assert len(listing.categories) == CATEGORIES
            template = templates().get_template("categories.html")
            context = {"categories": listing.categories, "policy": listing.policy, "session": None, "owner": True,
                       "csrf": "x" * 43, "flash": None, "path": "/categories", "modal": False}

            async def render() -> object:
                return template.render(context)

            async def get_page() -> object:
                r = await page.get("/categories")
                assert r.status_code == 200
                return r

            first = await page.get("/categories")  # checked once, outside the timings
            assert first.text.count("<tr data-category-id=") == CATEGORIES

            async def get_small() -> object:
                r = await small_page.get("/categories")
                assert r.status_code == 200
                return r

            cases: list[tuple[str, str, Callable[[], Awaitable[object]]]] = [
                ("rpc", f"ListCategories, {CATEGORIES} categories", lambda: gateway.list_categories(TOKEN)),
                ("render", f"categories.html, {CATEGORIES} rows, no I/O", render),
                ("page", f"GET /categories, {CATEGORIES} categories", get_page),
                ("small", "GET /categories, 3 categories", get_small),
            ]
            for _, _, action in cases:  # warm-up: channels, template compilation, caches
                await _timed(action, 3)
            measured: dict[str, list[float]] = {name: [] for name, _, _ in cases}
            for _ in range(rounds):
                for name, _, action in cases:
                    measured[name].append(await _timed(action, requests))
            await gateway.close()
            return [Row(name, what, measured[name]) for name, what, _ in cases]


def format_rows(rows: list[Row]) -> str:
    by = {r.name: r for r in rows}
    floor = by["rpc"]
    lines = [f"{'row':<8} {'what':<42} {'median ms':>10} {'x rpc':>7}"]
    for r in rows:
        ratios = [m / f for m, f in zip(r.rounds_ms, floor.rounds_ms, strict=True)]
        lines.append(f"{r.name:<8} {r.what:<42} {r.median_ms:>10.2f} {statistics.median(ratios):>7.2f}")
    page = by["page"].median_ms
    verdict = "met" if page < BUDGET_MS else "NOT met"
    lines.append(
        f"budget: the {CATEGORIES}-category page under {BUDGET_MS:g} ms server-side: {verdict} ({page:.1f} ms)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_console", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds, rows interleaved (default 5)")
    parser.add_argument("--requests", type=int, default=20, help="timed calls per row per round (default 20)")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(rounds=args.rounds, requests=args.requests))
    print(f"console categories page, median of {args.rounds} rounds x {args.requests} calls; ratio to rpc per round")
    print(format_rows(rows))
    return 0 if next(r for r in rows if r.name == "page").median_ms < BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
