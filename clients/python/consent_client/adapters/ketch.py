"""Ketch adapters.

Ketch records consent per *purpose*, identified by a purpose code configured in Ketch
(``analytics``, ``behavioral_advertising``, ``essential_services``...). By default the purpose
codes are used as category ids; pass ``purpose_to_category`` to rename or group them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from urllib.parse import unquote

from ._common import ConsentFormatError, combine, require_category, require_str

__all__ = ["ketch_from_consent_cookie", "ketch_from_purposes"]

_STATUS = {"granted": True, "denied": False}
_ALLOWED = {"true": True, "false": False}
_BASE64 = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}")


def _purpose_state(code: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in _STATUS:
            return _STATUS[value]
        raise ConsentFormatError(f"Ketch purpose {code!r}: {value[:40]!r} is not 'granted' or 'denied'")
    if isinstance(value, Mapping):
        if "allowed" in value:
            allowed = value["allowed"]
            if isinstance(allowed, bool):
                return allowed
            if isinstance(allowed, str) and allowed in _ALLOWED:
                return _ALLOWED[allowed]
            raise ConsentFormatError(
                f"Ketch purpose {code!r}: 'allowed' is {str(allowed)[:40]!r}, expected \"true\" or \"false\""
            )
        if "status" in value:
            status = value["status"]
            if isinstance(status, str) and status in _STATUS:
                return _STATUS[status]
            raise ConsentFormatError(
                f"Ketch purpose {code!r}: 'status' is {str(status)[:40]!r}, expected 'granted' or 'denied'"
            )
        raise ConsentFormatError(f"Ketch purpose {code!r}: object has neither 'allowed' nor 'status'")
    raise ConsentFormatError(
        f"Ketch purpose {code!r}: unsupported value of type {type(value).__name__} "
        "(expected bool, 'granted'/'denied', {'allowed': ...} or {'status': ...})"
    )


def ketch_from_purposes(
    purposes: Mapping[str, object], purpose_to_category: Mapping[str, str] | None = None
) -> dict[str, bool]:
    """Turn a Ketch ``purposes`` object into category preferences.

    Accepted shapes for each ``purpose code -> value`` entry (mixing them is fine):

    * ``True`` / ``False`` -- the Ketch tag's ``getConsent`` / ``consent`` event payload
      (``{"purposes": {"analytics": true, "advertising": false}}``);
    * ``"granted"`` / ``"denied"`` -- Ketch's consent webhook / forwarder payloads;
    * ``{"allowed": "true" | "false", "legalBasisCode": ...}`` -- the Ketch web API's consent
      response and the ``_swb_consent_`` cache (``allowed`` is a *string*; a JSON bool is also
      accepted);
    * ``{"status": "granted" | "denied", "canonicalPurposes": [...]}`` -- the public
      ``_ketch_consent_v1_`` cookie (see :func:`ketch_from_consent_cookie`).

    Pass the inner ``purposes`` object, not the whole payload. Without ``purpose_to_category``
    each purpose code becomes a category id. With it, only mapped purposes are reported; a
    category fed by several purposes is ``True`` iff all of them are present and granted, and a
    category none of whose purposes appear is left out (the sidecar treats absent as not
    granted). Any other value raises :class:`ConsentFormatError`.
    """
    if not isinstance(purposes, Mapping):
        raise ConsentFormatError(f"Ketch purposes must be a mapping, got {type(purposes).__name__}")
    states: dict[str, bool] = {}
    for code, value in purposes.items():
        if not isinstance(code, str) or not code:
            raise ConsentFormatError(f"Ketch purpose codes must be non-empty strings, got {code!r}")
        states[code] = _purpose_state(code, value)
    if purpose_to_category is None:
        return states
    if not isinstance(purpose_to_category, Mapping):
        raise ConsentFormatError("purpose_to_category must be a mapping of purpose code to category id")
    pairs = [(code, require_category(cat, "purpose_to_category")) for code, cat in purpose_to_category.items()]
    return combine(pairs, states, require_all=True)


def ketch_from_consent_cookie(
    cookie_value: str, purpose_to_category: Mapping[str, str] | None = None
) -> dict[str, bool]:
    """Read Ketch's public ``_ketch_consent_v1_`` cookie (or its ``localStorage`` twin).

    Format: base64 (standard alphabet, ``=``-padded; URL-safe characters and missing padding are
    tolerated) of a JSON object mapping each purpose code to
    ``{"status": "granted" | "denied", "canonicalPurposes": [...]}``, e.g.
    ``eyJhbmFseXRpY3MiOnsic3RhdHVzIjoiZ3JhbnRlZCIs...`` for
    ``{"analytics": {"status": "granted", "canonicalPurposes": ["analytics"]}, ...}``. In a
    ``Cookie`` header the padding is usually percent-encoded (``%3D``); that is decoded first.
    The decoded object is handed to :func:`ketch_from_purposes`.
    """
    text = require_str(cookie_value, "_ketch_consent_v1_ value").strip()
    if "%" in text:
        text = unquote(text)
    if not text or not _BASE64.fullmatch(text):
        raise ConsentFormatError("_ketch_consent_v1_ value is not base64 text")
    body = text.rstrip("=").replace("-", "+").replace("_", "/")
    if len(body) % 4 == 1:
        raise ConsentFormatError("_ketch_consent_v1_ value has an impossible base64 length (truncated?)")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        obj = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ConsentFormatError(f"_ketch_consent_v1_ value does not decode to UTF-8 text: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ConsentFormatError(f"_ketch_consent_v1_ value does not hold valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ConsentFormatError("_ketch_consent_v1_ value must decode to a JSON object of purposes")
    return ketch_from_purposes(obj, purpose_to_category)
