"""The operator commands against a real `consent-sidecar serve`: categories, audit, status, fleet, over real gRPC.

Owner and member tokens, refusals as `CODE: message` with exit 1, usage errors with exit 2 and
nothing sent (the audit trail proves it), the typed-name confirmation through a pseudo-terminal,
and TLS and mTLS to the admin listener.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from consent_sidecar import cli
from consent_sidecar.cli.categories import PROMPT
from consent_sidecar.cli.connection import AdminConnection

if TYPE_CHECKING:
    from conftest import SidecarProcess

WAIT = 30.0


def run(sc: SidecarProcess, capsys: pytest.CaptureFixture[str], *argv: str, who: str | None = "alice",
        env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """One admin verb in this process, as `who`; (exit code, stdout, stderr)."""
    verb = list(argv)
    # The common flags go after the verb's own words (argparse: they belong to the last sub-verb).
    code = cli.run_cli([*verb, *sc.admin_flags()], {**sc.env(who), **(env or {})})
    out, err = capsys.readouterr()
    return code, out, err


def audit_events(sc: SidecarProcess, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    code, out, err = run(sc, capsys, "audit", "list", "--output", "json", who="bob")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def category(sc: SidecarProcess, capsys: pytest.CaptureFixture[str], cid: str) -> dict[str, Any]:
    code, out, err = run(sc, capsys, "categories", "get", cid, "--output", "json", who="bob")
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


# -- reads --------------------------------------------------------------------------------------


def test_a_member_lists_and_gets_categories_as_a_table_and_as_json(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(served_sidecar, capsys, "categories", "list", who="bob")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "ENABLED", "SHADOW", "DESTINATIONS"]
    assert lines[1].split() == ["C0002", "Performance", "Cookies", "yes", "no", "amplitude,mixpanel"]
    assert lines[3].split()[-3:] == ["yes", "yes", "amplitude"]  # C0005 is in shadow
    code, out, _ = run(served_sidecar, capsys, "categories", "list", "--output", "json", who="bob")
    listed = json.loads(out)
    assert [c["id"] for c in listed] == ["C0002", "C0004", "C0005"]
    assert set(listed[0]) == {"id", "name", "destinations", "enabled", "shadow", "etag"} and listed[0]["etag"]
    assert category(served_sidecar, capsys, "C0004") == listed[1]


@pytest.mark.parametrize(
    ("argv", "who", "env", "code", "stderr"),
    [
        (["categories", "get", "C0099"], "bob", {}, 1, "NOT_FOUND: "),
        (["categories", "list"], None, {}, 2, "no token: set CONSENT_SIDECAR_TOKEN or give --token-file FILE"),
        (["categories", "list"], None, {"CONSENT_SIDECAR_TOKEN": "not-a-token"}, 1, "UNAUTHENTICATED: "),
        (["categories", "list", "--token-file", "/nonexistent/token"], None, {}, 2, "cannot read /nonexistent/token"),
        (["categories", "list", "--tls-cert", "c.pem"], "bob", {}, 2, "--tls-cert and --tls-key must be given"),
        (["fleet", "status"], "bob", {}, 1, "FAILED_PRECONDITION: the policy source is a file"),
    ],
)
def test_refusals_exit_1_with_code_and_message_and_usage_errors_exit_2(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str],
    argv: list[str], who: str | None, env: dict[str, str], code: int, stderr: str,
) -> None:
    got, out, err = run(served_sidecar, capsys, *argv, who=who, env=env)
    assert (got, out) == (code, "")
    assert stderr in err
    for token in served_sidecar.tokens.values():
        assert token not in err


def test_the_token_file_is_read_and_never_printed(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    token_file = tmp_path / "bob.token"
    token_file.write_text(served_sidecar.tokens["bob"] + "\n")
    code, out, err = run(served_sidecar, capsys, "status", "--token-file", str(token_file), who=None)
    assert code == 0, err
    assert "generation" in out and served_sidecar.tokens["bob"] not in out + err


def test_status_shows_the_policy_served(served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(served_sidecar, capsys, "status", "--output", "json", who="bob")
    assert code == 0, err
    status = json.loads(out)
    assert status["policy"]["generation"] == 1 and len(status["policy"]["digest"]) == 64
    assert (status["categories"], status["store"], status["source"]) == (3, "file", str(served_sidecar.mappings))
    code, out, _ = run(served_sidecar, capsys, "status", who="bob")
    # Columns fit the longest field shown (the audit head's, once the trail has one).
    assert re.search(r"^generation +1$", out, re.MULTILINE) and re.search(r"^store +file$", out, re.MULTILINE)


# -- writes -------------------------------------------------------------------------------------


def test_an_owner_creates_updates_disables_enables_and_deletes(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    sc = served_sidecar
    steps: list[tuple[list[str], str]] = [
        (["categories", "create", "--id", "C0009", "--name", "Social Ads", "--destination", "facebook-pixel",
          "--destination", "tiktok"], "created C0009 ('Social Ads')"),
        (["categories", "update", "C0009", "--add-destination", "snap", "--remove-destination", "tiktok"],
         "updated C0009"),
        (["categories", "update", "C0009", "--name", "Social Advertising", "--shadow"], "updated C0009"),
        (["categories", "disable", "C0009", "--confirm-name", "Social Advertising"], "disabled C0009"),
        (["categories", "enable", "C0009"], "enabled C0009"),
        (["categories", "delete", "C0009", "--confirm-name", "Social Advertising"], "deleted C0009; policy generation"),
    ]
    expected_state = [
        {"destinations": ["facebook-pixel", "tiktok"], "enabled": True, "shadow": False},
        {"destinations": ["facebook-pixel", "snap"]},
        {"name": "Social Advertising", "shadow": True},
        {"enabled": False},
        {"enabled": True},
    ]
    for i, (argv, said) in enumerate(steps):
        code, out, err = run(sc, capsys, *argv)
        assert code == 0, (argv, err)
        assert out.startswith(said), out
        if i < len(expected_state):
            state = category(sc, capsys, "C0009")
            assert state.items() >= expected_state[i].items(), state
    code, _, err = run(sc, capsys, "categories", "get", "C0009", who="bob")
    assert code == 1 and err.startswith("NOT_FOUND: ")
    actions = [(e["actor"], e["action"]) for e in audit_events(sc, capsys) if e["category_id"] == "C0009"]
    assert [a for _, a in actions if "CATEGORY" in a] == [
        "AUDIT_ACTION_CATEGORY_CREATED", "AUDIT_ACTION_CATEGORY_UPDATED", "AUDIT_ACTION_CATEGORY_UPDATED",
        "AUDIT_ACTION_CATEGORY_DISABLED", "AUDIT_ACTION_CATEGORY_ENABLED", "AUDIT_ACTION_CATEGORY_DELETED",
    ]
    assert {actor for actor, _ in actions} == {"alice"}


def test_create_json_prints_the_new_category(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(served_sidecar, capsys, "categories", "create", "--id", "C0010", "--name", "Off",
                         "--destination", "x", "--disabled", "--output", "json")
    assert code == 0, err
    assert json.loads(out) | {"etag": ""} == {
        "id": "C0010", "name": "Off", "destinations": ["x"], "enabled": False, "shadow": False, "etag": "",
    }


def test_a_member_write_is_refused_and_audited(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(served_sidecar, capsys, "categories", "disable", "C0004", "--confirm-name",
                         "Targeting Cookies", who="bob")
    assert (code, out) == (1, "")
    assert err.startswith("PERMISSION_DENIED: DisableCategory requires role owner")
    assert category(served_sidecar, capsys, "C0004")["enabled"] is True
    denied = audit_events(served_sidecar, capsys)[-1]
    assert (denied["actor"], denied["action"], denied["detail"]) == (
        "bob", "AUDIT_ACTION_PERMISSION_DENIED", "DisableCategory")


def test_a_stale_etag_is_refused_with_aborted_and_changes_nothing(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    before = category(served_sidecar, capsys, "C0004")
    code, _, err = run(served_sidecar, capsys, "categories", "update", "C0004", "--name", "Ads", "--etag", "stale")
    assert code == 1 and err.startswith("ABORTED: ")
    assert category(served_sidecar, capsys, "C0004") == before


def test_update_without_etag_sends_the_one_it_read_so_a_change_made_meanwhile_is_refused(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = served_sidecar
    original = AdminConnection.call
    raced: list[str] = []

    def call(self: AdminConnection, method: str, request: Any) -> Any:
        answer = original(self, method, request)
        if method == "GetCategory" and not raced:  # another owner renames it between our read and our write
            from consent.v1 import admin_pb2
            from google.protobuf.field_mask_pb2 import FieldMask

            raced.append(answer.etag)
            original(self, "UpdateCategory", admin_pb2.UpdateCategoryRequest(
                category_id="C0004", category=admin_pb2.Category(name="Renamed Meanwhile"),
                update_mask=FieldMask(paths=["name"])))
        return answer

    monkeypatch.setattr(AdminConnection, "call", call)
    code, _, err = run(sc, capsys, "categories", "update", "C0004", "--add-destination", "reddit-ads")
    assert raced and code == 1 and err.startswith("ABORTED: "), err
    monkeypatch.undo()
    state = category(sc, capsys, "C0004")
    assert state["name"] == "Renamed Meanwhile" and "reddit-ads" not in state["destinations"]
    code, _, err = run(sc, capsys, "categories", "update", "C0004", "--add-destination", "reddit-ads")
    assert code == 0, err  # read again: the etag is current
    assert category(sc, capsys, "C0004")["destinations"] == ["google-ads", "braze", "reddit-ads"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["categories", "update", "C0004"], "nothing to change"),
        (["categories", "update", "C0004", "--destination", "a", "--add-destination", "b"], "not both"),
        (["categories", "disable", "C0004"], "disable needs the category's name: give --confirm-name NAME"),
        (["categories", "delete", "C0004"], "delete needs the category's name: give --confirm-name NAME"),
        (["audit", "list", "--action", "EXPLODED"], "unknown action 'EXPLODED'"),
        (["categories", "create", "--id", "C0011", "--name", "N"], "--destination"),
    ],
)
def test_usage_errors_exit_2_and_send_nothing(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    before = audit_events(served_sidecar, capsys)
    code, out, err = run(served_sidecar, capsys, *argv)
    assert (code, out) == (2, "")
    assert message in err
    assert audit_events(served_sidecar, capsys) == before


# -- the typed name, at a terminal ----------------------------------------------------------------


def at_terminal(sc: SidecarProcess, argv: list[str], typed: str | None) -> tuple[int, str]:
    """Runs the console script with a pseudo-terminal as stdin, stdout and stderr; types `typed` at the prompt."""
    import pty

    main, tty = pty.openpty()
    env = {**os.environ, **sc.env("alice")}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "consent-sidecar"), *argv, *sc.admin_flags()],
                            stdin=tty, stdout=tty, stderr=tty, env=env, close_fds=True)
    os.close(tty)
    screen = b""
    deadline = time.monotonic() + WAIT
    try:
        while PROMPT.encode() not in screen and typed is not None:
            assert time.monotonic() < deadline and proc.poll() is None, screen
            screen += os.read(main, 4096)
        if typed is not None:
            os.write(main, typed.encode() + b"\n")
        code = proc.wait(WAIT)
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    return code, screen.decode(errors="replace")


@pytest.mark.parametrize("verb", ["disable", "delete"])
def test_at_a_terminal_the_typed_name_confirms(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    code, screen = at_terminal(served_sidecar, ["categories", verb, "C0004"], "targeting cookies")
    assert code == 1, screen
    assert f"{verb.capitalize()} C0004 ('Targeting Cookies', 2 destinations)?" in screen
    assert PROMPT.strip() in screen and "FAILED_PRECONDITION: " in screen
    assert category(served_sidecar, capsys, "C0004")["enabled"] is True  # nothing changed
    code, screen = at_terminal(served_sidecar, ["categories", verb, "C0004"], "Targeting Cookies")
    assert code == 0, screen
    assert f"{verb}d C0004" in screen
    code, _, err = run(served_sidecar, capsys, "categories", "get", "C0004", who="bob")
    assert (code == 0) is (verb == "disable"), err


# -- the audit trail -------------------------------------------------------------------------------


def test_audit_list_filters_and_pages(served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]) -> None:
    sc = served_sidecar
    for i in range(3):
        assert run(sc, capsys, "categories", "create", "--id", f"C01{i}", "--name", f"N{i}",
                   "--destination", f"d{i}")[0] == 0
    every = audit_events(sc, capsys)
    assert [e["sequence"] for e in every] == list(range(1, len(every) + 1))
    cases = [
        (["--category", "C011"], [e for e in every if e["category_id"] == "C011"]),
        (["--action", "category_created"], [e for e in every if e["action"] == "AUDIT_ACTION_CATEGORY_CREATED"]),
        (["--action", "AUDIT_ACTION_POLICY_RELOADED"], [e for e in every if e["action"].endswith("POLICY_RELOADED")]),
        (["--after", "5"], every[5:]),
        (["--limit", "2"], every[:2]),
        (["--after", "2", "--limit", "3"], every[2:5]),
    ]
    for flags, expected in cases:
        code, out, err = run(sc, capsys, "audit", "list", "--output", "json", *flags, who="bob")
        assert code == 0, err
        assert [json.loads(line) for line in out.splitlines()] == expected, flags
    code, out, _ = run(sc, capsys, "audit", "list", "--category", "C012", who="bob")
    assert out.splitlines()[0].split() == ["SEQ", "TIME", "ACTOR", "ACTION", "CATEGORY", "DESTINATION", "DETAIL"]
    assert [line.split()[2:6] for line in out.splitlines()[1:]] == [
        ["alice", "CATEGORY_CREATED", "C012", "-"], ["alice", "MAPPING_CREATED", "C012", "d2"]]


def test_audit_watch_prints_each_event_live_and_exits_0_on_ctrl_c(
    served_sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    sc = served_sidecar
    env = {**os.environ, **sc.env("bob")}
    watch = subprocess.Popen(
        [str(Path(sys.executable).parent / "consent-sidecar"), "audit", "watch", "--output", "json",
         *sc.admin_flags()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        first = json.loads(watch.stdout.readline())  # type: ignore[union-attr]
        assert (first["sequence"], first["actor"]) == (1, "system")  # the backlog: everything after 0
        assert run(sc, capsys, "categories", "create", "--id", "C0020", "--name", "Live", "--destination", "x")[0] == 0
        live = json.loads(watch.stdout.readline())  # type: ignore[union-attr]
        assert (live["action"], live["category_id"], live["actor"]) == (
            "AUDIT_ACTION_CATEGORY_CREATED", "C0020", "alice")
        watch.send_signal(signal.SIGINT)
        assert watch.wait(WAIT) == 0, watch.stderr.read()  # type: ignore[union-attr]
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()


# -- TLS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
def test_every_read_and_write_works_over_tls_and_mtls(
    start_sidecar_process: Any, pki: Path, capsys: pytest.CaptureFixture[str], mtls: bool
) -> None:
    with start_sidecar_process(tls=pki, mtls=mtls) as sc:
        code, _, err = run(sc, capsys, "categories", "list", who="bob")
        assert code == 0, err
        code, _, err = run(sc, capsys, "categories", "create", "--id", "C0030", "--name", "Over TLS",
                             "--destination", "x")
        assert code == 0, err
        sc.tls.pop("tls-cert", None), sc.tls.pop("tls-key", None)
        code, _, err = run(sc, capsys, "categories", "list", "--timeout", "3", who="bob")
        assert (code == 0) is (not mtls), err  # without a client certificate, mTLS refuses the connection
        if mtls:
            assert err.startswith(("UNAVAILABLE: ", "DEADLINE_EXCEEDED: "))
        sc.tls.clear()
        code, _, err = run(sc, capsys, "categories", "list", "--timeout", "3", who="bob")  # plaintext to TLS
        assert code == 1 and err.startswith(("UNAVAILABLE: ", "DEADLINE_EXCEEDED: ")), err
