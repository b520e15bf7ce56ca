"""Chain verification of an audit database: what `consent-sidecar audit verify` runs.

Owns `verify(path)`: a read-only walk of the whole trail recomputing every hash and link
(see `records` for the encoding), then a check of every stored published policy against
its event and digest, then of the heads the trail must still hold (the anchor file beside
it, and `expect_head`, e.g. a head a log shipper or a monitor saw: a chain cut at its end is
intact, only such a head shows the cut), and the classification of the first break
(`BreakKind`). Must never write to the database (it is opened read-only: safe beside a
running sidecar) nor repair anything; it reports the first break only.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from consent_sidecar.audit.anchor import Head, anchor_path, cut_problem, read_anchor
from consent_sidecar.audit.records import GENESIS_HASH, AuditAction, canonical_bytes, event_hash
from consent_sidecar.audit.schema import POLICIES, PUBLISHED, SELECT, TABLE, AuditError, check_schema, connect

__all__ = ["BreakKind", "VerifyResult", "verify"]


BreakKind = Literal[
    "removed", "altered", "reordered", "bad_first_prev_hash", "relinked", "unreadable", "policy", "cut"
]
"""How a chain broke: a sequence gap; a row whose hash does not match; a row holding another
sequence's contents; a first prev_hash other than zeros; a prev_hash not matching the previous
row's (valid) hash, i.e. that row was rewritten with a recomputed hash; a field that cannot be
encoded (e.g. an unknown action number); a stored published policy that does not match its
event or its digest; the trail no longer holds an expected head (its anchor's, or
`expect_head`): its newest events were cut off, or the database replaced (see `verify`)."""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of `verify`: ok with the number of events, or the first broken sequence and why."""

    ok: bool
    count: int  # events verified intact (all of them when ok; those before the break otherwise)
    broken_sequence: int | None = None
    reason: str = ""
    kind: BreakKind | Literal[""] = ""
    last_hash: str = ""  # hash of the last event when ok (compare with the last one a log shipper saw)

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.count} events, chain intact (last hash {self.last_hash or GENESIS_HASH})"
        return f"broken at sequence {self.broken_sequence}: {self.reason}"


def _row_hash(row: tuple[Any, ...], *, sequence: int | None = None) -> str | None:
    """Recomputed hash of a stored row (optionally as if at another sequence); None if unreadable."""
    seq, time, actor, action, category_id, destination, before_json, after_json, detail, prev_hash, _ = row
    try:
        return event_hash(
            canonical_bytes(
                sequence=seq if sequence is None else sequence,
                time=time,
                actor=actor,
                action=action,
                category_id=category_id,
                destination=destination,
                before_json=before_json,
                after_json=after_json,
                detail=detail,
                prev_hash=prev_hash,
            )
        )
    except (ValueError, TypeError, UnicodeEncodeError):
        return None


def _moved_from(conn: sqlite3.Connection, row: tuple[Any, ...]) -> int | None:
    """The sequence a row's contents were written at, if they verify there (the row was moved)."""
    prev_hash = row[9]
    if prev_hash == GENESIS_HASH:
        candidates = [1]
    else:
        candidates = [r[0] + 1 for r in conn.execute(f"SELECT sequence FROM {TABLE} WHERE hash = ?", (prev_hash,))]
    for seq in candidates:
        if seq != row[0] and _row_hash(row, sequence=seq) == row[10]:
            return int(seq)
    return None


def verify(path: str | os.PathLike[str], *, expect_head: Head | None = None) -> VerifyResult:
    """Walk the chain of the audit database at `path` (opened read-only) and check every link.

    Checks, in sequence order: sequences are exactly 1..N (a gap = a removed row), each
    stored hash equals the recomputed hash of its row (else altered, or moved from the
    sequence named), the first prev_hash is 64 zeros and every other prev_hash equals the
    previous event's hash (else rows were reordered or an earlier event rewritten with a
    valid hash). Then, once the chain is intact, every stored published policy: its event
    is a POLICY_RELOADED whose detail names its digest, and its canonical mapping is stored
    and hashes to that digest (else kind "policy"). Then the heads: the trail must still hold
    the event its anchor file names and `expect_head` (that sequence with that hash; else
    kind "cut"). Stops at the first break. AuditError if the file is missing or foreign, or
    its anchor unreadable.
    """
    p = Path(path)
    if not p.is_file():
        raise AuditError(f"{p}: no such audit database")
    try:
        conn = connect(p, read_only=True)
    except sqlite3.Error as exc:
        raise AuditError(f"{p}: cannot open audit database: {exc}") from exc
    try:
        if not check_schema(conn, p):
            raise AuditError(f"{p}: not a consent-sidecar audit database (empty file)")
        result = _walk(conn)
        if result.ok:
            result = _walk_policies(conn, result)
        if result.ok:
            result = _check_heads(conn, p, result, expect_head)
        return result
    except sqlite3.Error as exc:
        raise AuditError(f"{p}: cannot read audit database: {exc}") from exc
    finally:
        conn.close()


def _check_row(
    conn: sqlite3.Connection, row: tuple[Any, ...], expected: int, prev: str
) -> tuple[BreakKind, str] | None:
    """(kind, reason) if this row, expected at sequence `expected` after hash `prev`, breaks the chain."""
    seq, stored_prev, stored_hash = row[0], row[9], row[10]
    if seq != expected:
        return "removed", f"event {expected} is missing (next is {seq}): a row was removed"
    recomputed = _row_hash(row)
    if recomputed is None:
        return "unreadable", f"event {seq} has an invalid field (action {row[3]!r}, time {row[1]!r})"
    if recomputed != stored_hash:
        origin = _moved_from(conn, row)
        if origin is not None:
            return "reordered", f"event {seq} holds the contents of event {origin}: rows were reordered"
        return "altered", f"event {seq}'s hash does not match its contents: the row was altered"
    if stored_prev != prev:
        if seq == 1:
            return "bad_first_prev_hash", "event 1's prev_hash is not 64 zeros"
        return (
            "relinked",
            f"event {seq}'s prev_hash does not match event {seq - 1}'s hash: "
            f"event {seq - 1} was rewritten or rows were reordered",
        )
    return None


def _walk(conn: sqlite3.Connection) -> VerifyResult:
    expected, prev = 1, GENESIS_HASH
    walker = conn.cursor()
    walker.execute(f"{SELECT} ORDER BY sequence")
    while rows := walker.fetchmany(1000):
        for row in rows:
            problem = _check_row(conn, row, expected, prev)
            if problem is not None:
                kind, reason = problem
                return VerifyResult(ok=False, count=expected - 1, broken_sequence=expected, reason=reason, kind=kind)
            prev, expected = row[10], expected + 1
    return VerifyResult(ok=True, count=expected - 1, last_hash=prev if expected > 1 else "")


def _walk_policies(conn: sqlite3.Connection, chain: VerifyResult) -> VerifyResult:
    """`chain` (intact) unless a published policy row does not match its event or digest."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {POLICIES, PUBLISHED} <= tables:
        return chain  # a database from before policies were kept, opened read-only: nothing to check
    checked: set[str] = set()
    published = conn.cursor()
    published.execute(f"SELECT sequence, digest FROM {PUBLISHED} ORDER BY sequence")
    while rows := published.fetchmany(1000):
        for seq, digest in rows:
            problem = _check_published(conn, seq, digest, checked)
            if problem is not None:
                return VerifyResult(ok=False, count=max(0, min(seq, chain.count + 1) - 1),
                                    broken_sequence=seq, reason=problem, kind="policy")  # fmt: skip
    return chain


def _check_published(conn: sqlite3.Connection, seq: int, digest: str, checked: set[str]) -> str | None:
    event = conn.execute(f"SELECT action, detail FROM {TABLE} WHERE sequence = ?", (seq,)).fetchone()
    if event is None or event[0] != int(AuditAction.POLICY_RELOADED):
        return f"a published policy names event {seq}, which is not a POLICY_RELOADED event"
    if f"digest {digest}" not in event[1]:
        return f"the policy published by event {seq} ({digest}) is not the digest its detail names"
    if digest in checked:
        return None
    row = conn.execute(f"SELECT canonical FROM {POLICIES} WHERE digest = ?", (digest,)).fetchone()
    if row is None:
        return f"the policy published by event {seq} ({digest}) is not stored"
    canonical = row[0]
    if not isinstance(canonical, str) or hashlib.sha256(canonical.encode("utf-8")).hexdigest() != digest:
        return f"the stored policy {digest} (published by event {seq}) does not hash to its digest: it was altered"
    checked.add(digest)
    return None


def _check_heads(conn: sqlite3.Connection, path: Path, chain: VerifyResult, expect_head: Head | None) -> VerifyResult:
    """`chain` (intact) unless the trail no longer holds the head of its anchor or `expect_head`."""
    last = Head(chain.count, chain.last_hash) if chain.count else None
    for head, where in ((read_anchor(path), f"the anchor file {anchor_path(path)}"), (expect_head, "--expect-head")):
        if head is None:
            continue
        row = conn.execute(f"SELECT hash FROM {TABLE} WHERE sequence = ?", (head.sequence,)).fetchone()
        problem = cut_problem(head, None if row is None else str(row[0]), last, where)
        if problem is not None:
            return VerifyResult(ok=False, count=chain.count, broken_sequence=head.sequence, reason=problem, kind="cut")
    return chain
