"""A page request over either trail: its limits, its checks, where it starts, and the next page's token.

`AuditLog.page` (SQLite) and `EtcdTrail.page` (etcd) share one contract (AdminService's
ListAuditEvents, docs/reference.md): `PageQuery.parse` refuses what either must refuse, with
the same messages, and turns a page token back into the sequence the page starts after; the
stores only fetch. Pure: must never touch a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from consent_core import errors

from consent_sidecar.audit.records import AuditAction, AuditRecord
from consent_sidecar.audit.tokens import decode_token, encode_token, filters_fingerprint

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "PageQuery"]

DEFAULT_PAGE_SIZE: Final = 100  # events a page holds when the request says 0
MAX_PAGE_SIZE: Final = 1000


@dataclass(frozen=True, slots=True)
class PageQuery:
    """A checked page request: at most `size` events after sequence `start` matching the filters."""

    size: int
    start: int  # the page holds events after this sequence (the token's, or after_sequence)
    category_id: str  # "" = any
    action: int  # 0 = any
    fingerprint: str  # of the filters: a token is only valid with the same ones

    @classmethod
    def parse(
        cls, *, page_size: int, page_token: str, category_id: str, action: int, after_sequence: int
    ) -> PageQuery:
        """errors.InvalidArgument naming page_size, page_token, action or after_sequence when unusable."""
        if page_size < 0:
            raise errors.InvalidArgument("page_size", f"must not be negative (got {page_size})")
        if page_size > MAX_PAGE_SIZE:
            raise errors.InvalidArgument("page_size", f"must be at most {MAX_PAGE_SIZE} (got {page_size})")
        if after_sequence < 0:
            raise errors.InvalidArgument("after_sequence", f"must not be negative (got {after_sequence})")
        if action:
            try:
                AuditAction(action)
            except ValueError:
                raise errors.InvalidArgument("action", f"unknown AuditAction value {action}") from None
        fingerprint = filters_fingerprint(category_id, int(action), after_sequence)
        start = after_sequence
        if page_token:
            start = max(start, decode_token(page_token, fingerprint))
        return cls(page_size or DEFAULT_PAGE_SIZE, start, category_id, int(action), fingerprint)

    def matches(self, r: AuditRecord) -> bool:
        """Whether `r` passes the filters (the sequence bound aside)."""
        return (not self.category_id or r.category_id == self.category_id) and (
            not self.action or r.action == self.action
        )

    def token_after(self, r: AuditRecord) -> str:
        """The token of the page that follows `r`, the last event of this one."""
        return encode_token(r.sequence, self.fingerprint)
