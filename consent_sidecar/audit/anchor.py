"""The trail's anchor and its files: what lets a cut-off tail or a deleted database be noticed.

Owns `Head` (the newest event: sequence and hash), the anchor file `<database>.anchor`
beside the audit database, and the file-system rules for every file of the trail: created
mode 0600 whatever the umask (the database, its -wal and -shm, the anchor), and the anchor's
temp files (`.<database>.anchor.<random>.tmp`) removed at the next open when a crash left
them.

The anchor is one line, `consent-sidecar-audit-anchor 1 <sequence> <hash>`, replaced
atomically (temp file, fsync, rename, fsync of the directory) after every committed append,
so it never names an event that is not durable; a crash between the commit and the rename
leaves it one append behind, which is still a true statement about the trail. When the log
opens, and in `audit verify`, the trail must still hold event `<sequence>` with hash
`<hash>`: a trail that ends earlier, or holds another event there, was cut or replaced.
Someone able to delete both files is not stopped by it: for that, compare with a head kept
elsewhere (`PolicyStatus.audit_head_*`, the metric, the log line, `audit verify
--expect-head`). Must never write the database, nor name a head before its append commits.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from consent_sidecar.audit.schema import TABLE, AuditError

__all__ = [
    "ANCHOR_SUFFIX",
    "Head",
    "anchor_path",
    "check_anchor",
    "cut_problem",
    "parse_head",
    "private_file",
    "read_anchor",
    "remove_stale_temps",
    "tighten",
    "write_anchor",
]

ANCHOR_SUFFIX: Final = ".anchor"
_MAGIC: Final = "consent-sidecar-audit-anchor 1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_ANCHOR_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class Head:
    """The newest event of a trail: its sequence and hash (`SEQ:HASH` as text)."""

    sequence: int
    hash: str

    def __str__(self) -> str:
        return f"{self.sequence}:{self.hash}"


def parse_head(text: str) -> Head:
    """`SEQ:HASH` (what `--expect-head` takes) as a Head; ValueError saying what is wrong."""
    seq, sep, digest = text.strip().partition(":")
    if not sep or not seq.isdigit() or int(seq) < 1 or not _HEX64.fullmatch(digest.lower()):
        raise ValueError(f"expected SEQ:HASH (a sequence >= 1 and a 64-hex-digit sha256), got {text!r}")
    return Head(int(seq), digest.lower())


def anchor_path(database: Path) -> Path:
    """The anchor file of the audit database at `database`."""
    return database.with_name(database.name + ANCHOR_SUFFIX)


def read_anchor(database: Path) -> Head | None:
    """The head the anchor names, None when there is no anchor; AuditError if it is unreadable or malformed."""
    path = anchor_path(database)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AuditError(f"{path}: cannot read the audit anchor: {e.strerror or e}") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AuditError(f"{path}: the audit anchor is not a regular file")
        raw = os.read(fd, _MAX_ANCHOR_BYTES)
    finally:
        os.close(fd)
    parts = raw.decode("ascii", errors="replace").split()
    if len(parts) != 4 or " ".join(parts[:2]) != _MAGIC or not parts[2].isdigit() or not _HEX64.fullmatch(parts[3]):
        raise AuditError(f"{path}: not a consent-sidecar audit anchor (move it away if it is not one)")
    return Head(int(parts[2]), parts[3])


def write_anchor(database: Path, head: Head) -> None:
    """Atomically and durably replaces the anchor with `head`; OSError if the disk refuses (the old one stays)."""
    path = anchor_path(database)
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
    data = f"{_MAGIC} {head.sequence} {head.hash}\n".encode("ascii")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def cut_problem(anchor: Head, stored_hash: str | None, last: Head | None, where: str) -> str | None:
    """Why a trail whose event `anchor.sequence` has `stored_hash` (None: no such event) no longer holds `anchor`.

    `last` is the trail's newest event (None when empty); `where` names the expected head's
    origin, e.g. "the anchor file X". None when the trail still holds it.
    """
    if stored_hash == anchor.hash:
        return None
    ends = "is empty" if last is None else f"ends at event {last.sequence}"
    if stored_hash is None:
        return (
            f"the trail {ends}, but {where} names event {anchor.sequence} (hash {anchor.hash}): "
            "its newest events were cut off or the database was replaced"
        )
    return (
        f"event {anchor.sequence} has hash {stored_hash}, but {where} names hash {anchor.hash}: "
        "the trail was replaced or rewritten from that event on"
    )


def private_file(path: Path) -> None:
    """Creates `path` empty with mode 0600 (whatever the umask) unless it exists; the database starts so."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def tighten(database: Path) -> None:
    """Mode 0600 for the database, its -wal, -shm and anchor where ours and wider (older versions made them 0644)."""
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), anchor_path(database)):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)


def remove_stale_temps(database: Path) -> list[str]:
    """Removes anchor temp files a crash left beside the database (only our own name pattern); returns their names."""
    pattern = re.compile(rf"\.{re.escape(anchor_path(database).name)}\.[0-9a-f]{{8}}\.tmp")
    removed: list[str] = []
    with contextlib.suppress(OSError), os.scandir(database.parent) as entries:
        for entry in entries:
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return removed


def check_anchor(conn: sqlite3.Connection, database: Path) -> Head | None:
    """The trail's newest event (None: empty); AuditError when the anchor names an event the trail no longer holds."""
    last_row = conn.execute(f"SELECT sequence, hash FROM {TABLE} ORDER BY sequence DESC LIMIT 1").fetchone()
    last = None if last_row is None else Head(int(last_row[0]), str(last_row[1]))
    anchor = read_anchor(database)
    if anchor is None:
        return last
    row = conn.execute(f"SELECT hash FROM {TABLE} WHERE sequence = ?", (anchor.sequence,)).fetchone()
    where = f"the anchor file {anchor_path(database)}"
    problem = cut_problem(anchor, None if row is None else str(row[0]), last, where)
    if problem is not None:
        raise AuditError(
            f"{database}: the audit trail was cut: {problem}. Refusing to extend it. If this database is "
            f"meant to replace the trail (a restored backup), move {anchor_path(database)} away and start again"
        )
    return last
