"""`consent-sidecar principals add|remove`: a token shown once, only its hash stored, comments kept, picked up live."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from consent.v1 import admin_pb2, admin_pb2_grpc

from consent_sidecar import cli
from consent_sidecar.auth.principals import load_principals

if TYPE_CHECKING:
    from conftest import SidecarProcess

WAIT = 30.0

COMMENTED = """\
# Who may use the admin API. Reviewed quarterly.
principals:
  - id: alice        # the workspace owner
    role: owner
    token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
"""


def principals(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.run_cli(["principals", *argv], {})
    out, err = capsys.readouterr()
    return code, out, err


def test_add_prints_a_new_token_once_and_stores_only_its_hash_keeping_comments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "principals.yaml"
    path.write_text(COMMENTED)
    path.chmod(0o644)
    code, out, err = principals(capsys, "add", "--principals", str(path), "--id", "bob", "--role", "member")
    assert code == 0, err
    token = out.strip()
    assert len(token) == 43 and out == token + "\n"  # secrets.token_urlsafe(32)
    assert "bob (member)" in err and "shown only this once" in err and token not in err
    text = path.read_text()
    assert text.startswith(COMMENTED)  # comments and the existing entry untouched
    assert token not in text and hashlib.sha256(token.encode()).hexdigest() in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_principals(str(path)).principals
    assert [(p.id, p.role.value) for p in loaded] == [("alice", "owner"), ("bob", "member")]
    assert not [p for p in tmp_path.iterdir() if p.name != "principals.yaml"]  # no temp file left
    code, out2, _ = principals(capsys, "add", "--principals", str(path), "--id", "carol", "--role", "owner")
    assert code == 0 and out2 != out  # a fresh token each time


def test_remove_keeps_the_others_and_their_comments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "principals.yaml"
    path.write_text(COMMENTED)
    assert principals(capsys, "add", "--principals", str(path), "--id", "bob", "--role", "member")[0] == 0
    code, out, err = principals(capsys, "remove", "--principals", str(path), "--id", "bob")
    assert (code, out) == (0, f"removed bob from {path}\n"), err
    assert path.read_text() == COMMENTED


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["add", "--id", "alice", "--role", "member"], 1, "a principal 'alice' already exists"),
        (["remove", "--id", "zoe"], 1, "no principal 'zoe' (known: alice)"),
        (["add", "--id", "bob", "--role", "admin"], 2, "invalid choice: 'admin'"),
        (["add", "--id", "bob"], 2, "--role"),
    ],
)
def test_bad_edits_are_refused_and_leave_the_file_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    path = tmp_path / "principals.yaml"
    path.write_text(COMMENTED)
    got, out, err = principals(capsys, *argv[:1], "--principals", str(path), *argv[1:])
    assert (got, out) == (code, "")
    assert message in err
    assert path.read_text() == COMMENTED


def test_a_broken_principals_file_is_never_edited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "principals.yaml"
    path.write_text("principals:\n  - id: alice\n    role: root\n")
    code, _, err = principals(capsys, "add", "--principals", str(path), "--id", "bob", "--role", "member")
    assert code == 1 and f"{path}:3:11: principals[0].role: must be owner or member" in err
    assert path.read_text() == "principals:\n  - id: alice\n    role: root\n"


def test_add_creates_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "new.yaml"
    code, out, err = principals(capsys, "add", "--principals", str(path), "--id", "alice", "--role", "owner")
    assert code == 0 and "(created)" in err
    assert load_principals(str(path)).authenticate(out.strip()).id == "alice"


def accepted(address: str, token: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            stub.GetPolicyStatus(admin_pb2.GetPolicyStatusRequest(), metadata=[("authorization", f"Bearer {token}")],
                                 timeout=5)
            return True
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
            return False


def wait_until(predicate: object, what: str) -> float:
    """Seconds until predicate() holds, polling (bounded by WAIT)."""
    t0 = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - t0 < WAIT, what
        time.sleep(0.01)  # polling a bounded condition
    return time.monotonic() - t0


def test_a_running_sidecar_accepts_an_added_token_and_refuses_a_removed_one(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    sc = served_sidecar
    path = str(sc.principals)
    code, out, _ = principals(capsys, "add", "--principals", path, "--id", "carol", "--role", "member")
    assert code == 0
    carol = out.strip()
    wait_until(lambda: accepted(sc.admin, carol), "the added token was never accepted")
    assert principals(capsys, "remove", "--principals", path, "--id", "carol")[0] == 0
    seconds = wait_until(lambda: not accepted(sc.admin, carol), "the removed token was still accepted")
    assert accepted(sc.admin, sc.tokens["alice"])  # the others keep working
    print(f"removed token refused after {seconds * 1000:.0f} ms")  # the figure is measured by bench principals
    assert os.stat(path).st_mode & 0o077 == 0
