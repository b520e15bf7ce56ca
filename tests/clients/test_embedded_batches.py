"""EmbeddedDecider's fast paths: results built directly, and `decide_many` deciding what repeats once."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from consent_client import DecideResult, EmbeddedDecider, InvalidArgument, Request
from consent_client.results import PolicyVersion, decided
from consent_core.limits import Limits
from hypothesis import given, settings
from hypothesis import strategies as st

from .support import MAPPING
from .test_embedded import KNOWN, PREFERENCES


@pytest.fixture(scope="module")
def decider(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedDecider:
    path = tmp_path_factory.mktemp("batches") / "mappings.yaml"
    path.write_text(MAPPING)
    return EmbeddedDecider(path, limits=Limits(max_destination_id_bytes=16))


def test_a_result_built_directly_is_a_frozen_decide_result() -> None:
    policy = PolicyVersion(3, "ab")
    fast = decided(("a", "b"), ("c",), policy)
    slow = DecideResult(("a", "b"), ("c",), (), policy)
    assert type(fast) is DecideResult
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert pickle.loads(pickle.dumps(fast)) == slow
    assert dataclasses.replace(fast, error="x") == DecideResult(("a", "b"), ("c",), (), policy, error="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.allowed = ()  # type: ignore[misc]


def test_entries_sharing_a_list_and_a_consent_share_one_result(decider: EmbeddedDecider) -> None:
    dests = ("amplitude", "google-ads", "aws-s3")
    consent = {"C0002": True}
    results = decider.decide_many([Request(dests, consent)] * 3 + [Request(dests, {"C0002": True})])
    assert results[0] is results[1] is results[2]
    assert results[3] == results[0]  # an equal consent in another object: the same answer
    assert results[0] == decider.decide(dests, consent)


def test_an_invalid_list_is_reported_for_every_entry_naming_its_own_position(decider: EmbeddedDecider) -> None:
    bad = ("amplitude", "x" * 17)
    results = decider.decide_many([Request(bad, {}), Request(("amplitude",), {}), Request(bad, None)])
    assert results[0].error == "requests[0].destinations[1]: destination id longer than 16 bytes"
    assert results[1].blocked == ("amplitude",)
    assert results[2].error == "requests[2].destinations[1]: destination id longer than 16 bytes"


def test_an_invalid_consent_is_reported_for_every_entry(decider: EmbeddedDecider) -> None:
    consent = {"C0002": 1}
    results = decider.decide_many([Request(("amplitude",), consent)] * 2)  # type: ignore[arg-type]
    assert [r.error for r in results] == ["consent.category_preferences.C0002: must be a boolean, got int"] * 2


LISTS = st.lists(st.sampled_from([*KNOWN, "brand-new", "amplitude/eu", "", "y" * 17]), max_size=5).map(tuple)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(LISTS, min_size=1, max_size=4),
    st.lists(st.none() | PREFERENCES, min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=30),
)
def test_a_batch_answers_as_its_requests_one_by_one(
    decider: EmbeddedDecider,
    lists: list[tuple[str, ...]],
    consents: list[dict[str, bool] | None],
    picks: list[tuple[int, int]],
) -> None:
    """Shared list and consent objects (what decide_many reuses work for) change no answer."""
    batch = [Request(lists[i % len(lists)], consents[j % len(consents)]) for i, j in picks]
    one_by_one = [decider.decide_many([r])[0] for r in batch]
    together = decider.decide_many(batch)
    for n, (a, b) in enumerate(zip(together, one_by_one, strict=True)):
        want = b if b.error is None else dataclasses.replace(b, error=b.error.replace("requests[0]", f"requests[{n}]"))
        assert a == want


def test_the_fast_path_keeps_the_bare_string_guard(decider: EmbeddedDecider) -> None:
    with pytest.raises(TypeError):
        decider.decide("amplitude")


ODD_CONSENTS: list[object] = [{"C0002": 1}, {"C0002": True, 5: False}, {"C0004": "yes"}, {"C0003": None}]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(LISTS, min_size=1, max_size=3),
    st.lists(st.none() | PREFERENCES | st.sampled_from(ODD_CONSENTS), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), min_size=1, max_size=30),
)
def test_a_batch_answers_as_decide_does_with_runs_of_one_consent_object(
    decider: EmbeddedDecider,
    lists: list[tuple[str, ...]],
    consents: list[dict[str, bool] | None],
    picks: list[tuple[int, int]],
) -> None:
    """decide_many reduces a consent object once per run of entries carrying it: malformed ones
    (non-bool values, non-str ids) are still refused on every entry, as `decide` refuses them."""
    batch = [Request(lists[i % len(lists)], consents[j % len(consents)]) for i, j in picks]
    for n, (request, got) in enumerate(zip(batch, decider.decide_many(batch), strict=True)):
        try:
            want = decider.decide(request.destinations, request.consent)
        except InvalidArgument as e:
            assert got.error == e.message.replace("destinations", f"requests[{n}].destinations", 1)
        else:
            assert got == want
