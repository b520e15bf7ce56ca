"""The decision semantics of docs/reference.md §1 against the compiled `Index`.

One table row per rule of the contract, run three ways (`Index.decide` explained, not
explained, and through `decide_one` with an equivalent raw Segment event), and checked
against the naive reference in `reference.py` too. Then hypothesis compares the index with
the reference on random mappings and requests, and the memo is checked for safety.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from consent_core.event import decide_one
from consent_core.index import PREFERENCE_EVENT_NAME, Decision, Index, Outcome, Reason, compile
from consent_core.limits import Limits
from consent_core.model import (
    Category,
    ConsentMapping,
    DestinationSettings,
    Resolution,
    Settings,
    UnknownDestinations,
    mapping_problems,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import RefDecision, reference_decide, reference_split

# -- the table's mapping ------------------------------------------------------------------


def table_mapping(unknown: UnknownDestinations = UnknownDestinations.ALLOW) -> ConsentMapping:
    """Every kind of destination the table needs, each named after its role."""
    mapping = ConsentMapping(
        categories=(
            Category("C0002", "Performance Cookies", ("amplitude", "mixpanel", "google-analytics-4")),
            Category(
                "C0004", "Targeting Cookies", ("google-ads", "braze", "google-analytics-4", "snowflake", "intercom")
            ),
            Category("C0005", "Social Media Cookies", ("facebook-pixel", "amplitude"), enabled=False),
            Category("C0007", "Experiments", ("mixpanel", "hotjar", "braze", "intercom", "fullstory"), shadow=True),
            Category("C0008", "Retired Experiments", ("legacy-pixel",), enabled=False, shadow=True),
            Category("C0009", "Heatmaps", ("hotjar", "intercom", "fullstory"), shadow=True),
        ),
        destinations={
            "aws-s3": DestinationSettings(enforce=False),  # exempt, in no category
            "snowflake": DestinationSettings(enforce=False),  # exempt, mapped to C0004
            "braze": DestinationSettings(resolution=Resolution.ANY),
            "intercom": DestinationSettings(resolution=Resolution.ANY),  # C0004 and two shadow categories
            "fullstory": DestinationSettings(resolution=Resolution.ANY),  # only two shadow categories
            "webhooks": DestinationSettings(),  # known only from this block
        },
        settings=Settings(unknown_destinations=unknown),
    )
    assert mapping_problems(mapping) == []
    return mapping


KNOWN_SORTED = [
    "amplitude",
    "aws-s3",
    "braze",
    "facebook-pixel",
    "fullstory",
    "google-ads",
    "google-analytics-4",
    "hotjar",
    "intercom",
    "legacy-pixel",
    "mixpanel",
    "snowflake",
    "webhooks",
]

ALLOW_INDEX = compile(table_mapping())
DENY_INDEX = compile(table_mapping(UnknownDestinations.DENY))


def D(destination: str, reason: str, req: str = "", miss: str = "", shadow: str = "") -> Decision:
    """An expected decision; category lists as space-separated ids; `allowed` follows from the reason."""
    r = Reason[reason]
    allowed = r not in (Reason.DENIED, Reason.UNKNOWN_DESTINATION, Reason.DISABLED_BY_EVENT)
    return Decision(destination, allowed, r, tuple(req.split()), tuple(miss.split()), tuple(shadow.split()))


@dataclass(frozen=True)
class Case:
    prefs: dict[str, bool] | None
    destinations: list[str]
    expect: list[Decision]
    integrations: dict[str, Any] | None = None
    preference_event: bool = False
    deny_unknown: bool = False


def case(name: str, c: Case) -> Any:
    return pytest.param(c, id=name)


TABLE = [
    # --- no consent object ---------------------------------------------------------------
    case("no_consent_object_allows_every_destination", Case(
        None,
        ["google-ads", "amplitude", "hotjar", "aws-s3", "unknown-tool"],
        [
            D("google-ads", "NO_CONSENT", "C0004", "C0004"),
            D("amplitude", "NO_CONSENT", "C0002", "C0002"),
            D("hotjar", "NO_CONSENT"),
            D("aws-s3", "NO_CONSENT"),
            D("unknown-tool", "NO_CONSENT"),
        ],
    )),
    case("no_consent_object_beats_unknown_destinations_deny", Case(
        None,
        ["unknown-tool", "google-ads"],
        [D("unknown-tool", "NO_CONSENT"), D("google-ads", "NO_CONSENT", "C0004", "C0004")],
        deny_unknown=True,
    )),
    # --- unmapped --------------------------------------------------------------------------
    case("destination_known_only_from_destinations_block_is_unmapped", Case(
        {}, ["webhooks"], [D("webhooks", "UNMAPPED")],
    )),
    case("destination_mapped_only_to_disabled_categories_is_unmapped", Case(
        {}, ["facebook-pixel", "legacy-pixel"], [D("facebook-pixel", "UNMAPPED"), D("legacy-pixel", "UNMAPPED")],
    )),
    case("destination_mapped_only_to_shadow_categories_is_unmapped_and_reports_them", Case(
        {}, ["hotjar"], [D("hotjar", "UNMAPPED", shadow="C0007 C0009")],
    )),
    case("shadow_categories_under_all_report_those_not_granted", Case(
        {"C0007": True}, ["hotjar"], [D("hotjar", "UNMAPPED", shadow="C0009")],
    )),
    case("destination_mapped_only_to_granted_shadow_categories_reports_nothing", Case(
        {"C0007": True, "C0009": True}, ["hotjar"], [D("hotjar", "UNMAPPED")],
    )),
    case("shadow_categories_under_any_are_reported_when_none_would_grant", Case(
        {},
        ["intercom", "fullstory"],
        [D("intercom", "DENIED", "C0004", "C0004", "C0007 C0009"), D("fullstory", "UNMAPPED", shadow="C0007 C0009")],
    )),
    case("shadow_categories_under_any_are_not_reported_when_one_would_grant", Case(
        {"C0009": True},
        ["intercom", "fullstory"],
        [D("intercom", "DENIED", "C0004", "C0004"), D("fullstory", "UNMAPPED")],
    )),
    # --- unknown destinations --------------------------------------------------------------
    case("unknown_destination_is_allowed_as_unmapped_by_default", Case(
        {}, ["unknown-tool"], [D("unknown-tool", "UNMAPPED")],
    )),
    case("unknown_destination_is_blocked_under_deny", Case(
        {"C0002": True},
        ["unknown-tool", "amplitude"],
        [D("unknown-tool", "UNKNOWN_DESTINATION"), D("amplitude", "GRANTED", "C0002")],
        deny_unknown=True,
    )),
    case("destination_in_disabled_category_only_is_known_under_deny", Case(
        {}, ["legacy-pixel", "webhooks"], [D("legacy-pixel", "UNMAPPED"), D("webhooks", "UNMAPPED")],
        deny_unknown=True,
    )),
    # --- exempt ------------------------------------------------------------------------------
    case("exempt_destination_is_allowed_without_any_grant", Case(
        {},
        ["aws-s3", "snowflake"],
        [D("aws-s3", "EXEMPT"), D("snowflake", "EXEMPT", "C0004", "C0004")],
    )),
    # --- resolution ----------------------------------------------------------------------
    case("resolution_all_blocks_unless_every_category_is_granted", Case(
        {"C0002": True},
        ["google-analytics-4"],
        [D("google-analytics-4", "DENIED", "C0002 C0004", "C0004")],
    )),
    case("resolution_all_allows_when_every_category_is_granted", Case(
        {"C0002": True, "C0004": True},
        ["google-analytics-4"],
        [D("google-analytics-4", "GRANTED", "C0002 C0004")],
    )),
    case("resolution_any_allows_with_one_category_granted", Case(
        {"C0004": True}, ["braze"], [D("braze", "GRANTED", "C0004")],
    )),
    case("resolution_any_blocks_when_no_category_is_granted", Case(
        {"C0002": True}, ["braze"], [D("braze", "DENIED", "C0004", "C0004", "C0007")],
    )),
    # --- what grants -----------------------------------------------------------------------
    case("category_set_false_is_not_granted", Case(
        {"C0002": False}, ["amplitude"], [D("amplitude", "DENIED", "C0002", "C0002")],
    )),
    case("category_absent_from_preferences_is_not_granted", Case(
        {"C0004": True}, ["amplitude"], [D("amplitude", "DENIED", "C0002", "C0002")],
    )),
    case("empty_category_preferences_grants_nothing", Case(
        {},
        ["amplitude", "google-ads", "webhooks", "aws-s3"],
        [
            D("amplitude", "DENIED", "C0002", "C0002"),
            D("google-ads", "DENIED", "C0004", "C0004"),
            D("webhooks", "UNMAPPED"),
            D("aws-s3", "EXEMPT"),
        ],
    )),
    case("category_ids_are_case_sensitive", Case(
        {"c0002": True, "C0004 ": True},
        ["amplitude", "google-ads"],
        [D("amplitude", "DENIED", "C0002", "C0002"), D("google-ads", "DENIED", "C0004", "C0004")],
    )),
    case("destination_ids_are_case_sensitive", Case(
        {"C0002": True},
        ["Amplitude", "amplitude"],
        [D("Amplitude", "UNKNOWN_DESTINATION"), D("amplitude", "GRANTED", "C0002")],
        deny_unknown=True,
    )),
    # --- disabled and shadow categories ----------------------------------------------------
    case("disabled_category_is_ignored_and_other_categories_still_apply", Case(
        {"C0002": True}, ["amplitude"], [D("amplitude", "GRANTED", "C0002")],
    )),
    case("granting_a_disabled_category_grants_nothing", Case(
        {"C0005": True},
        ["amplitude", "facebook-pixel"],
        [D("amplitude", "DENIED", "C0002", "C0002"), D("facebook-pixel", "UNMAPPED")],
    )),
    case("shadow_category_never_blocks_but_is_reported", Case(
        {"C0002": True}, ["mixpanel"], [D("mixpanel", "GRANTED", "C0002", shadow="C0007")],
    )),
    case("shadow_category_never_grants_even_under_any", Case(
        {"C0007": True}, ["braze"], [D("braze", "DENIED", "C0004", "C0004")],
    )),
    case("granted_shadow_category_is_not_reported", Case(
        {"C0002": True, "C0007": True}, ["mixpanel"], [D("mixpanel", "GRANTED", "C0002")],
    )),
    case("shadow_category_is_reported_even_when_consent_already_blocks", Case(
        {}, ["mixpanel"], [D("mixpanel", "DENIED", "C0002", "C0002", "C0007")],
    )),
    # --- request shape ---------------------------------------------------------------------
    case("duplicates_are_each_decided_and_listed", Case(
        {"C0002": True},
        ["amplitude", "google-ads", "amplitude", "amplitude/eu", "amplitude"],
        [
            D("amplitude", "GRANTED", "C0002"),
            D("google-ads", "DENIED", "C0004", "C0004"),
            D("amplitude", "GRANTED", "C0002"),
            D("amplitude/eu", "GRANTED", "C0002"),
            D("amplitude", "GRANTED", "C0002"),
        ],
    )),
    case("empty_request_means_every_known_destination_sorted", Case(
        {"C0002": True},
        [],
        [
            D("amplitude", "GRANTED", "C0002"),
            D("aws-s3", "EXEMPT"),
            D("braze", "DENIED", "C0004", "C0004", "C0007"),
            D("facebook-pixel", "UNMAPPED"),
            D("fullstory", "UNMAPPED", shadow="C0007 C0009"),
            D("google-ads", "DENIED", "C0004", "C0004"),
            D("google-analytics-4", "DENIED", "C0002 C0004", "C0004"),
            D("hotjar", "UNMAPPED", shadow="C0007 C0009"),
            D("intercom", "DENIED", "C0004", "C0004", "C0007 C0009"),
            D("legacy-pixel", "UNMAPPED"),
            D("mixpanel", "GRANTED", "C0002", shadow="C0007"),
            D("snowflake", "EXEMPT", "C0004", "C0004"),
            D("webhooks", "UNMAPPED"),
        ],
    )),
    case("empty_request_without_consent_lists_every_known_destination", Case(
        None,
        [],
        [
            D(d, "NO_CONSENT", *{
                "amplitude": ("C0002", "C0002"),
                "braze": ("C0004", "C0004"),
                "google-ads": ("C0004", "C0004"),
                "google-analytics-4": ("C0002 C0004", "C0002 C0004"),
                "intercom": ("C0004", "C0004"),
                "mixpanel": ("C0002", "C0002"),
                "snowflake": ("C0004", "C0004"),
            }.get(d, ()))
            for d in KNOWN_SORTED
        ],
        deny_unknown=True,
    )),
    # --- instances -------------------------------------------------------------------------
    case("instance_is_decided_as_its_destination_and_listed_as_given", Case(
        {"C0002": True},
        ["google-analytics-4/eu", "amplitude/eu", "aws-s3/backup", "hotjar/x", "braze/"],
        [
            D("google-analytics-4/eu", "DENIED", "C0002 C0004", "C0004"),
            D("amplitude/eu", "GRANTED", "C0002"),
            D("aws-s3/backup", "EXEMPT"),
            D("hotjar/x", "UNMAPPED", shadow="C0007 C0009"),
            D("braze/", "DENIED", "C0004", "C0004", "C0007"),
        ],
    )),
    case("instance_takes_known_ness_from_its_destination", Case(
        {},
        ["webhooks/eu", "unknown-tool/eu", "amplitude/eu/x"],
        [
            D("webhooks/eu", "UNMAPPED"),
            D("unknown-tool/eu", "UNKNOWN_DESTINATION"),
            D("amplitude/eu/x", "DENIED", "C0002", "C0002"),
        ],
        deny_unknown=True,
    )),
    case("instance_obeys_the_integrations_key_of_its_destination_only", Case(
        None,
        ["amplitude/eu", "mixpanel/eu", "mixpanel"],
        [
            D("amplitude/eu", "DISABLED_BY_EVENT", "C0002", "C0002"),
            D("mixpanel/eu", "NO_CONSENT", "C0002", "C0002"),
            D("mixpanel", "NO_CONSENT", "C0002", "C0002"),
        ],
        integrations={"amplitude": False, "mixpanel/eu": False},
    )),
    case("instance_passes_all_false_when_its_destination_is_true", Case(
        {"C0002": True},
        ["amplitude/eu", "mixpanel"],
        [D("amplitude/eu", "GRANTED", "C0002"), D("mixpanel", "DISABLED_BY_EVENT", "C0002", shadow="C0007")],
        integrations={"All": False, "amplitude": True},
    )),
    # --- integrations, after the table in every case ---------------------------------------
    case("integrations_false_blocks_even_without_consent_object", Case(
        None,
        ["amplitude", "google-ads", "unknown-tool"],
        [
            D("amplitude", "DISABLED_BY_EVENT", "C0002", "C0002"),
            D("google-ads", "NO_CONSENT", "C0004", "C0004"),
            D("unknown-tool", "DISABLED_BY_EVENT"),
        ],
        integrations={"amplitude": False, "unknown-tool": False},
        deny_unknown=True,
    )),
    case("exempt_destination_obeys_integrations", Case(
        {},
        ["aws-s3", "snowflake"],
        [D("aws-s3", "DISABLED_BY_EVENT"), D("snowflake", "EXEMPT", "C0004", "C0004")],
        integrations={"aws-s3": False},
    )),
    case("integrations_false_blocks_unmapped_and_unknown_destinations", Case(
        {},
        ["webhooks", "unknown-tool", "hotjar"],
        [D("webhooks", "DISABLED_BY_EVENT"), D("unknown-tool", "DISABLED_BY_EVENT"),
         D("hotjar", "UNMAPPED", shadow="C0007 C0009")],
        integrations={"webhooks": False, "unknown-tool": False},
    )),
    case("integrations_false_blocks_a_granted_destination", Case(
        {"C0002": True},
        ["mixpanel"],
        [D("mixpanel", "DISABLED_BY_EVENT", "C0002", shadow="C0007")],
        integrations={"mixpanel": False},
    )),
    case("integrations_all_false_blocks_every_destination_not_set_true_or_object", Case(
        None,
        ["amplitude", "braze", "mixpanel", "google-ads", "aws-s3", "hotjar", "webhooks"],
        [
            D("amplitude", "NO_CONSENT", "C0002", "C0002"),
            D("braze", "NO_CONSENT", "C0004", "C0004"),
            D("mixpanel", "DISABLED_BY_EVENT", "C0002", "C0002"),
            D("google-ads", "DISABLED_BY_EVENT", "C0004", "C0004"),
            D("aws-s3", "DISABLED_BY_EVENT"),
            D("hotjar", "DISABLED_BY_EVENT"),
            D("webhooks", "DISABLED_BY_EVENT"),
        ],
        integrations={"All": False, "amplitude": True, "braze": {"apiKey": "k"}, "mixpanel": "true",
                      "google-ads": 1, "hotjar": None},
    )),
    case("integrations_object_value_counts_as_true", Case(
        {"C0002": True},
        ["amplitude", "mixpanel"],
        [D("amplitude", "GRANTED", "C0002"), D("mixpanel", "GRANTED", "C0002", shadow="C0007")],
        integrations={"amplitude": {}, "mixpanel": {"x": False}},
    )),
    case("integrations_all_true_changes_nothing", Case(
        {},
        ["amplitude", "webhooks"],
        [D("amplitude", "DENIED", "C0002", "C0002"), D("webhooks", "UNMAPPED")],
        integrations={"All": True},
    )),
    case("integrations_keys_are_case_sensitive", Case(
        None,
        ["amplitude", "webhooks"],
        [D("amplitude", "NO_CONSENT", "C0002", "C0002"), D("webhooks", "NO_CONSENT")],
        integrations={"Amplitude": False, "all": False, "ALL": False},
    )),
    case("consent_blocked_destination_stays_blocked_whatever_integrations_say", Case(
        {},
        ["google-ads", "braze", "unknown-tool"],
        [
            D("google-ads", "DENIED", "C0004", "C0004"),
            D("braze", "DENIED", "C0004", "C0004", "C0007"),
            D("unknown-tool", "UNKNOWN_DESTINATION"),
        ],
        integrations={"All": True, "google-ads": True, "braze": {"apiKey": "k"}, "unknown-tool": True},
        deny_unknown=True,
    )),
    case("consent_blocked_destination_keeps_its_reason_when_integrations_also_block", Case(
        {},
        ["google-ads", "unknown-tool"],
        [D("google-ads", "DENIED", "C0004", "C0004"), D("unknown-tool", "UNKNOWN_DESTINATION")],
        integrations={"All": False, "google-ads": False},
        deny_unknown=True,
    )),
    # --- the preference event --------------------------------------------------------------
    case("preference_event_allows_every_destination_regardless_of_consent", Case(
        {},
        ["google-ads", "unknown-tool", "amplitude/eu", "aws-s3", "hotjar"],
        [D(d, "PREFERENCE_EVENT") for d in ["google-ads", "unknown-tool", "amplitude/eu", "aws-s3", "hotjar"]],
        preference_event=True,
        deny_unknown=True,
    )),
    case("preference_event_without_consent_object_lists_every_known_destination", Case(
        None, [], [D(d, "PREFERENCE_EVENT") for d in KNOWN_SORTED], preference_event=True,
    )),
    case("preference_event_obeys_integrations_false", Case(
        {},
        ["amplitude", "google-ads"],
        [D("amplitude", "DISABLED_BY_EVENT"), D("google-ads", "PREFERENCE_EVENT")],
        integrations={"amplitude": False},
        preference_event=True,
    )),
    case("preference_event_under_all_false_passes_only_true_or_object", Case(
        {"C0002": True},
        ["amplitude", "braze", "mixpanel", "google-ads", "aws-s3", "amplitude/eu"],
        [
            D("amplitude", "PREFERENCE_EVENT"),
            D("braze", "PREFERENCE_EVENT"),
            D("mixpanel", "DISABLED_BY_EVENT"),
            D("google-ads", "DISABLED_BY_EVENT"),
            D("aws-s3", "DISABLED_BY_EVENT"),
            D("amplitude/eu", "PREFERENCE_EVENT"),
        ],
        integrations={"All": False, "amplitude": True, "braze": {}, "mixpanel": "true", "google-ads": None},
        preference_event=True,
    )),
]


def _index(c: Case) -> Index:
    return DENY_INDEX if c.deny_unknown else ALLOW_INDEX


def _split(decisions: tuple[Decision, ...] | list[Decision]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (
        tuple(d.destination for d in decisions if d.allowed),
        tuple(d.destination for d in decisions if not d.allowed),
    )


def _as_event(c: Case) -> bytes:
    name = PREFERENCE_EVENT_NAME if c.preference_event else "Order Completed"
    event: dict[str, Any] = {"type": "track", "event": name}
    if c.prefs is not None:
        event["context"] = {"consent": {"categoryPreferences": c.prefs}}
    if c.integrations is not None:
        event["integrations"] = c.integrations
    return json.dumps(event).encode()


@pytest.mark.parametrize("c", TABLE)
def test_contract_table_explained(c: Case) -> None:
    out = _index(c).decide(
        c.prefs, c.destinations, integrations=c.integrations, preference_event=c.preference_event, explain=True
    )
    assert out.decisions == tuple(c.expect)
    assert (out.allowed, out.blocked) == _split(c.expect)


@pytest.mark.parametrize("c", TABLE)
def test_contract_table_unexplained_gives_same_allowed_and_blocked(c: Case) -> None:
    index = _index(c)
    out = index.decide(c.prefs, c.destinations, integrations=c.integrations, preference_event=c.preference_event)
    assert out.decisions is None
    assert (out.allowed, out.blocked) == _split(c.expect)


@pytest.mark.parametrize("explain", [False, True], ids=["plain", "explain"])
@pytest.mark.parametrize("c", TABLE)
def test_contract_table_through_a_raw_segment_event(c: Case, explain: bool) -> None:
    out = decide_one(_index(c), Limits(), c.destinations, segment_event=_as_event(c), explain=explain)
    assert (out.allowed, out.blocked) == _split(c.expect)
    if explain:
        assert out.decisions == tuple(c.expect)
    else:
        assert out.decisions is None


@pytest.mark.parametrize("c", TABLE)
def test_reference_agrees_with_contract_table(c: Case) -> None:
    mapping = _index(c).mapping
    got = reference_decide(
        mapping, c.prefs, c.destinations, integrations=c.integrations, preference_event=c.preference_event
    )
    assert got == [_ref(d) for d in c.expect]


# -- small rules outside the table ------------------------------------------------------------


def test_consent_object_without_category_preferences_counts_as_no_consent() -> None:
    out = decide_one(ALLOW_INDEX, Limits(), ["amplitude"], segment_event=b'{"context": {"consent": {}}}', explain=True)
    assert out.decisions == (D("amplitude", "NO_CONSENT", "C0002", "C0002"),)


def test_preference_event_needs_exact_type_and_event_name() -> None:
    events: list[dict[str, Any]] = [
        {"type": "Track", "event": PREFERENCE_EVENT_NAME},
        {"type": "track", "event": PREFERENCE_EVENT_NAME.lower()},
        {"type": "identify", "event": PREFERENCE_EVENT_NAME},
        {"event": PREFERENCE_EVENT_NAME},
    ]
    for event in events:
        event["context"] = {"consent": {"categoryPreferences": {}}}
        out = decide_one(ALLOW_INDEX, Limits(), ["amplitude"], segment_event=json.dumps(event).encode())
        assert out.blocked == ("amplitude",), event


def test_destinations_given_as_a_list_or_tuple_decide_alike() -> None:
    assert ALLOW_INDEX.decide({}, ["amplitude", "aws-s3"]) == ALLOW_INDEX.decide({}, ("amplitude", "aws-s3"))


def test_empty_integrations_object_changes_nothing() -> None:
    assert ALLOW_INDEX.decide({}, ["amplitude"], integrations={}) == ALLOW_INDEX.decide({}, ["amplitude"])


def test_index_on_empty_mapping_allows_everything_as_unmapped() -> None:
    index = compile(ConsentMapping())
    assert index.decide({}, []) == Outcome((), (), None)
    assert index.decide({"C1": True}, ["a", "b/c"], explain=True).decisions == (
        D("a", "UNMAPPED"),
        D("b/c", "UNMAPPED"),
    )


# -- memoisation safety ---------------------------------------------------------------------------

_REQUESTS: list[tuple[dict[str, bool] | None, list[str], dict[str, Any] | None, bool]] = [
    ({"C0002": True}, ["amplitude", "google-ads", "braze"], None, False),
    ({"C0002": True}, ["amplitude", "google-ads", "braze"], {"amplitude": False}, False),
    ({"C0002": True, "C0004": True}, ["amplitude", "google-ads", "braze"], None, False),
    ({}, ["amplitude", "google-ads", "braze"], None, False),
    ({"C0002": True, "unrelated": True}, ["amplitude", "google-ads", "braze"], None, False),
    ({"C0002": True}, [], None, False),
    (None, ["amplitude", "google-ads", "braze"], None, False),
    ({}, ["amplitude", "google-ads", "braze"], {"All": False, "braze": True}, True),
]


def test_repeated_decisions_are_equal_and_match_reference() -> None:
    index = compile(table_mapping(UnknownDestinations.DENY))
    first = [
        [index.decide(p, d, integrations=i, preference_event=e, explain=x) for x in (False, True)]
        for p, d, i, e in _REQUESTS
    ]
    for _ in range(3):
        for (p, d, i, e), (plain, explained) in zip(_REQUESTS, first, strict=True):
            assert index.decide(p, d, integrations=i, preference_event=e) == plain
            assert index.decide(p, d, integrations=i, preference_event=e, explain=True) == explained
            assert (plain.allowed, plain.blocked) == (explained.allowed, explained.blocked)
            assert (plain.allowed, plain.blocked) == reference_split(
                index.mapping, p, d, integrations=i, preference_event=e
            )


def test_integrations_do_not_leak_into_the_memo() -> None:
    index = compile(table_mapping())
    blocked_by_event = index.decide({"C0002": True}, ["amplitude"], integrations={"amplitude": False}, explain=True)
    assert blocked_by_event.blocked == ("amplitude",)
    assert index.decide({"C0002": True}, ["amplitude"]).allowed == ("amplitude",)
    assert index.decide({"C0002": True}, ["amplitude"], explain=True).decisions == (
        D("amplitude", "GRANTED", "C0002"),
    )


def _held(index: Index) -> tuple[int, int]:
    """(entries, characters of destination ids) the plain outcome memo really holds."""
    keys = [*index._memo.young, *index._memo.old]
    return len(keys), sum(len(d) for _, dests in keys for d in dests)


def test_memo_stays_within_its_byte_budget_and_counts_evictions() -> None:
    budget = 256 << 10
    index = compile(table_mapping(), memo_bytes=budget)
    for i in range(20_000):
        prefs = {"C0002": bool(i & 1), "C0004": bool(i & 2)}
        index.decide(prefs, [f"tool-{i}", "amplitude"])
        index.decide(prefs, [f"tool-{i}", "amplitude"], explain=True)
    stats = index.memo_stats()
    assert 0 < stats.bytes <= budget
    assert stats.evictions > 0
    assert index.decide({"C0002": True}, ["tool-1", "amplitude"]).allowed == ("tool-1", "amplitude")


def test_memo_budget_counts_the_destination_ids_held() -> None:
    """Entries alone do not bound memory: memoised 1,000-id requests of long ids weigh what they hold."""
    index = compile(table_mapping())  # 32 MiB: a 1,000-id entry (~280 KB) is not too large to keep
    budget = index.memo_bytes
    for i in range(100):
        dests = [f"{i}-{j}-" + "x" * 200 for j in range(1_000)]
        index.decide({}, dests)
        index.decide({}, dests)  # a repeat keeps the memo on
    entries, chars = _held(index)
    assert entries > 0
    assert chars <= index._memo.stats().bytes <= budget // 2  # the plain memo's share


def test_memo_of_zero_bytes_decides_alike_and_holds_nothing() -> None:
    index = compile(table_mapping(), memo_bytes=0)
    for _ in range(3):
        assert index.decide({"C0002": True}, ["amplitude", "google-ads"]) == Outcome(("amplitude",), ("google-ads",))
    assert index.memo_stats().entries == 0


def test_concurrent_decisions_on_one_index_match_reference() -> None:
    index = compile(table_mapping(UnknownDestinations.DENY))
    failures: list[str] = []

    def work(seed: int) -> None:
        for n in range(1_500):
            k = (n + seed) % len(_REQUESTS)
            p, d, i, e = _REQUESTS[k]
            # A unique extra id keeps the memo churning (clears included) under the other threads.
            dests = [*d, f"t{seed}-{n}"] if d else d
            out = index.decide(p, dests, integrations=i, preference_event=e, explain=n % 3 == 0)
            want = reference_split(index.mapping, p, dests, integrations=i, preference_event=e)
            if (out.allowed, out.blocked) != want:
                failures.append(f"{k}: {(out.allowed, out.blocked)} != {want}")

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_outcome_of_unexplained_preference_event_carries_no_decisions() -> None:
    out = ALLOW_INDEX.decide({}, ["amplitude"], preference_event=True)
    assert out == Outcome(("amplitude",), (), None)


# -- hypothesis: the index equals the reference -----------------------------------------------

CATEGORY_IDS = ["C0001", "C0002", "C0003", "c0001", "Perf"]
DESTINATIONS = ["amp", "ga4", "ads", "s3", "braze", "hub"]
REQUESTABLE = [*DESTINATIONS, "ghost", "Amp", "amp/eu", "ga4/us", "ghost/eu", "s3/", "hub/a/b"]
INTEGRATION_KEYS = [*DESTINATIONS, "ghost", "All", "all", "amp/eu"]
INTEGRATION_VALUES: list[object] = [True, False, None, 0, 1, "false", {}, {"k": 1}, []]


@st.composite
def mappings(draw: st.DrawFn) -> ConsentMapping:
    ids = draw(st.lists(st.sampled_from(CATEGORY_IDS), unique=True, max_size=5))
    categories = tuple(
        Category(
            cid,
            f"name {cid}",
            tuple(draw(st.lists(st.sampled_from(DESTINATIONS), unique=True, min_size=1, max_size=4))),
            enabled=draw(st.booleans()),
            shadow=draw(st.booleans()),
        )
        for cid in ids
    )
    destinations = draw(
        st.dictionaries(
            st.sampled_from(DESTINATIONS),
            st.builds(DestinationSettings, enforce=st.booleans(), resolution=st.sampled_from(Resolution)),
            max_size=4,
        )
    )
    mapping = ConsentMapping(categories, destinations, Settings(draw(st.sampled_from(UnknownDestinations))))
    assert mapping_problems(mapping) == []
    return mapping


preferences_st = st.none() | st.dictionaries(
    st.sampled_from([*CATEGORY_IDS, "C0004", "C0009", "c0002"]), st.booleans()
)
destinations_st = st.lists(st.sampled_from(REQUESTABLE), max_size=8)
integrations_st = st.none() | st.dictionaries(
    st.sampled_from(INTEGRATION_KEYS), st.sampled_from(INTEGRATION_VALUES), max_size=4
)


def _ref(d: Decision) -> RefDecision:
    return RefDecision(
        d.destination, d.allowed, d.reason.name, d.required_categories, d.missing_categories,
        d.shadow_missing_categories,
    )


def _check_against_reference(
    index: Index,
    prefs: Mapping[str, bool] | None,
    dests: list[str],
    integrations: dict[str, Any] | None,
    preference_event: bool,
) -> None:
    want = reference_decide(index.mapping, prefs, dests, integrations=integrations, preference_event=preference_event)
    want_split = _split_ref(want)
    for _ in range(2):  # the second round is served from the memo
        plain = index.decide(prefs, dests, integrations=integrations, preference_event=preference_event)
        assert plain.decisions is None
        assert (plain.allowed, plain.blocked) == want_split
        explained = index.decide(
            prefs, dests, integrations=integrations, preference_event=preference_event, explain=True
        )
        assert explained.decisions is not None
        assert [_ref(d) for d in explained.decisions] == want
        assert (explained.allowed, explained.blocked) == want_split


def _split_ref(decisions: list[RefDecision]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (
        tuple(d.destination for d in decisions if d.allowed),
        tuple(d.destination for d in decisions if not d.allowed),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), preferences_st, destinations_st, integrations_st, st.booleans())
def test_index_equals_reference_on_random_mappings(
    mapping: ConsentMapping,
    prefs: dict[str, bool] | None,
    dests: list[str],
    integrations: dict[str, Any] | None,
    preference_event: bool,
) -> None:
    _check_against_reference(compile(mapping), prefs, dests, integrations, preference_event)


# One long-lived index: its memo carries over between examples, as it does in the server.
_SHARED = compile(
    ConsentMapping(
        categories=(
            Category("C0001", "Necessary", ("amp", "ga4", "s3")),
            Category("C0002", "Performance", ("amp", "ga4", "hub")),
            Category("C0003", "Targeting", ("ads", "braze", "ga4")),
            Category("c0001", "Off", ("ads", "hub"), enabled=False),
            Category("Perf", "Dry run", ("braze", "amp", "hub"), shadow=True),
            Category("C0004", "Dry run 2", ("braze", "hub", "ads"), shadow=True),
        ),
        destinations={
            "s3": DestinationSettings(enforce=False),
            "braze": DestinationSettings(resolution=Resolution.ANY),
            "hub": DestinationSettings(resolution=Resolution.ANY),
        },
        settings=Settings(UnknownDestinations.DENY),
    )
)


@settings(max_examples=300, deadline=None)
@given(preferences_st, destinations_st, integrations_st, st.booleans())
def test_long_lived_index_equals_reference(
    prefs: dict[str, bool] | None,
    dests: list[str],
    integrations: dict[str, Any] | None,
    preference_event: bool,
) -> None:
    _check_against_reference(_SHARED, prefs, dests, integrations, preference_event)
