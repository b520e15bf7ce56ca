"""The IAB GPP section table: every section id, its API prefix, and the field layout of each
US section, as data.

This module owns the *tables*; :mod:`.gpp` owns the decoding. Ids, prefixes, field names,
order and widths are those of the IAB Global Privacy Platform section specifications and of
the IAB's own implementations (``iabgpp-es`` 3.2, ``iabgpp-java`` 3.2), which agree on every
section listed here:

========  =========  ============================================================================
id        prefix     section
========  =========  ============================================================================
1         tcfeuv1    EU TCF v1 (deprecated; not decoded)
2         tcfeuv2    EU TCF v2: a TC string, decoded by :func:`.tcf.decode_tc_string`
3         (header)   the GPP header itself; never a section
4         (none)     GPP signal integrity (no public format; not decoded)
5         tcfcav1    Canadian TCF
6         uspv1      US Privacy string, decoded by :func:`.usprivacy.decode_us_privacy`
7         usnat      MSPA US National
8-27      us<state>  usca usva usco usut usct usfl usmt usor ustx usde usia usne usnh usnj
                     ustn usmn usmd usin usky usri
========  =========  ============================================================================

A US section is a *core* segment and optionally one sub-segment after a ``.``:

* a **GPC** sub-segment (``GpcSegmentType`` Int(2), always 1; ``Gpc`` Boolean), for the
  sections marked ``GPC`` below;
* a **sensitive-data consent** sub-segment (``SensitiveDataProcessing`` N-Bitfield(2, 8), no
  type bits) for usin, usky and usri, the layout ``iabgpp-es`` 3.2 (the IAB's reference
  implementation) reads and writes. The October 2025 public-comment drafts of the four newest
  sections (usmd, usin, usky, usri) describe an extra section header in front of the core; no
  IAB implementation emits it yet, so :mod:`.gpp` refuses a core that starts like one.

Two-bit fields hold 0, 1 or 2 (3 is undefined). For opt-outs 1 means *opted out* and 2 *did
not opt out*; for consents 1 means *no consent* and 2 *consent*; 0 is *not applicable*.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, TypeAlias

__all__ = [
    "GPC_SUB",
    "SECTION_IDS",
    "SECTION_NAMES",
    "SENSITIVE_SUB",
    "USNAT_SHORT_CORE",
    "US_SECTIONS",
    "FieldSpec",
    "FieldValue",
    "RangeEntry",
    "USSectionSpec",
]

#: Section id -> API prefix for every section id the IAB has registered (1-27).
SECTION_NAMES: Final[dict[int, str]] = {
    1: "tcfeuv1",
    2: "tcfeuv2",
    5: "tcfcav1",
    6: "uspv1",
    7: "usnat",
    8: "usca",
    9: "usva",
    10: "usco",
    11: "usut",
    12: "usct",
    13: "usfl",
    14: "usmt",
    15: "usor",
    16: "ustx",
    17: "usde",
    18: "usia",
    19: "usne",
    20: "usnh",
    21: "usnj",
    22: "ustn",
    23: "usmn",
    24: "usmd",
    25: "usin",
    26: "usky",
    27: "usri",
}
#: API prefix -> section id.
SECTION_IDS: Final[dict[str, int]] = {name: sid for sid, name in SECTION_NAMES.items()}

Kind = Literal["int", "enum", "list"]


@dataclass(frozen=True, slots=True)
class RangeEntry:
    """One tcfcav1 PubRestrictions entry: purpose ``key``, restriction ``type``, vendor ``ids``."""

    key: int
    type: int
    ids: tuple[int, ...]


#: One decoded field: Int and 2-bit codes as ``int``, Booleans as ``bool``, N-Bitfield(2, n)
#: lists as ``list[int]``; tcfcav1 adds ``str`` (language), ``datetime``, ``list[bool]``
#: (bitfields) and ``list[RangeEntry]`` (publisher restrictions).
FieldValue: TypeAlias = int | bool | str | datetime | list[int] | list[bool] | list[RangeEntry]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a bit-packed segment: an Int(``width``) (``kind`` "int": any value; "enum":
    a 2-bit code whose value 3 is undefined) or a list of ``count`` 2-bit codes ("list")."""

    name: str
    kind: Kind
    width: int
    count: int = 1

    @property
    def bits(self) -> int:
        return self.width * self.count


@dataclass(frozen=True, slots=True)
class USSectionSpec:
    """A US section: its core fields in order and which sub-segment (if any) may follow."""

    id: int
    name: str
    core: tuple[FieldSpec, ...]
    sub: Literal["gpc", "sensitive", None]


def _int6(name: str) -> FieldSpec:
    return FieldSpec(name, "int", 6)


def _e(name: str) -> FieldSpec:
    return FieldSpec(name, "enum", 2)


def _list(name: str, count: int) -> FieldSpec:
    return FieldSpec(name, "list", 2, count)


def _fields(*specs: FieldSpec | str) -> tuple[FieldSpec, ...]:
    """Bare names are 2-bit enum fields (most fields are)."""
    return tuple(s if isinstance(s, FieldSpec) else _e(s) for s in specs)


_MSPA_TAIL = ("MspaCoveredTransaction", "MspaOptOutOptionMode", "MspaServiceProviderMode")

# Fields shared by the second wave of state sections (FL, MT, OR, TX, DE, IA, NE, NH, NJ, TN, MN)
# differ only in their notices, list lengths and consents, so each is spelled out in full:
# a table that reads like the specification is easier to check than one built by inheritance.
US_SECTIONS: Final[dict[int, USSectionSpec]] = {
    spec.id: spec
    for spec in (
        # usnat's core has two layouts (12/2 or 16/3 list entries); the table holds the later
        # one and :mod:`.gpp` picks the earlier by the segment's length, as IAB decoders do.
        USSectionSpec(7, "usnat", _fields(
            _int6("Version"), "SharingNotice", "SaleOptOutNotice", "SharingOptOutNotice",
            "TargetedAdvertisingOptOutNotice", "SensitiveDataProcessingOptOutNotice",
            "SensitiveDataLimitUseNotice", "SaleOptOut", "SharingOptOut", "TargetedAdvertisingOptOut",
            _list("SensitiveDataProcessing", 16), _list("KnownChildSensitiveDataConsents", 3),
            "PersonalDataConsents", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(8, "usca", _fields(
            _int6("Version"), "SaleOptOutNotice", "SharingOptOutNotice", "SensitiveDataLimitUseNotice",
            "SaleOptOut", "SharingOptOut", _list("SensitiveDataProcessing", 9),
            _list("KnownChildSensitiveDataConsents", 2), "PersonalDataConsents", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(9, "usva", _fields(
            _int6("Version"), "SharingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 8),
            "KnownChildSensitiveDataConsents", *_MSPA_TAIL,
        ), None),
        USSectionSpec(10, "usco", _fields(
            _int6("Version"), "SharingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 7),
            "KnownChildSensitiveDataConsents", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(11, "usut", _fields(
            _int6("Version"), "SharingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SensitiveDataProcessingOptOutNotice", "SaleOptOut", "TargetedAdvertisingOptOut",
            _list("SensitiveDataProcessing", 8), "KnownChildSensitiveDataConsents", *_MSPA_TAIL,
        ), None),
        USSectionSpec(12, "usct", _fields(
            _int6("Version"), "SharingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 8),
            _list("KnownChildSensitiveDataConsents", 3), *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(13, "usfl", _fields(
            _int6("Version"), "ProcessingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 8),
            _list("KnownChildSensitiveDataConsents", 3), "AdditionalDataProcessingConsent", *_MSPA_TAIL,
        ), None),
        USSectionSpec(14, "usmt", _fields(
            _int6("Version"), "SharingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 8),
            _list("KnownChildSensitiveDataConsents", 3), "AdditionalDataProcessingConsent", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(15, "usor", _fields(
            _int6("Version"), "ProcessingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 11),
            _list("KnownChildSensitiveDataConsents", 3), "AdditionalDataProcessingConsent", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(16, "ustx", _fields(
            _int6("Version"), "ProcessingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 8),
            "KnownChildSensitiveDataConsents", "AdditionalDataProcessingConsent", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(17, "usde", _fields(
            _int6("Version"), "ProcessingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 9),
            _list("KnownChildSensitiveDataConsents", 5), "AdditionalDataProcessingConsent", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(18, "usia", _fields(
            _int6("Version"), "ProcessingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SensitiveDataOptOutNotice", "SaleOptOut", "TargetedAdvertisingOptOut",
            _list("SensitiveDataProcessing", 8), "KnownChildSensitiveDataConsents", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(19, "usne", _fields(
            _int6("Version"), "ProcessingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 8),
            "KnownChildSensitiveDataConsents", "AdditionalDataProcessingConsent", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(20, "usnh", _fields(
            _int6("Version"), "ProcessingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 8),
            _list("KnownChildSensitiveDataConsents", 3), "AdditionalDataProcessingConsent", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(21, "usnj", _fields(
            _int6("Version"), "ProcessingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 10),
            _list("KnownChildSensitiveDataConsents", 5), "AdditionalDataProcessingConsent", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(22, "ustn", _fields(
            _int6("Version"), "ProcessingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 8),
            "KnownChildSensitiveDataConsents", "AdditionalDataProcessingConsent", *_MSPA_TAIL,
        ), "gpc"),
        USSectionSpec(23, "usmn", _fields(
            _int6("Version"), "ProcessingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice",
            "SaleOptOut", "TargetedAdvertisingOptOut", _list("SensitiveDataProcessing", 8),
            "KnownChildSensitiveDataConsents", "AdditionalDataProcessingConsent", *_MSPA_TAIL,
        ), "gpc"),
        # The newest sections: MspaVersion first, one MspaMode instead of the two Mspa*Mode fields.
        USSectionSpec(24, "usmd", _fields(
            _int6("MspaVersion"), "MspaCoveredTransaction", "MspaMode", "ProcessingNotice",
            "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice", "SaleOptOut", "TargetedAdvertisingOptOut",
            "AdditionalDataProcessingConsent",
        ), "gpc"),
        USSectionSpec(25, "usin", _fields(
            _int6("MspaVersion"), "MspaCoveredTransaction", "MspaMode", "ProcessingNotice",
            "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice", "SaleOptOut", "TargetedAdvertisingOptOut",
            "KnownChildSensitiveDataConsents", "AdditionalDataProcessingConsent",
        ), "sensitive"),
        USSectionSpec(26, "usky", _fields(
            _int6("MspaVersion"), "MspaCoveredTransaction", "MspaMode", "ProcessingNotice",
            "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice", "SaleOptOut", "TargetedAdvertisingOptOut",
            "KnownChildSensitiveDataConsents", "AdditionalDataProcessingConsent",
        ), "sensitive"),
        USSectionSpec(27, "usri", _fields(
            _int6("MspaVersion"), "MspaCoveredTransaction", "MspaMode", "ProcessingNotice",
            "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice", "SaleOptOut", "TargetedAdvertisingOptOut",
            "KnownChildSensitiveDataConsents", "AdditionalDataProcessingConsent",
        ), "sensitive"),
    )
}

#: usnat's first core layout (before the DE/IA/NE/NH/NJ/TN release): 12 sensitive-data entries
#: and 2 known-child entries; 60 bits, so 10 or 11 characters once padded.
USNAT_SHORT_CORE: Final[tuple[FieldSpec, ...]] = tuple(
    _list(f.name, {"SensitiveDataProcessing": 12, "KnownChildSensitiveDataConsents": 2}[f.name])
    if f.kind == "list" else f
    for f in US_SECTIONS[7].core
)

#: The GPC sub-segment and the sensitive-data consent sub-segment.
GPC_SUB: Final[tuple[FieldSpec, ...]] = (FieldSpec("GpcSegmentType", "int", 2), FieldSpec("Gpc", "int", 1))
SENSITIVE_SUB: Final[tuple[FieldSpec, ...]] = (_list("SensitiveDataProcessing", 8),)
