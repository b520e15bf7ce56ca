"""IAB Global Privacy Platform (GPP) strings: decoding, and their opt-outs as category preferences.

A GPP string (the ``__gpp`` ``gppString``, the ``__gpp`` cookie, OpenRTB ``regs.gpp``) is a
header and one *section* per privacy signal, joined by ``~``::

    DBABLA~BVQqAAAACg.QA
    header  usnat core . GPC sub-segment

* **Header** (base64url, no padding characters; trailing filler bits are ignored, so both
  ``DBABM`` and ``DBABMA`` decode): Type Int(6), always 3; Version Int(6), always 1;
  SectionIds Range(Fibonacci): Int(12) entries, each a flag (single id / group), a Fibonacci
  offset from the previous id and, for a group, a Fibonacci length. Ids therefore come out
  strictly increasing; there must be exactly one ``~`` section per id, in that order.
* **Sections**, by id (:data:`.gpp_sections.SECTION_NAMES`): tcfeuv2 (2) is a TC string,
  decoded by :func:`.tcf.decode_tc_string`; uspv1 (6) a US Privacy string, decoded by
  :func:`.usprivacy.decode_us_privacy`; tcfcav1 (5) by :mod:`.gpp_tcfca`; usnat (7) and the
  state sections (8-27) by the field tables of :mod:`.gpp_sections`: a bit-packed core segment,
  then optionally ``.`` and one sub-segment (GPC, or sensitive-data consents for usin, usky,
  usri). Trailing filler bits of a segment are ignored, as the IAB decoders ignore them.
* usnat has two core layouts: the first (12 SensitiveDataProcessing and 2
  KnownChildSensitiveDataConsents entries, 60 bits: 10 or 11 characters) and the current one
  (16 and 3 entries, 70 bits). The IAB decoders choose by the segment's *length*, not by its
  Version field, because iabgpp-java up to 3.2 wrote Version 1 with the current layout; so does
  this one. The first layout is reported with its 12 and 2 entries.
* usmd, usin, usky and usri are read as ``iabgpp-es`` 3.2 writes them (MspaVersion first). The
  October 2025 drafts of their specifications put a section header (SectionID, Version,
  SubSections) first; a core whose first field equals the section's id is refused as that.
* Ids this module has no format for (1 tcfeuv1, 3, 4, and ids above 27 that later states will
  take) are listed in ``section_ids`` and kept as text in ``undecoded``, not guessed at: a new
  state must not make the whole string unreadable.

Everything malformed raises :class:`ConsentFormatError` (``GPP <section> <field>: <problem>``):
a wrong header Type or Version, characters outside base64url, a truncated field, a section
count that does not match the header, an empty section, a two-bit value of 3 (undefined in
every US field), an unknown sub-segment, and anything the TC, US Privacy or TCF Canada decoders
refuse. Input is bounded by :data:`._common.MAX_INPUT_CHARS` and decoded in time linear in its
length (no loop over the input is nested in another).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias, TypeVar

from ._common import ConsentFormatError, require_category, require_str
from ._gppbits import BitCursor, fail, segment_bits
from .gpp_sections import (
    GPC_SUB,
    SECTION_NAMES,
    SENSITIVE_SUB,
    US_SECTIONS,
    USNAT_SHORT_CORE,
    FieldSpec,
    FieldValue,
    USSectionSpec,
)
from .gpp_tcfca import decode_tcfcav1
from .merge import merge_preferences
from .tcf import TCString, decode_tc_string, tcf_to_preferences
from .usprivacy import USPrivacy, decode_us_privacy

__all__ = ["FieldValue", "GPPString", "Section", "decode_gpp", "gpp_to_preferences"]

#: A decoded section: the field dict of a bit-packed section, or the TC / US Privacy object.
Section: TypeAlias = dict[str, FieldValue] | TCString | USPrivacy
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class GPPString:
    """A decoded GPP string.

    ``section_ids``: the header's section ids, in header (ascending) order. ``sections``: each
    decoded section by API prefix: ``"tcfeuv2"`` -> :class:`TCString`, ``"uspv1"`` ->
    :class:`USPrivacy`, every other section -> ``{field name: value}`` with the IAB's field
    names (``Version``, ``SaleOptOut``, ``SensitiveDataProcessing``, ..., and for sections with
    a GPC sub-segment ``GpcSegmentIncluded``, ``Gpc`` and, when included, ``GpcSegmentType``).
    ``undecoded``: the text of each section whose id has no format here.
    """

    section_ids: list[int]
    sections: dict[str, Section]
    undecoded: dict[int, str] = field(default_factory=dict)

    @property
    def tcfeuv2(self) -> TCString | None:
        section = self.sections.get("tcfeuv2")
        return section if isinstance(section, TCString) else None

    @property
    def uspv1(self) -> USPrivacy | None:
        section = self.sections.get("uspv1")
        return section if isinstance(section, USPrivacy) else None

    def fields(self, name: str) -> dict[str, FieldValue] | None:
        """The field dict of a bit-packed section (usnat, a state, tcfcav1), if the string has it."""
        section = self.sections.get(name)
        return section if isinstance(section, dict) else None


# -- bit-packed US sections -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Plan:
    """A segment's fields precomputed for decoding: the segment's first ``needed`` bits become
    one small int, and each field is ``(value >> shift) & mask``, a list field one shift per
    entry; no per-field slicing or parsing."""

    fields: tuple[FieldSpec, ...]
    needed: int
    extract: tuple[tuple[str, str, tuple[int, ...], int], ...]  # name, kind, shifts, mask


def _plan(specs: Iterable[FieldSpec]) -> _Plan:
    specs = tuple(specs)
    needed = sum(f.bits for f in specs)
    extract = []
    pos = 0
    for f in specs:
        shifts = tuple(needed - pos - f.width * (i + 1) for i in range(f.count))
        extract.append((f.name, f.kind, shifts, (1 << f.width) - 1))
        pos += f.bits
    return _Plan(specs, needed, tuple(extract))


_CORE_PLANS: Final[dict[int, _Plan]] = {sid: _plan(spec.core) for sid, spec in US_SECTIONS.items()}
_USNAT_SHORT_PLAN: Final = _plan(USNAT_SHORT_CORE)
_GPC_PLAN: Final = _plan(GPC_SUB)
_SENSITIVE_PLAN: Final = _plan(SENSITIVE_SUB)


def _read(section: str, segment: str, text: str, plan: _Plan, out: dict[str, FieldValue]) -> None:
    """Decodes one segment's fields into ``out`` (trailing filler bits ignored)."""
    bits = segment_bits(text, section, segment)
    if len(bits) < plan.needed:
        start = 0
        for f in plan.fields:
            if start + f.bits > len(bits):
                raise fail(
                    section, f.name,
                    f"truncated: needs {f.bits} bits at bit {start}, only {max(len(bits) - start, 0)} left",
                )
            start += f.bits
    value = int(bits[: plan.needed], 2)
    for name, kind, shifts, mask in plan.extract:
        if kind == "list":
            values = [(value >> shift) & 3 for shift in shifts]
            if 3 in values:
                raise fail(section, f"{name}[{values.index(3)}]", "is 3, which no US field defines (0, 1 or 2)")
            out[name] = values
        else:
            field_value = (value >> shifts[0]) & mask
            if kind == "enum" and field_value == 3:
                raise fail(section, name, "is 3, which no US field defines (0, 1 or 2)")
            out[name] = field_value


def _decode_us(spec: USSectionSpec, text: str) -> dict[str, FieldValue]:
    name = spec.name
    segments = text.split(".")
    core = segments[0]
    plan = _USNAT_SHORT_PLAN if spec.id == 7 and len(core) in (10, 11) else _CORE_PLANS[spec.id]
    out: dict[str, FieldValue] = {}
    _read(name, "core segment", core, plan, out)
    if out.get("MspaVersion") == spec.id:
        # The October 2025 drafts for usmd-usri put a section header (SectionID first) before the
        # core; no IAB implementation writes it. Read as a core it would be nonsense, so refuse it.
        raise fail(name, "MspaVersion", f"is {spec.id}, the section's own id: a draft section header, not supported")
    allowed = 1 if spec.sub is None else 2
    if len(segments) > allowed:
        what = "no sub-segment" if spec.sub is None else "one sub-segment"
        raise fail(name, "sub-segments", f"{len(segments) - 1} found after the core; {name} defines {what}")
    included = len(segments) == 2
    if spec.sub == "gpc":
        out["GpcSegmentIncluded"] = included
        if included:
            gpc: dict[str, FieldValue] = {}
            _read(name, "GPC sub-segment", segments[1], _GPC_PLAN, gpc)
            if gpc["GpcSegmentType"] != 1:
                raise fail(name, "GpcSegmentType", f"is {gpc['GpcSegmentType']}; a GPC sub-segment has type 1")
            out["GpcSegmentType"] = 1
            out["Gpc"] = gpc["Gpc"] == 1
        else:
            out["Gpc"] = False  # as the IAB decoders report a string without the sub-segment
    elif spec.sub == "sensitive":
        out["SensitiveDataConsentSegmentIncluded"] = included
        if included:
            _read(name, "sensitive-data consent sub-segment", segments[1], _SENSITIVE_PLAN, out)
        else:
            out["SensitiveDataProcessing"] = [0] * SENSITIVE_SUB[0].count
    return out


# -- the string --------------------------------------------------------------------------------


def _header(text: str, sections: int) -> list[int]:
    bits = segment_bits(text, "header", "segment")
    r = BitCursor(bits, "header")
    kind = r.uint(6, "Type")
    if kind != 3:
        hint = " (a bare TC string, not a GPP string?)" if kind == 2 else ""
        raise fail("header", "Type", f"is {kind}{hint}; a GPP header has type 3")
    version = r.uint(6, "Version")
    if version != 1:
        raise fail("header", "Version", f"is {version}; only GPP version 1 exists")
    ids: list[int] = []
    for start, end in r.fibonacci_spans("SectionIds"):
        # Counted before a group is expanded: a huge group costs nothing.
        if len(ids) + end - start + 1 > sections:
            raise fail("header", "SectionIds", f"lists more section ids than the {sections} sections after it")
        ids.extend(range(start, end + 1))
    return ids


def decode_gpp(s: str) -> GPPString:
    """Decode a GPP string and every section it carries (see the module docstring)."""
    text = require_str(s, "GPP string").strip()
    if not text:
        raise ConsentFormatError("GPP string is empty")
    parts = text.split("~")
    ids = _header(parts[0], len(parts) - 1)
    if len(ids) != len(parts) - 1:
        raise fail(
            "header", "SectionIds",
            f"lists {len(ids)} section ids but the string has {len(parts) - 1} sections after the header",
        )
    sections: dict[str, Section] = {}
    undecoded: dict[int, str] = {}
    for sid, part in zip(ids, parts[1:], strict=True):
        name = SECTION_NAMES.get(sid, f"section {sid}")
        if not part:
            raise fail(name, "section", "is empty")
        if sid in US_SECTIONS:
            sections[name] = _decode_us(US_SECTIONS[sid], part)
        elif sid == 2:
            sections[name] = _nested(name, decode_tc_string, part)
        elif sid == 6:
            sections[name] = _nested(name, decode_us_privacy, part)
        elif sid == 5:
            sections[name] = decode_tcfcav1(part)
        else:
            undecoded[sid] = part
    return GPPString(ids, sections, undecoded)


def _nested(name: str, decoder: Callable[[str], _T], part: str) -> _T:
    """A section in another format, its decoder's error prefixed with the section's name."""
    try:
        return decoder(part)
    except ConsentFormatError as e:
        raise ConsentFormatError(f"GPP {name}: {e}") from None


# -- opt-outs as category preferences ----------------------------------------------------------

_US_NAMES: Final = frozenset(spec.name for spec in US_SECTIONS.values())
_GPC_SECTIONS: Final = frozenset(spec.name for spec in US_SECTIONS.values() if spec.sub == "gpc")


def _is_signal(name: str) -> bool:
    """Opt-outs and consents (1 = opted out / no consent, 2 = did not / consent); not notices,
    versions or MSPA modes, which say nothing about what the user chose."""
    return name.endswith(("OptOut", "Consent", "Consents")) or name == "SensitiveDataProcessing"


# Section name -> the signal fields it carries (core and sub-segments).
_SIGNALS: Final[dict[str, frozenset[str]]] = {
    spec.name: frozenset(
        f.name for f in (*spec.core, *(SENSITIVE_SUB if spec.sub == "sensitive" else ())) if _is_signal(f.name)
    ) | ({"Gpc"} if spec.sub == "gpc" else set())
    for spec in US_SECTIONS.values()
}
_SIGNALS["uspv1"] = frozenset({"OptOutSale"})
_ALL_SIGNALS: Final = frozenset().union(*_SIGNALS.values())

# A parsed table key: (section or None for every section, field, 1-based entry or None).
_Key = tuple[str | None, str, int | None]


def _parse_key(key: object) -> _Key:
    if not isinstance(key, str):
        raise ConsentFormatError(f"GPP table keys must be strings like 'SaleOptOut', got {key!r}")
    parts = key.split(".")
    section = parts.pop(0) if len(parts) > 1 and parts[0] in _SIGNALS else None
    index: int | None = None
    if len(parts) == 2 and parts[1].isdigit() and parts[1].isascii():
        index = int(parts.pop())
        if index < 1:
            raise ConsentFormatError(f"GPP table key {key!r}: entries are numbered from 1")
    if len(parts) != 1 or parts[0] not in _ALL_SIGNALS:
        raise ConsentFormatError(
            f"GPP table key {key!r} is not [section.]Field[.N] with Field one of {', '.join(sorted(_ALL_SIGNALS))}"
        )
    field_name = parts[0]
    if section is not None and field_name not in _SIGNALS[section]:
        raise ConsentFormatError(f"GPP table key {key!r}: {section} has no {field_name}")
    if index is not None and field_name in ("Gpc", "OptOutSale"):
        raise ConsentFormatError(f"GPP table key {key!r}: {field_name} is a single value, not a list")
    return section, field_name, index


def _categories(key: str, value: object) -> list[str]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise ConsentFormatError(f"GPP table entry {key!r} must be a category id or a list of them")
    return [require_category(c, f"GPP table entry {key!r}") for c in value]


def _verdict(section: Section, field_name: str, index: int | None) -> bool | None:
    """What one section says about one signal: False (denied), True (granted) or None."""
    if isinstance(section, USPrivacy):
        if field_name != "OptOutSale" or section.opted_out_of_sale is None:
            return None
        return not section.opted_out_of_sale
    if not isinstance(section, dict) or field_name not in section:
        return None
    value = section[field_name]
    if field_name == "Gpc":
        return False if section.get("GpcSegmentIncluded") and value is True else None
    codes = value if isinstance(value, list) else [value]
    if index is not None:
        codes = codes[index - 1 : index]
    if 1 in codes:
        return False
    return True if 2 in codes else None


def gpp_to_preferences(
    s: str | GPPString,
    table: Mapping[str, str | Iterable[str]],
    *,
    tcf_purposes: Mapping[int, str] | None = None,
    tcf_vendors: Mapping[int, str] | None = None,
    require_all: bool = True,
) -> dict[str, bool]:
    """Turn the opt-outs and consents of a GPP string into category preferences.

    ``table`` maps *signal fields* to the category ids they govern, for example::

        {"SaleOptOut": ["C0004"],
         "TargetedAdvertisingOptOut": ["C0004", "C0005"],
         "Gpc": ["C0004", "C0005"]}

    Keys are IAB field names: the opt-outs (``SaleOptOut``, ``SharingOptOut``,
    ``TargetedAdvertisingOptOut``), the consents (``PersonalDataConsents``,
    ``AdditionalDataProcessingConsent``, ``KnownChildSensitiveDataConsents``),
    ``SensitiveDataProcessing``, ``Gpc`` and uspv1's ``OptOutSale``. A bare field applies to
    every section of the string that carries it (usnat and every state section); prefix a
    section to narrow it (``"usca.SaleOptOut"``); suffix a 1-based entry for the list fields
    (``"SensitiveDataProcessing.8"``: the eighth sensitive-data category of each section,
    whose meaning differs from state to state, so usually section-qualified). An unknown key, a
    notice or MSPA field, or a section without that field raises :class:`ConsentFormatError`.

    Values: for opt-outs 1 (opted out) denies and 2 (did not opt out) grants; for consents 1
    (no consent) denies and 2 (consent) grants; 0 (not applicable) says nothing. A list field
    without an entry number denies if any entry is 1, else grants if any is 2. ``Gpc`` (the GPC
    sub-segment) denies when true and says nothing when false or absent; ``OptOutSale`` denies
    on ``Y`` and grants on ``N``. When sections disagree, denial wins. Categories no signal
    speaks to are absent.

    TCF: when the string carries ``tcfeuv2``, ``tcf_purposes`` and ``tcf_vendors`` (with
    ``require_all``) are applied to it exactly as :func:`.tcf.tcf_to_preferences` applies
    ``purpose_to_category`` and ``vendors``, and the result merged in (denial wins). Without
    them the TC string is not consulted.
    """
    decoded = s if isinstance(s, GPPString) else decode_gpp(s)
    if not isinstance(table, Mapping):
        raise ConsentFormatError("GPP table must be a mapping of signal field to category ids")
    rules = [(_parse_key(key), _categories(key, cats)) for key, cats in table.items()]
    merged: dict[str, bool] = {}
    for (only, field_name, index), categories in rules:
        for name, section in decoded.sections.items():
            if only is not None and name != only:
                continue
            verdict = _verdict(section, field_name, index)
            if verdict is None:
                continue
            for category in categories:
                merged[category] = merged.get(category, True) and verdict
    if tcf_purposes is not None or tcf_vendors is not None:
        tc = decoded.tcfeuv2
        if tc is not None:
            tcf = tcf_to_preferences(tc, tcf_purposes or {}, vendors=tcf_vendors, require_all=require_all)
            merged = merge_preferences(merged, tcf)
    return merged
