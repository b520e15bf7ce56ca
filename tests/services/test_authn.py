"""Admin authentication: the hot-reloaded principals file, the per-RPC gate, and the admin listener's TLS flags."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sidecar.auth import hash_token
from sidecar.config import ServeConfig
from sidecar.errors import MappingError, Unauthenticated
from sidecar.services.authn import PrincipalsFile, TLSConfigError, admin_credentials


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
    with pytest.raises(MappingError) as e:
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
