"""`consent-sidecar audit verify --audit-db F`: a one-line verdict, non-zero naming the first broken sequence."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from consent_sidecar.audit import AuditAction, AuditLog, NewEvent
from consent_sidecar.cli import run_cli


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with AuditLog.open(path) as log:
        log.append([NewEvent("system", AuditAction.POLICY_RELOADED, detail="generation 1")])
        log.append([NewEvent("file:mappings.yaml", AuditAction.CATEGORY_UPDATED, category_id=f"C{i}")
                    for i in range(5)])
    return path


def tamper(db: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("DROP TRIGGER audit_events_no_delete")
        conn.execute(sql, params)
    finally:
        conn.close()


def test_an_intact_chain_exits_0_with_one_line(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["audit", "verify", "--audit-db", str(db)], environ={}) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and err == ""
    assert out.startswith(f"{db}: ok: 6 events, chain intact (last hash ")


def test_the_variable_names_the_database(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["audit", "verify"], environ={"CONSENT_SIDECAR_AUDIT_DB": str(db)}) == 0
    assert "6 events" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("sql", "params", "sequence", "why"),
    [
        ("UPDATE audit_events SET actor = ? WHERE sequence = 3", ("mallory",), 3, "altered"),
        ("DELETE FROM audit_events WHERE sequence = ?", (4,), 4, "removed"),
        ("UPDATE audit_events SET sequence = 99 WHERE sequence = ?", (6,), 6, "removed"),
    ],
)
def test_tampering_exits_1_naming_the_first_broken_sequence(
    db: Path, capsys: pytest.CaptureFixture[str], sql: str, params: tuple[object, ...], sequence: int, why: str
) -> None:
    tamper(db, sql, *params)
    assert run_cli(["audit", "verify", "--audit-db", str(db)], environ={}) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{db}: broken at sequence {sequence}: ")
    assert why in err


def test_reordered_rows_are_named(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("UPDATE audit_events SET sequence = -2 WHERE sequence = 2")
        conn.execute("UPDATE audit_events SET sequence = 2 WHERE sequence = 3")
        conn.execute("UPDATE audit_events SET sequence = 3 WHERE sequence = -2")
    finally:
        conn.close()
    assert run_cli(["audit", "verify", "--audit-db", str(db)], environ={}) == 1
    assert "broken at sequence 2: " in capsys.readouterr().err


def test_a_missing_file_is_a_clear_error_and_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.db"
    assert run_cli(["audit", "verify", "--audit-db", str(missing)], environ={}) == 1
    assert capsys.readouterr().err == f"consent-sidecar audit verify: error: {missing}: no such audit database\n"
    assert not missing.exists()


def test_a_file_that_is_not_an_audit_database_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "mappings.yaml"
    other.write_text("version: 1\n")
    assert run_cli(["audit", "verify", "--audit-db", str(other)], environ={}) == 1
    assert "not a consent-sidecar audit database" in capsys.readouterr().err


def test_the_flag_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["audit", "verify"], environ={}) == 2
    assert "--audit-db (or CONSENT_SIDECAR_AUDIT_DB)" in capsys.readouterr().err


def test_the_console_script_runs_it(db: Path) -> None:
    script = Path(sys.executable).parent / "consent-sidecar"
    argv = [str(script)] if script.exists() else [sys.executable, "-c", "from consent_sidecar.cli import main; main()"]
    done = subprocess.run([*argv, "audit", "verify", "--audit-db", str(db)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "chain intact" in done.stdout


def head_of(db: Path, sequence: int) -> str:
    conn = sqlite3.connect(db)
    try:
        (digest,) = conn.execute("SELECT hash FROM audit_events WHERE sequence = ?", (sequence,)).fetchone()
    finally:
        conn.close()
    return f"{sequence}:{digest}"


def test_expect_head_passes_while_the_trail_holds_it(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for sequence in (6, 3):  # the newest event, or any a monitor saw earlier
        assert run_cli(["audit", "verify", "--audit-db", str(db), "--expect-head", head_of(db, sequence)],
                       environ={}) == 0  # fmt: skip
    assert "chain intact" in capsys.readouterr().out


def test_expect_head_fails_once_the_tail_is_cut_even_without_the_anchor(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = head_of(db, 6)
    tamper(db, "DELETE FROM audit_events WHERE sequence >= ?", 5)
    (db.parent / "audit.db.anchor").unlink()  # whoever cut it removed the anchor too: the chain alone is intact
    assert run_cli(["audit", "verify", "--audit-db", str(db)], environ={}) == 0
    capsys.readouterr()
    assert run_cli(["audit", "verify", "--audit-db", str(db), "--expect-head", head], environ={}) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"{db}: broken at sequence 6: the trail ends at event 4, but --expect-head names event 6 "
        f"(hash {head.split(':')[1]}): its newest events were cut off or the database was replaced\n"
    )


def test_the_anchor_beside_the_database_finds_a_cut_tail(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(db, "DELETE FROM audit_events WHERE sequence = ?", 6)
    assert run_cli(["audit", "verify", "--audit-db", str(db)], environ={}) == 1
    assert "broken at sequence 6: the trail ends at event 5, but the anchor file" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["6", "x:abc", "0:" + "a" * 64, "6:" + "g" * 64])
def test_a_malformed_expected_head_is_a_usage_error(
    db: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert run_cli(["audit", "verify", "--audit-db", str(db), "--expect-head", value], environ={}) == 2
    assert "argument --expect-head: expected SEQ:HASH" in capsys.readouterr().err
