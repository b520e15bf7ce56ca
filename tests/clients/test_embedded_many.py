"""`EmbeddedDecider.decide_many` in C (consent_core._native.many) answers every entry as the Python loop.

The oracle is the Python loop itself, run in the same process with the accelerator off
(`consent_core.native.pure`): hypothesis draws random mappings, limits and batches (shared and
distinct list and consent objects, odd consent values, non-str keys, None, events, explain,
invalid and unknown ids, instances, Request subclasses) and the two result lists must be equal,
errors included, entry by entry. The C must also survive callbacks that raise or mutate the
batch, leave reference counts as it found them and keep no memory between calls.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from consent_client import DecideResult, EmbeddedDecider, Request
from consent_client.embedded import Snapshot
from consent_client.results import PolicyVersion, decided
from consent_core import native
from consent_core.index import compile as compile_index
from consent_core.limits import Limits
from consent_core.model import Category, ConsentMapping, DestinationSettings, Resolution, Settings, UnknownDestinations
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support import MAPPING

NATIVE: Any = native.NATIVE
needs_native = pytest.mark.skipif(NATIVE is None, reason="consent_core._native not built or CONSENT_CORE_PURE=1")

CATEGORY_IDS = ["C0001", "C0002", "C0003", "C0004"]
MAPPED = ["a", "ads", "crm", "warehouse-eu-central"]  # the last one is 20 bytes: untrusted under 16-byte limits
IDS = [*MAPPED, "zz", "a/x", "warehouse-eu-central/1", "crm/", "", "/a", "a\x00b", "é" * 9, "x" * 40]


class Key(str):
    """A str subclass as a consent key: unusual, left to the Python loop by the C."""


class Ids(tuple[str, ...]):
    """A tuple subclass as a destination list."""


class Sub(Request):
    """A Request subclass: the C hands its entries to the Python loop's per-entry path."""

    __slots__ = ()


class Loud(Request):
    """A Request subclass whose attribute reads run Python code."""

    __slots__ = ()

    def __getattribute__(self, name: str) -> Any:
        return object.__getattribute__(self, name)


@st.composite
def mappings(draw: st.DrawFn) -> ConsentMapping:
    ids = draw(st.lists(st.sampled_from(CATEGORY_IDS), unique=True, max_size=4))
    categories = tuple(
        Category(
            cid, f"name {cid}", tuple(draw(st.lists(st.sampled_from(MAPPED), unique=True, min_size=1, max_size=3))),
            enabled=draw(st.booleans()), shadow=draw(st.booleans()),
        )
        for cid in ids
    )
    destinations = draw(st.dictionaries(
        st.sampled_from(MAPPED),
        st.builds(DestinationSettings, enforce=st.booleans(), resolution=st.sampled_from(Resolution)),
        max_size=3,
    ))
    return ConsentMapping(categories, destinations, Settings(draw(st.sampled_from(UnknownDestinations))))


# Known ids all valid (the C looks them up itself), a short list limit, and known ids too long
# for the limits (every list then goes through the Python row).
LIMITS = [Limits(), Limits(max_destinations=5), Limits(max_destinations=5, max_destination_id_bytes=16)]
LISTS = st.one_of(
    st.lists(st.sampled_from(MAPPED), max_size=7).map(tuple),  # the C's own case: known ids
    st.lists(st.sampled_from(MAPPED), max_size=7).map(tuple),
    st.lists(st.sampled_from(IDS), max_size=7).map(tuple),  # instances, unknown and invalid ids, too many
    st.lists(st.sampled_from(MAPPED), max_size=3).map(Ids),
)
ODD_VALUES: list[object] = [1, 0, None, "true"]
CONSENTS = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from([*CATEGORY_IDS, "C0009"]), st.booleans()),
    st.dictionaries(st.sampled_from(CATEGORY_IDS) | st.builds(Key, st.sampled_from(CATEGORY_IDS)) | st.just(5),
                    st.booleans() | st.sampled_from(ODD_VALUES), max_size=3),
    st.dictionaries(st.sampled_from(CATEGORY_IDS), st.booleans(), max_size=3).map(types.MappingProxyType),
)
EVENTS = st.sampled_from([
    {"type": "track", "event": "x", "context": {"consent": {"categoryPreferences": {"C0002": True}}}},
    {"type": "identify", "integrations": {"All": False, "crm": True}},
    b'{"type": "page"',
])


@st.composite
def batches(draw: st.DrawFn) -> list[Request]:
    """Entries picking from small pools of list and consent objects, so objects repeat and are shared."""
    lists = draw(st.lists(LISTS, min_size=1, max_size=4))
    consents = draw(st.lists(CONSENTS, min_size=1, max_size=4))
    out: list[Request] = []
    for _ in range(draw(st.integers(0, 30))):
        dests = draw(st.sampled_from(lists))
        kind = draw(st.sampled_from(["plain"] * 6 + ["copy", "event", "explain", "sub", "loud"]))
        consent = draw(st.sampled_from(consents))
        if kind == "copy" and isinstance(consent, dict):
            consent = dict(consent)  # an equal consent in another object
        if kind == "event":
            out.append(Request(dests, None, draw(EVENTS), draw(st.booleans())))
        elif kind == "explain":
            out.append(Request(dests, consent, None, draw(st.sampled_from([True, 1, 0]))))  # type: ignore[arg-type]
        else:
            cls = {"sub": Sub, "loud": Loud}.get(kind, Request)
            out.append(cls(dests, consent))
    return out


def _decider(tmp_path: Path) -> EmbeddedDecider:
    path = tmp_path / "mappings.yaml"
    path.write_text(MAPPING)
    return EmbeddedDecider(path)


@pytest.fixture(scope="module")
def deciders(tmp_path_factory: pytest.TempPathFactory) -> dict[Limits, EmbeddedDecider]:
    directory = tmp_path_factory.mktemp("many")
    return {limits: EmbeddedDecider(_decider(directory).path, limits=limits) for limits in LIMITS}


def _with_mapping(decider: EmbeddedDecider, mapping: ConsentMapping) -> EmbeddedDecider:
    """`decider` deciding under `mapping` (its snapshot swapped: decide_many reads nothing else)."""
    decider._snapshot = Snapshot(compile_index(mapping), PolicyVersion(1, mapping.digest()))
    return decider


def _both(decider: EmbeddedDecider, batch: list[Request]) -> tuple[list[DecideResult], list[DecideResult]]:
    native_results = decider.decide_many(batch)
    with native.pure():
        pure_results = decider.decide_many(batch)
    return native_results, pure_results


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mappings(), st.sampled_from(LIMITS), batches())
def test_the_c_loop_answers_every_entry_as_the_python_loop(
    deciders: dict[Limits, EmbeddedDecider], mapping: ConsentMapping, limits: Limits, batch: list[Request]
) -> None:
    decider = _with_mapping(deciders[limits], mapping)
    got, want = _both(decider, batch)
    assert got == want


@needs_native
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mappings(), batches())
def test_a_batch_of_one_answers_as_the_batch_does(
    deciders: dict[Limits, EmbeddedDecider], mapping: ConsentMapping, batch: list[Request]
) -> None:
    """Sharing inside a batch changes no answer: each entry alone gets what it got in the batch."""
    decider = _with_mapping(deciders[LIMITS[0]], mapping)
    together = decider.decide_many(batch)
    for n, request in enumerate(batch):
        alone = decider.decide_many([request])[0]
        want = alone if alone.error is None else DecideResult(
            error=alone.error.replace("requests[0]", f"requests[{n}]", 1), policy=alone.policy
        )
        assert together[n] == want


@needs_native
def test_entries_sharing_a_mask_and_a_list_object_share_one_result(tmp_path: Path) -> None:
    decider = _decider(tmp_path)
    dests = ("amplitude", "braze", "snowflake")
    batch = [Request(dests, {"C0002": True, "C0001": False}), Request(dests, {"C0002": True}), Request(dests, None),
             Request(dests, None), Request(tuple(dests), {"C0002": True})]
    got = decider.decide_many(batch)
    assert got[0] is got[1] and got[2] is got[3]
    assert got[4] == got[0]


@needs_native
def test_the_empty_list_decides_every_known_destination_unchecked(tmp_path: Path) -> None:
    decider = EmbeddedDecider(_decider(tmp_path).path, limits=Limits(max_destinations=2))
    got = decider.decide_many([Request((), {"C0002": True}), Request((), None)])
    assert got[0] == decider.decide((), {"C0002": True})
    assert got[1].allowed == decider.known_destinations and got[1].error is None


@needs_native
def test_fields_are_read_as_python_reads_them_when_request_is_patched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The C reads a Request's slots directly only while its class reads them the generic way."""
    decider = _decider(tmp_path)
    batch = [Request(("amplitude", "snowflake"), {"C0002": True}), Request((), {})]
    assert decider.decide_many(batch)[0].blocked == ("snowflake",)

    def no_consent(self: Request, name: str) -> Any:
        return None if name == "consent" else object.__getattribute__(self, name)

    monkeypatch.setattr(Request, "__getattribute__", no_consent)
    got, want = _both(decider, batch)
    assert got == want and got[0].blocked == () and got[1].allowed == decider.known_destinations
    monkeypatch.undo()
    monkeypatch.setattr(Request, "consent", property(lambda self: None))  # the slot's descriptor replaced
    got, want = _both(decider, batch)
    assert got == want and got[0].blocked == ()


# -- hostile input: nothing crashes, nothing leaks ------------------------------------------------


class Raising(Mapping[str, bool]):
    """A consent Mapping (not a dict: the Python path reads it) whose items() raises."""

    def __getitem__(self, key: str) -> bool:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("items() failed")

    def __len__(self) -> int:
        return 1


@needs_native
def test_an_exception_from_the_python_path_propagates_on_both_paths(tmp_path: Path) -> None:
    decider = _decider(tmp_path)
    batch = [Request(("amplitude",), {"C0002": True}), Request(("amplitude",), Raising())]
    for ctx in (native.pure, None):
        with pytest.raises(RuntimeError, match="items"):
            if ctx is None:
                decider.decide_many(batch)
            else:
                with ctx():
                    decider.decide_many(batch)


class Shrinking(Mapping[str, bool]):
    """A consent Mapping that empties the batch it is in when read: the loop must stop, not crash."""

    def __init__(self, batch: list[Request]) -> None:
        self.batch = batch

    def __getitem__(self, key: str) -> bool:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        self.batch.clear()
        return iter(())

    def __len__(self) -> int:
        return 0


@needs_native
def test_a_batch_mutated_while_it_is_decided_ends_where_the_python_loop_ends(tmp_path: Path) -> None:
    decider = _decider(tmp_path)

    def batch() -> list[Request]:
        b = [Request(("amplitude",), {"C0002": True})] * 3
        b.append(Request(("amplitude", "braze"), Shrinking(b)))
        b.extend([Request(("braze",), {})] * 3)
        return b

    got = decider.decide_many(batch())
    with native.pure():
        want = decider.decide_many(batch())
    assert got == want and len(got) == 4


@needs_native
def test_odd_callback_answers_are_left_to_the_per_entry_path() -> None:
    """`row` answering something else than (ids, needs) hands the list's entries to `one`."""
    index = compile_index(ConsentMapping((Category("C0002", "n", ("a",)),)))
    policy = PolicyVersion(1, "d")
    reqs = [Request(("a", "é"), {"C0002": False}), Request(("a", "é"), {"C0002": False})]  # non-ASCII: `row`'s
    calls: list[int] = []

    def one(i: int, req: Request) -> DecideResult:
        calls.append(i)
        return DecideResult(error="one", policy=policy)

    for answer in (None, ("a",), (("a", "é"), (1,)), (("a", 1), (1, 1)), (("a", "é"), (1, 1 << 70)), 5):
        calls.clear()
        got = NATIVE.many(reqs, Request, index.category_bits, *index.needs(), 100, 256, policy, decided,
                          lambda dests, answer=answer: answer, one)
        assert [r.error for r in got] == ["one", "one"] and calls == [0, 1]


@needs_native
def test_an_exception_from_a_callback_propagates() -> None:
    index = compile_index(ConsentMapping((Category("C0002", "n", ("a",)),)))
    reqs = [Request(("é",), {}), Request(("a",), None)]

    def boom(*args: object) -> Any:
        raise ValueError("callback")

    ok_row = lambda dests: index.need_row(dests, Limits())  # noqa: E731
    for row, decide, one in ((boom, decided, boom), (ok_row, boom, boom)):
        with pytest.raises(ValueError, match="callback"):
            NATIVE.many(reqs, Request, index.category_bits, *index.needs(), 100, 256, None, decide, row, one)


@needs_native
def test_many_calls_keep_reference_counts_and_memory_level(tmp_path: Path) -> None:
    decider = _decider(tmp_path)
    lists = [("amplitude", "braze"), ("snowflake", "zz", "amplitude/eu"), (), ("amplitude", "")]
    consents: list[Any] = [{"C0002": True}, {"C0002": 1}, None, {Key("C0002"): True}, {"C0003": True, "C0004": True}]
    batch = [Request(lists[i % 4], consents[i % 5]) for i in range(40)]
    batch += [Request(lists[0], None, {"type": "page"}), Sub(lists[1], consents[0])]
    watched = [o for o in (*lists, *consents, decider.snapshot.policy) if o not in ((), None)]  # not singletons

    def counts() -> list[int]:
        return [sys.getrefcount(o) for o in watched]

    decider.decide_many(batch)
    before = counts()
    gc.collect()
    tracemalloc.start()
    try:
        decider.decide_many(batch)
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(2_000):
            decider.decide_many(batch)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert counts() == before
    assert grown < 64 * 1024
