"""Opaque page tokens for `AuditLog.page`: the last sequence served, bound to the filters.

Owns the token format (url-safe base64 of canonical JSON `{"v": 1, "last": N, "f": F}`,
F a fingerprint of the filters) and its checks. A token is opaque to clients and valid
only with the filters it was issued for. Must never carry event contents, nor touch the
database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from consent_core import errors

from consent_sidecar.audit.records import canonical_json

__all__ = ["decode_token", "encode_token", "filters_fingerprint"]


def filters_fingerprint(category_id: str, action: int, after_sequence: int) -> str:
    """A short digest of a page request's filters; a token only works with the same ones."""
    data = canonical_json({"category_id": category_id, "action": action, "after_sequence": after_sequence})
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def encode_token(last: int, fingerprint: str) -> str:
    """The token of the page after sequence `last` (unpadded url-safe base64)."""
    raw = canonical_json({"v": 1, "last": last, "f": fingerprint}).encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_token(token: str, fingerprint: str) -> int:
    """The last sequence a token carries; InvalidArgument naming page_token if unusable."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise errors.InvalidArgument("page_token", "not a token issued by this server") from None
    if (
        not isinstance(data, dict)
        or data.get("v") != 1
        or not isinstance(data.get("f"), str)
        or not isinstance(data.get("last"), int)
        or isinstance(data.get("last"), bool)
        or data["last"] < 0
    ):
        raise errors.InvalidArgument("page_token", "not a token issued by this server")
    if data["f"] != fingerprint:
        raise errors.InvalidArgument(
            "page_token", "was issued for other filters (category_id, action, after_sequence); repeat them exactly"
        )
    return int(data["last"])
