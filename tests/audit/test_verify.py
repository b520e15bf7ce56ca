"""verify(): an intact chain is ok; every kind of tampering is found and named at its first sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consent_sidecar.audit import (
    AuditAction,
    AuditError,
    AuditLog,
    AuditRecord,
    Head,
    verify,
)
from consent_sidecar.audit.anchor import anchor_path

from .support import (
    M1,
    M2,
    Clock,
    documented_hash,
    ev,
    published,
    raw,
    tamper,
)

A = AuditAction


def fill(db: Path, n: int = 6) -> list[AuditRecord]:
    with AuditLog.open(db, clock=Clock()) as log:
        return log.append([ev(A.CATEGORY_CREATED, "alice", category_id=f"C{i}", detail=f"#{i}") for i in range(n)])


def test_verify_ok_counts_events(db: Path) -> None:
    records = fill(db)
    result = verify(db)
    assert result.ok and result.count == 6 and result.broken_sequence is None
    assert result.last_hash == records[-1].hash
    assert "ok: 6 events" in str(result)


def test_verify_an_empty_log_is_ok(db: Path) -> None:
    AuditLog.open(db).close()
    result = verify(db)
    assert result.ok and result.count == 0


def test_verify_while_the_log_is_open_and_in_use(log: AuditLog, db: Path) -> None:
    log.append([ev(), ev()])
    assert verify(db).count == 2
    log.append([ev()])
    assert verify(db).count == 3


def test_verify_a_missing_file_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no such audit database"):
        verify(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_verify_detects_an_altered_field(db: Path) -> None:
    fill(db)
    tamper(db, ("UPDATE audit_events SET detail = 'nothing to see' WHERE sequence = 4", ()))
    result = verify(db)
    assert (result.ok, result.broken_sequence, result.kind, result.count) == (False, 4, "altered", 3)
    assert "altered" in result.reason
    assert str(result).startswith("broken at sequence 4:")


def test_verify_detects_an_altered_actor_on_the_first_event(db: Path) -> None:
    fill(db)
    tamper(db, ("UPDATE audit_events SET actor = 'mallory' WHERE sequence = 1", ()))
    assert (verify(db).broken_sequence, verify(db).kind) == (1, "altered")


def test_verify_detects_a_removed_row(db: Path) -> None:
    fill(db)
    tamper(db, ("DELETE FROM audit_events WHERE sequence = 3", ()))
    result = verify(db)
    assert (result.broken_sequence, result.kind) == (3, "removed")
    assert "event 3 is missing (next is 4)" in result.reason


def test_verify_detects_removal_of_the_first_row(db: Path) -> None:
    fill(db)
    tamper(db, ("DELETE FROM audit_events WHERE sequence = 1", ()))
    assert (verify(db).broken_sequence, verify(db).kind) == (1, "removed")


def test_verify_detects_two_rows_with_swapped_contents(db: Path) -> None:
    fill(db)
    cols = "time, actor, action, category_id, destination, before_json, after_json, detail, prev_hash, hash"
    tamper(
        db,
        ("CREATE TEMP TABLE keep AS SELECT * FROM audit_events WHERE sequence IN (2, 5)", ()),
        *(
            (
                f"UPDATE audit_events SET ({cols}) = (SELECT {cols} FROM keep WHERE sequence = ?) WHERE sequence = ?",
                (src, dst),
            )
            for src, dst in ((5, 2), (2, 5))
        ),
    )
    result = verify(db)
    assert (result.broken_sequence, result.kind) == (2, "reordered")
    assert "holds the contents of event 5" in result.reason


def test_verify_detects_a_bad_first_prev_hash_even_with_a_consistent_hash(db: Path) -> None:
    records = fill(db)
    forged = AuditRecord(**{**_fields(records[0]), "prev_hash": "f" * 64, "hash": ""})
    tamper(
        db,
        ("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE sequence = 1", ("f" * 64, documented_hash(forged))),
    )
    result = verify(db)
    assert (result.broken_sequence, result.kind) == (1, "bad_first_prev_hash")


def test_verify_detects_a_rewritten_event_whose_own_hash_was_recomputed(db: Path) -> None:
    records = fill(db)
    forged = AuditRecord(**{**_fields(records[2]), "detail": "rewritten", "hash": ""})
    tamper(
        db,
        ("UPDATE audit_events SET detail = 'rewritten', hash = ? WHERE sequence = 3", (documented_hash(forged),)),
    )
    result = verify(db)
    assert (result.broken_sequence, result.kind) == (4, "relinked")
    assert "event 3 was rewritten" in result.reason


def test_verify_reports_an_unreadable_action(db: Path) -> None:
    fill(db)
    tamper(db, ("UPDATE audit_events SET action = 42 WHERE sequence = 2", ()))
    assert (verify(db).broken_sequence, verify(db).kind) == (2, "unreadable")


def test_cutting_off_the_newest_events_is_found_against_the_anchor(db: Path) -> None:
    # The chain alone cannot see a truncated tail: the anchor beside the database (and any head
    # kept elsewhere, --expect-head) names the newest event the trail must still hold.
    records = fill(db)
    assert anchor_path(db).read_text().split()[2:] == ["6", records[5].hash]
    tamper(db, ("DELETE FROM audit_events WHERE sequence = 6", ()))
    result = verify(db)
    assert (result.ok, result.kind, result.broken_sequence, result.count) == (False, "cut", 6, 5)
    assert f"the trail ends at event 5, but the anchor file {anchor_path(db)} names event 6" in result.reason
    assert "newest events were cut off" in result.reason


def test_a_cut_passes_the_chain_but_not_the_expected_head(db: Path) -> None:
    records = fill(db)
    tamper(db, ("DELETE FROM audit_events WHERE sequence >= 5", ()))
    anchor_path(db).unlink()  # whoever cut the trail removed the anchor too
    assert verify(db).ok  # the chain is intact: what is left verifies
    assert verify(db, expect_head=Head(4, records[3].hash)).ok
    result = verify(db, expect_head=Head(6, records[5].hash))
    assert (result.ok, result.kind, result.broken_sequence) == (False, "cut", 6)
    assert "the trail ends at event 4, but --expect-head names event 6" in result.reason
    wrong = verify(db, expect_head=Head(4, records[5].hash))
    assert (wrong.ok, wrong.kind) == (False, "cut")
    assert f"event 4 has hash {records[3].hash}, but --expect-head names hash {records[5].hash}" in wrong.reason


def test_a_replaced_database_is_found_against_the_anchor(db: Path) -> None:
    fill(db)
    for name in (db.name, f"{db.name}-wal", f"{db.name}-shm"):
        (db.parent / name).unlink(missing_ok=True)
    with pytest.raises(AuditError, match=r"the audit trail was cut: the trail is empty, but the anchor file .* names "
                                         r"event 6 .* move .*audit\.db\.anchor away"):
        AuditLog.open(db)  # a sidecar refuses to extend it
    assert not db.exists() or verify(db).kind == "cut"


def _fields(r: AuditRecord) -> dict[str, Any]:
    return {name: getattr(r, name) for name in AuditRecord.__slots__}


# ---------------------------------------------------------------------------- published policies


def tamper_policies(db: Path, *statements: str) -> None:
    conn = raw(db)
    try:
        for t in ("policies", "published"):
            conn.execute(f"DROP TRIGGER {t}_no_update")
            conn.execute(f"DROP TRIGGER {t}_no_delete")
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        pytest.param("UPDATE policies SET canonical = replace(canonical, 'heap', 'hea')",
                     "does not hash to its digest: it was altered", id="altered-policy"),
        pytest.param("DELETE FROM policies WHERE canonical LIKE '%heap%'", "is not stored", id="removed-policy"),
        pytest.param("UPDATE published SET digest = (SELECT digest FROM policies WHERE canonical NOT LIKE '%heap%') "
                     "WHERE sequence = 3", "is not the digest its detail names", id="repointed"),
        pytest.param("UPDATE published SET sequence = 2 WHERE sequence = 3", "not a POLICY_RELOADED event",
                     id="moved"),
    ],
)  # fmt: skip
def test_verify_checks_every_published_policy_against_its_event_and_digest(
    db: Path, statement: str, reason: str
) -> None:
    with AuditLog.open(db) as log:
        log.append([published(M1)])
        log.append([ev(A.MAPPING_CREATED, category_id="C1", destination="heap"), published(M2)])
    assert verify(db).ok
    tamper_policies(db, statement)
    result = verify(db)
    assert (result.ok, result.kind) == (False, "policy")
    assert reason in result.reason
    assert result.broken_sequence in (2, 3)
    assert str(result).startswith(f"broken at sequence {result.broken_sequence}:")
