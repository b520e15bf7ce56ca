"""The tamper-evident audit trail: records and hash chain, the SQLite store, verification.

`records` is the vocabulary and the chain (pure), `schema` the on-disk format, `sqlite`
the open store (`AuditLog`), `anchor` its head and the files beside it, `paging` and
`tokens` its page requests and tokens, `watchers` its live fan-out, and `verify` the chain
checker. Import from here; the submodules' other names are internal.
"""

from consent_sidecar.audit.anchor import Head, parse_head
from consent_sidecar.audit.records import (
    GENESIS_HASH,
    AuditAction,
    AuditRecord,
    NewEvent,
    PublishedPolicy,
    canonical_bytes,
    canonical_json,
    changes_to_events,
    event_hash,
    format_time,
)
from consent_sidecar.audit.schema import AuditError
from consent_sidecar.audit.sqlite import DEFAULT_PAGE_SIZE, MAX_PAGE_BYTES, MAX_PAGE_SIZE, AuditLog
from consent_sidecar.audit.verify import BreakKind, VerifyResult, verify

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "GENESIS_HASH",
    "MAX_PAGE_BYTES",
    "MAX_PAGE_SIZE",
    "AuditAction",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "BreakKind",
    "Head",
    "NewEvent",
    "PublishedPolicy",
    "VerifyResult",
    "canonical_bytes",
    "canonical_json",
    "changes_to_events",
    "event_hash",
    "format_time",
    "parse_head",
    "verify",
]
