"""Admin authentication: the hot-reloaded principals file, the per-RPC gate, and the admin listener's TLS flags."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2, admin_pb2_grpc
from consent_core.errors import PrincipalsError, Unauthenticated

from consent_sidecar.audit import AuditLog
from consent_sidecar.auth.gate import Authenticator, PrincipalsFile, TLSConfigError, admin_credentials
from consent_sidecar.auth.principals import hash_token
from consent_sidecar.config import ServeConfig
from consent_sidecar.process.server import AUDIT_DB_NAME, EXIT_LISTEN, EXIT_OK, Sidecar, serve
from consent_sidecar.store.policy import PolicyStore
from consent_sidecar.store.writer import PolicyWriter

WAIT = 30.0  # upper bound of every wait here, in seconds


def principals_yaml(**roles: str) -> str:
    """`alice="owner"` -> a principal alice, role owner, whose token is "alice-token"."""
    lines = ["principals:"]
    for pid, role in roles.items():
        lines += [f"  - id: {pid}", f"    role: {role}", f"    token_sha256: {hash_token(pid + '-token')}"]
    return "\n".join(lines) + "\n"


def knows(pf: PrincipalsFile, pid: str) -> bool:
    try:
        return pf.current.authenticate(pid + "-token").id == pid
    except Unauthenticated:
        return False


# -- the principals file, hot-reloaded ------------------------------------------------------


def test_a_broken_principals_file_fails_to_load_with_positions(tmp_path: Path) -> None:
    path = tmp_path / "principals.yaml"
    path.write_text("principals:\n  - id: alice\n    role: admin\n    token_sha256: abc\n")
    with pytest.raises(PrincipalsError) as e:
        PrincipalsFile.load(str(path))
    text = e.value.format()
    assert f"{path}:3:11: principals[0].role: must be owner or member" in text
    assert f"{path}:4:19: principals[0].token_sha256: must be 64 lowercase hex" in text


class Reloading:
    def __init__(self, pf: PrincipalsFile, path: Path) -> None:
        self.pf = pf
        self.path = path

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def check() -> None:
            async with self.pf.reloaded:
                await self.pf.reloaded.wait_for(predicate)

        await asyncio.wait_for(check(), timeout)

    def replace(self, text: str) -> None:
        """Editor-style save: a temp file renamed over the original."""
        tmp = self.path.with_name(".principals.yaml.swp")
        tmp.write_text(text)
        os.replace(tmp, self.path)


@pytest.fixture
async def reloading(tmp_path: Path) -> AsyncIterator[Reloading]:
    path = tmp_path / "principals.yaml"
    path.write_text(principals_yaml(alice="owner"))
    pf = PrincipalsFile.load(str(path), debounce_ms=50, step_ms=10, settle_ms=10, retry_ms=30, max_retries=2)
    stop = asyncio.Event()
    task = asyncio.create_task(pf.run(stop))
    await asyncio.wait_for(pf.watching.wait(), 10)
    yield Reloading(pf, path)
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_an_added_principal_is_accepted_after_an_in_place_write(reloading: Reloading) -> None:
    assert not knows(reloading.pf, "bob")
    reloading.path.write_text(principals_yaml(alice="owner", bob="member"))
    await reloading.wait_for(lambda: knows(reloading.pf, "bob"))
    assert knows(reloading.pf, "alice")


async def test_a_removed_principal_is_refused_after_a_rename_save(reloading: Reloading) -> None:
    reloading.replace(principals_yaml(bob="owner"))
    await reloading.wait_for(lambda: knows(reloading.pf, "bob"))
    assert not knows(reloading.pf, "alice")


async def test_a_broken_edit_keeps_the_last_good_principals_and_reports_where(reloading: Reloading) -> None:
    reloading.path.write_text("principals:\n  - id: alice\n    role: root\n")
    await reloading.wait_for(lambda: reloading.pf.failed_reloads >= 1)
    assert knows(reloading.pf, "alice")
    assert reloading.pf.last_error is not None
    assert f"{reloading.path}:3:11: principals[0].role: must be owner or member" in reloading.pf.last_error
    reloading.path.write_text(principals_yaml(alice="member", carol="owner"))
    await reloading.wait_for(lambda: knows(reloading.pf, "carol"))
    assert reloading.pf.last_error is None


async def test_a_deleted_principals_file_keeps_the_last_good(reloading: Reloading) -> None:
    reloading.path.unlink()
    await reloading.wait_for(lambda: reloading.pf.failed_reloads >= 1)
    assert knows(reloading.pf, "alice")
    assert reloading.pf.last_error is not None and "cannot read" in reloading.pf.last_error


# -- TLS flags --------------------------------------------------------------------------------


def test_plaintext_without_tls_flags() -> None:
    assert admin_credentials(ServeConfig(mappings="m", admin_listen="127.0.0.1:0")) is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"admin_tls_cert": "c"}, "--admin-tls-cert and --admin-tls-key must be given together"),
        ({"admin_tls_key": "k"}, "--admin-tls-cert and --admin-tls-key must be given together"),
        ({"admin_client_ca": "ca"}, "--admin-client-ca needs --admin-tls-cert and --admin-tls-key"),
        ({"admin_tls_cert": "/nonexistent/c.pem", "admin_tls_key": "k"}, "--admin-tls-cert /nonexistent/c.pem: cannot"),
    ],
)
def test_inconsistent_tls_flags_are_refused_naming_the_flag(flags: dict[str, str], message: str) -> None:
    with pytest.raises(TLSConfigError, match=message):
        admin_credentials(ServeConfig(mappings="m", admin_listen="127.0.0.1:0", **flags))


def test_a_key_file_holding_no_key_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TLSConfigError, match=r"--admin-tls-key .*does not hold a PEM private key"):
        admin_credentials(
            ServeConfig(mappings="m", admin_listen="127.0.0.1:0", admin_tls_cert=str(cert), admin_tls_key=str(cert))
        )


# -- serve(): the admin listener needs principals -------------------------------------------

MAPPING = """\
version: 1
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude]
"""


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cs-authn-") as d:
        yield Path(d)


async def serve_failing(config: ServeConfig) -> tuple[int, str]:
    err = io.StringIO()
    code = await asyncio.wait_for(serve(config, stop=asyncio.Event(), stderr=err), timeout=WAIT)
    return code, err.getvalue()


async def test_an_admin_listener_without_principals_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MAPPING)
    with short_dir() as sockets:
        config = ServeConfig(
            mappings=str(tmp_path / "m.yaml"), listen=(f"unix:{sockets / 'd.sock'}",),
            admin_listen=f"unix:{sockets / 'a.sock'}",
        )  # fmt: skip
        code, err = await serve_failing(config)
        assert code == EXIT_LISTEN
        assert "needs --principals FILE" in err and "never runs unauthenticated" in err
        assert not (sockets / "d.sock").exists() and not (sockets / "a.sock").exists()
    assert not (tmp_path / AUDIT_DB_NAME).exists()  # refused before anything was opened


async def test_a_broken_principals_file_refuses_to_start_naming_where(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MAPPING)
    (tmp_path / "p.yaml").write_text("principals:\n  - id: alice\n    role: admin\n")
    config = ServeConfig(
        mappings=str(tmp_path / "m.yaml"), listen=("127.0.0.1:0",), admin_listen="127.0.0.1:0",
        principals=str(tmp_path / "p.yaml"),
    )  # fmt: skip
    code, err = await serve_failing(config)
    assert code == EXIT_LISTEN
    assert f"{tmp_path / 'p.yaml'}:3:11: principals[0].role: must be owner or member" in err


async def test_inconsistent_tls_flags_refuse_to_start(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MAPPING)
    (tmp_path / "p.yaml").write_text(principals_yaml(alice="owner"))
    config = ServeConfig(
        mappings=str(tmp_path / "m.yaml"), listen=("127.0.0.1:0",), admin_listen="127.0.0.1:0",
        principals=str(tmp_path / "p.yaml"), admin_tls_cert=str(tmp_path / "c.pem"),
    )  # fmt: skip
    code, err = await serve_failing(config)
    assert code == EXIT_LISTEN
    assert "--admin-tls-cert and --admin-tls-key must be given together" in err


async def test_serve_gates_every_admin_rpc_and_reloads_principals(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MAPPING)
    principals = tmp_path / "p.yaml"
    principals.write_text(principals_yaml(alice="owner", bob="member"))
    with short_dir() as sockets:
        config = ServeConfig(
            mappings=str(tmp_path / "m.yaml"), listen=(f"unix:{sockets / 'd.sock'}",),
            admin_listen=f"unix:{sockets / 'a.sock'}", principals=str(principals), grace_period=1.0,
        )  # fmt: skip
        ready, stop, err = asyncio.Event(), asyncio.Event(), io.StringIO()
        task = asyncio.create_task(serve(config, ready=ready, stop=stop, stderr=err))
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({task, waiter}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        assert ready.is_set(), err.getvalue()
        try:
            async with grpc.aio.insecure_channel(config.admin_listen or "") as channel:
                stub = admin_pb2_grpc.AdminServiceStub(channel)
                create = admin_pb2.CreateCategoryRequest(
                    category=admin_pb2.Category(id="C0005", name="Social", destinations=["fb"])
                )
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ListCategories(admin_pb2.ListCategoriesRequest(), timeout=5)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.CreateCategory(create, metadata=token("bob"), timeout=5)
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
                created = await stub.CreateCategory(create, metadata=token("alice"), timeout=5)
                assert created.etag
                # carol is added by hand: her token works once the principals file is reloaded
                principals.write_text(principals_yaml(alice="owner", bob="member", carol="owner"))
                deadline = time.monotonic() + WAIT
                while True:
                    try:
                        await stub.ListCategories(admin_pb2.ListCategoriesRequest(), metadata=token("carol"), timeout=5)
                        break
                    except grpc.aio.AioRpcError as e:
                        assert e.code() == grpc.StatusCode.UNAUTHENTICATED
                        assert time.monotonic() < deadline, "carol's token was never accepted"
                        await asyncio.sleep(0.02)  # polling a bounded condition, not synchronising on time
                events = await stub.ListAuditEvents(admin_pb2.ListAuditEventsRequest(), metadata=token("carol"),
                                                    timeout=5)  # fmt: skip
        finally:
            stop.set()
            assert await asyncio.wait_for(task, WAIT) == EXIT_OK
    actions = [(admin_pb2.AuditAction.Name(e.action), e.actor, e.detail) for e in events.events]
    assert actions[1] == ("AUDIT_ACTION_PERMISSION_DENIED", "bob", "CreateCategory")
    assert [a[:2] for a in actions[2:]] == [
        ("AUDIT_ACTION_CATEGORY_CREATED", "alice"), ("AUDIT_ACTION_MAPPING_CREATED", "alice"),
        ("AUDIT_ACTION_POLICY_RELOADED", "alice"),
    ]  # fmt: skip


def token(pid: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {pid}-token"),)


# -- TLS and mTLS on the admin listener -------------------------------------------------------


def openssl(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)


def issue(directory: Path, name: str, ca: str, *, san: str = "DNS:localhost,IP:127.0.0.1") -> None:
    """A P-256 key and a certificate for it signed by the CA `ca` (both PEM files named after it)."""
    openssl(
        "req", "-x509", "-CA", str(directory / f"{ca}.pem"), "-CAkey", str(directory / f"{ca}.key"),
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.pem"), "-subj", f"/CN={name}",
        "-addext", f"subjectAltName={san}", "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "extendedKeyUsage=serverAuth,clientAuth",
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA with a server and a client certificate, and a second CA the server does not trust."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                "-keyout", str(d / f"{ca}.key"), "-out", str(d / f"{ca}.pem"), "-subj", f"/CN={ca}")  # fmt: skip
    issue(d, "server", "ca")
    issue(d, "client", "ca", san="DNS:client")
    issue(d, "stranger", "other-ca", san="DNS:stranger")
    return d


@contextlib.asynccontextmanager
async def tls_sidecar(tmp_path: Path, pki: Path, *, mtls: bool) -> AsyncIterator[str]:
    """A sidecar whose admin listener speaks TLS (mTLS when asked); yields the admin address."""
    (tmp_path / "m.yaml").write_text(MAPPING)
    config = ServeConfig(
        mappings=str(tmp_path / "m.yaml"), listen=("127.0.0.1:0",), admin_listen="127.0.0.1:0", principals="p",
        admin_tls_cert=str(pki / "server.pem"), admin_tls_key=str(pki / "server.key"),
        admin_client_ca=str(pki / "ca.pem") if mtls else None,
    )  # fmt: skip
    store = PolicyStore()
    store.load_initial(config.mappings)
    audit = AuditLog.open(tmp_path / "audit.db")
    writer = PolicyWriter(store, audit)
    await writer.start()
    path = tmp_path / "p.yaml"
    path.write_text(principals_yaml(alice="owner"))
    sidecar = Sidecar(config, store, audit=audit, writer=writer,
                      gate=Authenticator(PrincipalsFile.load(str(path)), audit))  # fmt: skip
    await sidecar.start()
    try:
        assert sidecar.admin_address is not None
        yield sidecar.admin_address
    finally:
        await sidecar.stop(None)
        audit.close()


def credentials(pki: Path, client: str | None = None) -> grpc.ChannelCredentials:
    key = (pki / f"{client}.key").read_bytes() if client else None
    chain = (pki / f"{client}.pem").read_bytes() if client else None
    return grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(), private_key=key, certificate_chain=chain)


async def list_over(channel: grpc.aio.Channel) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    r = await stub.ListCategories(admin_pb2.ListCategoriesRequest(), metadata=token("alice"), timeout=5)
    return len(r.categories)


async def test_the_admin_listener_speaks_tls(tmp_path: Path, pki: Path) -> None:
    async with tls_sidecar(tmp_path, pki, mtls=False) as address:
        async with grpc.aio.secure_channel(address, credentials(pki)) as channel:
            assert await list_over(channel) == 1
        async with grpc.aio.insecure_channel(address) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await list_over(plaintext)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(address, credentials(pki)) as channel:  # TLS is not authentication
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ListCategories(admin_pb2.ListCategoriesRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_with_a_client_ca_only_its_client_certificates_connect(tmp_path: Path, pki: Path) -> None:
    async with tls_sidecar(tmp_path, pki, mtls=True) as address:
        async with grpc.aio.secure_channel(address, credentials(pki, "client")) as channel:
            assert await list_over(channel) == 1
        for refused in (None, "stranger"):
            async with grpc.aio.secure_channel(address, credentials(pki, refused)) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await list_over(channel)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE, refused
