"""IAB Europe Transparency & Consent Framework (TCF) v2 -- TC string decoding.

Format of a TC string (TCF v2.0 through v2.3; the bit layout of the core segment has not
changed since v2.0, only the ``TcfPolicyVersion`` value: 2 for v2.0/2.1, 4 for v2.2, 5 for
v2.3):

* One or more *segments* separated by ``.``. The first is the mandatory **core** segment;
  optional later segments (disclosed vendors, publisher TC, ...) are not decoded here (their
  characters are checked, nothing more).
* Each segment is base64url (alphabet ``A-Z a-z 0-9 - _``) without padding; trailing ``=``
  padding is tolerated. The decoded *bytes* are read as one big-endian bit string (filler bits
  of the last character that do not complete a byte are not data).
* Core segment fields, in order, with their widths in bits: Version 6 (must be 2),
  Created 36, LastUpdated 36 (both deciseconds since the Unix epoch, UTC), CmpId 12,
  CmpVersion 12, ConsentScreen 6, ConsentLanguage 12 (two letters, 6 bits each, ``A`` = 0),
  VendorListVersion 12, TcfPolicyVersion 6, IsServiceSpecific 1, UseNonStandardTexts 1
  (called UseNonStandardStacks before v2.2), SpecialFeatureOptIns 12 (bit *i* = feature *i+1*),
  PurposesConsent 24, PurposesLITransparency 24, PurposeOneTreatment 1, PublisherCC 12 (two
  letters), then the vendor-consent section, then the vendor-legitimate-interest section,
  then publisher restrictions (not decoded).
* A vendor section is MaxVendorId 16, IsRangeEncoding 1, then either a bitfield of
  MaxVendorId bits (bit *i* = vendor *i+1*), or NumEntries 12 followed by that many entries of
  IsARange 1, StartOrOnlyVendorId 16 and, when IsARange is 1, EndVendorId 16.

Version-1 consent strings (first character ``B``) use a different layout and are rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import compress

from ._common import ConsentFormatError, combine, require_category, require_str

__all__ = ["TCString", "decode_tc_string", "tcf_to_preferences"]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SEXTETS = {ord(ch): format(i, "06b") for i, ch in enumerate(_ALPHABET)}  # a str.translate table
_AS_FLAGS = bytes.maketrans(b"01", b"\x00\x01")  # bit characters -> bytes itertools.compress reads
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUM_PURPOSES = 24
_NUM_SPECIAL_FEATURES = 12
_MAX_VENDOR_ID = 65_535  # vendor ids are Int(16)


@dataclass(frozen=True, slots=True)
class TCString:
    """The decoded core segment of a TCF v2 TC string (see the module docstring for the layout).

    Id sets hold 1-based ids: purpose ids 1-24, special-feature ids 1-12, vendor ids from the
    Global Vendor List.
    """

    version: int
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    tcf_policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool
    special_feature_opt_ins: frozenset[int]
    purpose_consents: frozenset[int]
    purpose_legitimate_interests: frozenset[int]
    purpose_one_treatment: bool
    publisher_cc: str
    vendor_consents: frozenset[int]
    vendor_legitimate_interests: frozenset[int]


class _BitReader:
    def __init__(self, bits: str) -> None:
        self._bits = bits
        self._pos = 0

    def _take(self, width: int, field: str) -> str:
        end = self._pos + width
        if end > len(self._bits):
            raise ConsentFormatError(
                f"TC string core segment is truncated: {field} needs {width} bits at bit {self._pos}, "
                f"only {len(self._bits) - self._pos} left"
            )
        chunk = self._bits[self._pos : end]
        self._pos = end
        return chunk

    def read_int(self, width: int, field: str) -> int:
        return int(self._take(width, field), 2)

    def read_bool(self, field: str) -> bool:
        return self._take(1, field) == "1"

    def id_set(self, width: int, field: str) -> frozenset[int]:
        # In C, not bit by bit in Python: a vendor bitfield can hold tens of thousands of bits.
        flags = self._take(width, field).encode("ascii").translate(_AS_FLAGS)
        return frozenset(compress(range(1, width + 1), flags))

    def letters(self, field: str) -> str:
        out = []
        for _ in range(2):
            code = self.read_int(6, field)
            if code > 25:
                raise ConsentFormatError(f"TC string {field} holds letter code {code}, outside A-Z (0-25)")
            out.append(chr(ord("A") + code))
        return "".join(out)

    def vendors(self, field: str) -> frozenset[int]:
        max_vendor = self.read_int(16, f"{field} MaxVendorId")
        if not self.read_bool(f"{field} IsRangeEncoding"):
            return self.id_set(max_vendor, f"{field} bitfield")
        num_entries = self.read_int(12, f"{field} NumEntries")
        ranges: list[tuple[int, int]] = []
        for n in range(num_entries):
            is_range = self.read_bool(f"{field} range entry {n + 1} IsARange")
            start = self.read_int(16, f"{field} range entry {n + 1} StartOrOnlyVendorId")
            end = self.read_int(16, f"{field} range entry {n + 1} EndVendorId") if is_range else start
            if not 1 <= start <= end <= max_vendor:
                raise ConsentFormatError(
                    f"TC string {field} range entry {n + 1} covers vendors {start}-{end}, "
                    f"outside 1-{max_vendor} (MaxVendorId) or reversed"
                )
            ranges.append((start, end))
        # Merge before expanding so overlapping entries cannot multiply the work.
        ids: set[int] = set()
        covered_to = 0
        for start, end in sorted(ranges):
            lo = max(start, covered_to + 1)
            if lo <= end:
                ids.update(range(lo, end + 1))
                covered_to = end
        return frozenset(ids)


def _segment_bits(segment: str, index: int) -> str:
    body = segment.rstrip("=")
    if len(segment) - len(body) > 2:
        raise ConsentFormatError(f"TC string segment {index + 1} has more than two '=' padding characters")
    if not body:
        raise ConsentFormatError(f"TC string segment {index + 1} is empty")
    if len(body) % 4 == 1:
        raise ConsentFormatError(f"TC string segment {index + 1} has an impossible base64 length (truncated?)")
    bits = body.translate(_SEXTETS)
    if len(bits) != 6 * len(body):  # a character outside the table stayed one character long
        bad = next(ch for ch in body if ord(ch) not in _SEXTETS)
        raise ConsentFormatError(
            f"TC string segment {index + 1} contains {bad!r}, which is not base64url (A-Z a-z 0-9 - _)"
        )
    # The encoded data is whole bytes; bits of the last character beyond them are base64 filler.
    return bits[: len(bits) // 8 * 8]


def decode_tc_string(tc: str) -> TCString:
    """Decode the core segment of a TCF v2 TC string (e.g. the ``euconsent-v2`` cookie or
    ``__tcfapi`` ``tcString``); see the module docstring for the exact layout.

    Raises :class:`ConsentFormatError` for empty, non-base64url, truncated or out-of-range
    input, and for any version other than 2 (including TCF v1 strings).
    """
    text = require_str(tc, "TC string").strip()
    if not text:
        raise ConsentFormatError("TC string is empty")
    segments = text.split(".")
    all_bits = [_segment_bits(seg, i) for i, seg in enumerate(segments)]
    r = _BitReader(all_bits[0])
    version = r.read_int(6, "Version")
    if version != 2:
        hint = " (a TCF v1 consent string)" if version == 1 else ""
        raise ConsentFormatError(f"TC string version is {version}{hint}; only TCF v2 strings are supported")
    created_ds = r.read_int(36, "Created")
    updated_ds = r.read_int(36, "LastUpdated")
    return TCString(
        version=version,
        created=_EPOCH + timedelta(milliseconds=created_ds * 100),
        last_updated=_EPOCH + timedelta(milliseconds=updated_ds * 100),
        cmp_id=r.read_int(12, "CmpId"),
        cmp_version=r.read_int(12, "CmpVersion"),
        consent_screen=r.read_int(6, "ConsentScreen"),
        consent_language=r.letters("ConsentLanguage"),
        vendor_list_version=r.read_int(12, "VendorListVersion"),
        tcf_policy_version=r.read_int(6, "TcfPolicyVersion"),
        is_service_specific=r.read_bool("IsServiceSpecific"),
        use_non_standard_texts=r.read_bool("UseNonStandardTexts"),
        special_feature_opt_ins=r.id_set(_NUM_SPECIAL_FEATURES, "SpecialFeatureOptIns"),
        purpose_consents=r.id_set(_NUM_PURPOSES, "PurposesConsent"),
        purpose_legitimate_interests=r.id_set(_NUM_PURPOSES, "PurposesLITransparency"),
        purpose_one_treatment=r.read_bool("PurposeOneTreatment"),
        publisher_cc=r.letters("PublisherCC"),
        vendor_consents=r.vendors("vendor consent section"),
        vendor_legitimate_interests=r.vendors("vendor legitimate-interest section"),
    )


def tcf_to_preferences(
    tc: str | TCString,
    purpose_to_category: Mapping[int, str],
    *,
    require_all: bool = True,
    vendors: Mapping[int, str] | None = None,
) -> dict[str, bool]:
    """Map a TC string's *purpose consents*, and optionally its *vendor consents*, to category
    preferences.

    ``purpose_to_category`` maps TCF purpose ids (1-24; e.g. 1 = store and/or access
    information on a device, 7 = measure advertising performance, 8 = measure content
    performance, 9 = understand audiences, 10 = develop and improve services) to category ids;
    several purposes may map to one category; it may be empty. Every mapped category is
    reported: with ``require_all`` (default) it is ``True`` iff *all* its purposes are consented,
    otherwise iff *any* is. Only the user's consent bits count: legitimate-interest
    transparency and publisher restrictions are not considered.

    ``vendors`` maps IAB Global Vendor List ids to category ids (keyword only), typically one
    synthetic category per vendor, e.g. ``{755: "TCFV755"}`` (755 is Google Advertising
    Products): the category is ``True`` iff the user consented to that vendor
    (``vendor_consents``). Several vendors may share a category, combined like purposes (all
    of them with ``require_all``, else any). A mapping then needs a destination in both a
    purpose category and its vendor category (``google-ads`` under ``C0004`` and ``TCFV755``,
    resolution ``all``) to send only when the user consented to the purpose *and* the vendor.
    A category fed by both a purpose and a vendor is combined the same way.
    """
    decoded = tc if isinstance(tc, TCString) else decode_tc_string(tc)
    if not isinstance(purpose_to_category, Mapping):
        raise ConsentFormatError("purpose_to_category must be a mapping of purpose id to category id")
    if vendors is not None and not isinstance(vendors, Mapping):
        raise ConsentFormatError("vendors must be a mapping of IAB vendor id to category id")
    pairs: list[tuple[tuple[str, int], str]] = []
    states: dict[tuple[str, int], bool] = {}
    for purpose, category in purpose_to_category.items():
        if isinstance(purpose, bool) or not isinstance(purpose, int) or not 1 <= purpose <= _NUM_PURPOSES:
            raise ConsentFormatError(f"purpose_to_category keys must be TCF purpose ids 1-24, got {purpose!r}")
        pairs.append((("purpose", purpose), require_category(category, "purpose_to_category")))
        states["purpose", purpose] = purpose in decoded.purpose_consents
    for vendor, category in (vendors or {}).items():
        if isinstance(vendor, bool) or not isinstance(vendor, int) or not 1 <= vendor <= _MAX_VENDOR_ID:
            raise ConsentFormatError(f"vendors keys must be IAB vendor ids 1-{_MAX_VENDOR_ID}, got {vendor!r}")
        pairs.append((("vendor", vendor), require_category(category, "vendors")))
        states["vendor", vendor] = vendor in decoded.vendor_consents
    return combine(pairs, states, require_all=require_all)
