"""The Canadian TCF section of a GPP string (``tcfcav1``, section id 5).

Layout (IAB "GPP Extension: IAB Canada TCF"), segments joined by ``.``, each base64url:

* **core** (first character A-H: its 6-bit Version is below 8): Version Int(6), Created and
  LastUpdated Datetime (Int(36) deciseconds since the epoch, UTC), CmpId Int(12), CmpVersion
  Int(12), ConsentScreen Int(6), ConsentLanguage String(2) (6 bits a letter, ``A`` = 0),
  VendorListVersion Int(12), TcfPolicyVersion Int(6), UseNonStandardStacks Boolean,
  SpecialFeatureExpressConsent Bitfield(12), PurposesExpressConsent and PurposesImpliedConsent
  Bitfield(24), VendorExpressConsent and VendorImpliedConsent OptimizedRange, PubRestrictions
  N-ArrayOfRanges(6, 2) (optional: a core ending before it has none);
* **publisher purposes** (type 3, first character Y-Z or a-f): PubPurposesSegmentType Int(3),
  PubPurposesExpressConsent and PubPurposesImpliedConsent Bitfield(24), NumCustomPurposes Int(6),
  CustomPurposesExpressConsent and CustomPurposesImpliedConsent Bitfield(NumCustomPurposes);
* **disclosed vendors** (type 1, first character I-P): DisclosedVendorsSegmentType Int(3),
  DisclosedVendors OptimizedRange.

An OptimizedRange is MaxId Int(16), IsRange Boolean, then a Range(Fibonacci) or a bitfield of
MaxId bits. Encoders before ``iabgpp-es`` 3.2 (and ``iabgpp-java`` to 3.2) wrote the range with
fixed Int(16) ids instead (Range(Int), and Range(Int) in PubRestrictions without the optimized
wrapper). As ``iabgpp-es`` does, each segment is read both ways: the reading whose canonical
re-encoding reproduces the bits that were read wins, the Fibonacci one first; when neither does,
the Fibonacci reading stands (and its error, if any, is raised).

Work stays linear in the input: ranges are compared and re-encoded as spans, never id by id,
and the ids a section expands to are capped at :data:`MAX_EXPANDED_IDS` (a 33-bit Range(Int)
group can name 65,535 vendors, so unbounded expansion would let a short hostile string cost
seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from ._common import ConsentFormatError
from ._gppbits import MAX_ID, BitCursor, encode_fibonacci, fail, segment_bits
from .gpp_sections import FieldValue, RangeEntry

__all__ = ["MAX_EXPANDED_IDS", "decode_tcfcav1"]

_SECTION: Final = "tcfcav1"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Most vendor ids one tcfcav1 segment may expand to (16 full 16-bit vendor lists).
MAX_EXPANDED_IDS: Final = 16 * (MAX_ID + 1)

Spans = list[tuple[int, int]]


class _Cursor(BitCursor):
    """A BitCursor that also counts the ids its ranges expand to."""

    __slots__ = ("ids_left",)

    def __init__(self, bits: str) -> None:
        super().__init__(bits, _SECTION)
        self.ids_left = MAX_EXPANDED_IDS

    def expand(self, spans: Spans, field: str) -> list[int]:
        total = sum(end - start + 1 for start, end in spans)
        if total > self.ids_left:
            raise fail(_SECTION, field, f"expands to more than {MAX_EXPANDED_IDS} vendor ids in one segment")
        self.ids_left -= total
        ids: list[int] = []
        for start, end in spans:
            ids.extend(range(start, end + 1))
        return ids


def _merge(spans: Spans) -> Spans:
    """Sorted spans with overlapping and adjacent ones joined: the canonical groups."""
    out: Spans = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1] + 1:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


# -- the two range encodings: read as spans, re-encoded from canonical groups ------------------


def _int_spans(r: BitCursor, field: str) -> Spans:
    """Range(Int): Int(12) entries of IsGroup, Int(16) id [, Int(16) end]."""
    count = r.uint(12, f"{field} NumEntries")
    spans: Spans = []
    for n in range(1, count + 1):
        is_group = r.flag(f"{field} entry {n} IsGroup")
        start = r.uint(16, f"{field} entry {n} id")
        end = r.uint(16, f"{field} entry {n} end") if is_group else start
        if start > end:
            raise fail(r.section, field, f"entry {n} runs backwards ({start}-{end})")
        spans.append((start, end))
    return spans


def _encode_int(groups: Spans) -> str:
    parts = [format(len(groups), "012b")]
    for start, end in groups:
        parts.append(f"0{start:016b}" if start == end else f"1{start:016b}{end:016b}")
    return "".join(parts)


def _fib_spans(r: BitCursor, field: str) -> Spans:
    return r.fibonacci_spans(field)


def _encode_fib(groups: Spans) -> str:
    parts = [format(len(groups), "012b")]
    last = 0
    for start, end in groups:
        if start == end:
            parts.append("0" + encode_fibonacci(start - last))
        else:
            parts.append("1" + encode_fibonacci(start - last) + encode_fibonacci(end - start))
        last = end
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Flavour:
    spans: Callable[[BitCursor, str], Spans]
    encode: Callable[[Spans], str]


_FIB: Final = _Flavour(_fib_spans, _encode_fib)
_INT: Final = _Flavour(_int_spans, _encode_int)


def _optimized(r: _Cursor, field: str, flavour: _Flavour) -> tuple[list[int], bool]:
    """An OptimizedRange, and whether its bits are the canonical encoding of the ids read: the
    encoder writes MaxId = the highest id, and the range form only when it is no longer than
    the MaxId-bit bitfield."""
    max_id = r.uint(16, f"{field} MaxId")
    if r.flag(f"{field} IsRange"):
        start = r.pos
        groups = _merge(flavour.spans(r, field))
        as_range = flavour.encode(groups)
        top = groups[-1][1] if groups else 0
        ok = max_id == top and len(as_range) <= top and as_range == r.bits[start : r.pos]
        return r.expand(groups, field), ok
    bits = r.take(max_id, f"{field} bitfield")
    ids = []
    i = bits.find("1")
    while i >= 0:
        ids.append(i + 1)
        i = bits.find("1", i + 1)
    top = ids[-1] if ids else 0
    ok = max_id == top and len(flavour.encode(_merge([(i, i) for i in ids]))) > top
    r.ids_left -= len(ids)
    return ids, ok


def _restrictions(r: _Cursor, flavour: _Flavour) -> tuple[list[RangeEntry], bool]:
    """PubRestrictions; the Fibonacci form wraps each id list in an OptimizedRange, the legacy
    form writes a bare Range(Int)."""
    field = "PubRestrictions"
    if len(r.bits) - r.pos < 12:  # optional: an encoder may end the core before it
        return [], True
    count = r.uint(12, f"{field} NumEntries")
    entries = []
    canonical = True
    for n in range(1, count + 1):
        key = r.uint(6, f"{field} entry {n} key")
        kind = r.uint(2, f"{field} entry {n} type")
        where = f"{field} entry {n} ids"
        if flavour is _FIB:
            ids, ok = _optimized(r, where, flavour)
        else:
            start = r.pos
            groups = _merge(_int_spans(r, where))
            ok = _encode_int(groups) == r.bits[start : r.pos]
            ids = r.expand(groups, where)
        canonical = canonical and ok
        entries.append(RangeEntry(key, kind, tuple(ids)))
    return entries, canonical


# -- segments ---------------------------------------------------------------------------------


def _bitfield(r: BitCursor, width: int, field: str) -> list[bool]:
    return [bit == "1" for bit in r.take(width, field)]


def _datetime(r: BitCursor, field: str) -> datetime:
    return _EPOCH + timedelta(milliseconds=r.uint(36, field) * 100)


def _letters(r: BitCursor, field: str) -> str:
    # As the IAB decoders do: code 63 is a space, any other is chr(65 + code); then trimmed.
    codes = (r.uint(6, field), r.uint(6, field))
    return "".join(" " if c == 63 else chr(65 + c) for c in codes).strip()


_Fields = dict[str, FieldValue]


def _core(bits: str, flavour: _Flavour) -> tuple[_Fields, bool]:
    r = _Cursor(bits)
    out: _Fields = {
        "Version": r.uint(6, "Version"),
        "Created": _datetime(r, "Created"),
        "LastUpdated": _datetime(r, "LastUpdated"),
        "CmpId": r.uint(12, "CmpId"),
        "CmpVersion": r.uint(12, "CmpVersion"),
        "ConsentScreen": r.uint(6, "ConsentScreen"),
        "ConsentLanguage": _letters(r, "ConsentLanguage"),
        "VendorListVersion": r.uint(12, "VendorListVersion"),
        "TcfPolicyVersion": r.uint(6, "TcfPolicyVersion"),
        "UseNonStandardStacks": r.flag("UseNonStandardStacks"),
        "SpecialFeatureExpressConsent": _bitfield(r, 12, "SpecialFeatureExpressConsent"),
        "PurposesExpressConsent": _bitfield(r, 24, "PurposesExpressConsent"),
        "PurposesImpliedConsent": _bitfield(r, 24, "PurposesImpliedConsent"),
    }
    express, ok1 = _optimized(r, "VendorExpressConsent", flavour)
    implied, ok2 = _optimized(r, "VendorImpliedConsent", flavour)
    restrictions, ok3 = _restrictions(r, flavour)
    out["VendorExpressConsent"] = express
    out["VendorImpliedConsent"] = implied
    out["PubRestrictions"] = restrictions
    return out, ok1 and ok2 and ok3


def _disclosed(bits: str, flavour: _Flavour) -> tuple[_Fields, bool]:
    r = _Cursor(bits)
    kind = r.uint(3, "DisclosedVendorsSegmentType")
    vendors, ok = _optimized(r, "DisclosedVendors", flavour)
    return {"DisclosedVendorsSegmentType": kind, "DisclosedVendors": vendors}, ok


def _publisher(bits: str) -> _Fields:
    r = BitCursor(bits, _SECTION)
    out: _Fields = {
        "PubPurposesSegmentType": r.uint(3, "PubPurposesSegmentType"),
        "PubPurposesExpressConsent": _bitfield(r, 24, "PubPurposesExpressConsent"),
        "PubPurposesImpliedConsent": _bitfield(r, 24, "PubPurposesImpliedConsent"),
    }
    custom = r.uint(6, "NumCustomPurposes")
    out["NumCustomPurposes"] = custom
    out["CustomPurposesExpressConsent"] = _bitfield(r, custom, "CustomPurposesExpressConsent")
    out["CustomPurposesImpliedConsent"] = _bitfield(r, custom, "CustomPurposesImpliedConsent")
    return out


def _either(read: Callable[[str, _Flavour], tuple[_Fields, bool]], bits: str) -> _Fields:
    """The Fibonacci reading if it round-trips, else the legacy one if that does, else the
    Fibonacci reading as it stands (raising its error)."""
    try:
        fib, canonical = read(bits, _FIB)
    except ConsentFormatError as e:
        fib_error: ConsentFormatError | None = e
    else:
        if canonical:
            return fib
        fib_error = None
    try:
        legacy, canonical = read(bits, _INT)
        if canonical:
            return legacy
    except ConsentFormatError:
        pass
    if fib_error is not None:
        raise fib_error
    return fib


def decode_tcfcav1(text: str) -> dict[str, FieldValue]:
    """Decode the tcfcav1 section of a GPP string into ``{IAB field name: value}``: Bitfields as
    ``list[bool]``, OptimizedRanges as sorted ``list[int]`` of ids, PubRestrictions as
    :class:`RangeEntry` s. Fields of an absent optional segment are absent."""
    out: dict[str, FieldValue] = {}
    seen: set[str] = set()
    for segment in text.split("."):
        if not segment:
            continue  # the IAB decoders skip empty segments
        first = segment[0]
        if "A" <= first <= "H":
            name = "core"
        elif "I" <= first <= "P":
            name = "disclosed vendors"
        elif "Y" <= first <= "Z" or "a" <= first <= "f":
            name = "publisher purposes"
        else:
            raise fail(_SECTION, "segment type", f"segment {segment[:12]!r} is none of core, disclosed vendors, "
                       "publisher purposes")
        if name in seen:
            raise fail(_SECTION, "segment type", f"the {name} segment appears twice")
        seen.add(name)
        bits = segment_bits(segment, _SECTION, f"{name} segment")
        if name == "core":
            out.update(_either(_core, bits))
        elif name == "disclosed vendors":
            out.update(_either(_disclosed, bits))
        else:
            out.update(_publisher(bits))
    if "core" not in seen:
        raise fail(_SECTION, "core segment", "is missing")
    return out
