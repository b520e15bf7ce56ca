"""EmbeddedDecider: the sidecar's own index in-process, its reloads, and parity with the server.

The parity tests run a hypothesis-generated workload (random consent objects, Segment
events, destinations, instances, unknown ids, invalid entries) through a real sidecar and
through the embedded decider, and require identical answers, reasons, errors and digests.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from consent_client import (
    ConsentClient,
    DecideResult,
    EmbeddedDecider,
    InvalidArgument,
    MappingFileError,
    Reason,
    Request,
)
from consent_core.limits import Limits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support import MAPPING, WAIT, ServerThread, free_port, short_tempdir

DENY_MAPPING = MAPPING.replace("unknown_destinations: allow", "unknown_destinations: deny")


def write(path: Path, text: str, *, mtime_s: int | None = None) -> Path:
    """Writes `text` atomically (new inode, like editors do), optionally with an explicit mtime."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    if mtime_s is not None:
        os.utime(path, ns=(mtime_s * 1_000_000_000, mtime_s * 1_000_000_000))
    return path


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mapping_path(tmp_path: Path) -> Path:
    return write(tmp_path / "mappings.yaml", MAPPING)


# -- decisions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("consent", "destinations", "allowed", "blocked"),
    [
        (None, ["google-ads", "brand-new"], ["google-ads", "brand-new"], []),  # no consent object
        ({}, ["google-ads", "aws-s3", "old-pixel"], ["aws-s3", "old-pixel"], ["google-ads"]),
        ({"C0004": True}, ["twitter-ads", "google-ads"], ["google-ads"], ["twitter-ads"]),  # all
        ({"C0003": True}, ["braze", "intercom"], ["braze", "intercom"], []),  # braze: any
        ({"c0004": True}, ["google-ads"], [], ["google-ads"]),  # ids are case-sensitive
        ({"C0002": True}, ["amplitude/eu", "amplitude"], ["amplitude/eu", "amplitude"], []),  # instances
        ({"C0002": False}, ["hotjar", "mixpanel"], ["hotjar"], ["mixpanel"]),  # shadow-only, disabled
        ({"C0002": True}, ["amplitude", "amplitude"], ["amplitude", "amplitude"], []),  # duplicates kept
    ],
)
def test_decides_by_the_contract_table(
    mapping_path: Path, consent: dict[str, bool] | None, destinations: list[str], allowed: list[str],
    blocked: list[str],
) -> None:
    result = EmbeddedDecider(mapping_path).decide(destinations, consent)
    assert (list(result.allowed), list(result.blocked)) == (allowed, blocked)
    assert not result.degraded and result.decisions == ()


def test_explains_with_typed_reasons_and_reports_its_policy(mapping_path: Path) -> None:
    decider = EmbeddedDecider(mapping_path)
    result = decider.decide(["amplitude", "google-ads", "aws-s3"], {"C0002": True}, explain=True)
    assert [d.reason for d in result.decisions] == [Reason.GRANTED, Reason.DENIED, Reason.EXEMPT]
    assert result.decisions[0].shadow_missing_categories == ("C0006",)
    assert result.decisions[1].missing_categories == ("C0004",)
    assert result.policy == decider.policy
    assert decider.policy.generation == 1 and len(decider.policy.digest) == 64
    assert decider.known_destinations == tuple(sorted(decider.known_destinations))
    assert decider.decide([], None).allowed == decider.known_destinations


def test_events_are_validated_and_their_integrations_honoured(mapping_path: Path) -> None:
    decider = EmbeddedDecider(mapping_path)
    event = {
        "type": "track",
        "context": {"consent": {"categoryPreferences": {"C0002": True}}},
        "integrations": {"All": False, "amplitude": True, "aws-s3": {"bucket": "x"}},
    }
    result = decider.decide_event(event, ["amplitude", "aws-s3", "snowflake"], explain=True)
    assert result.allowed == ("amplitude", "aws-s3")
    assert result.decisions[2].reason is Reason.DENIED  # consent first: C0001 was not granted
    assert decider.decide_event(json.dumps(event), ["amplitude"]).allowed == ("amplitude",)
    with pytest.raises(InvalidArgument, match="segment_event"):
        decider.decide_event(b"[1, 2]", ["amplitude"])
    with pytest.raises(InvalidArgument, match="integrations"):
        decider.decide_event({"integrations": []}, ["amplitude"])
    with pytest.raises(InvalidArgument, match="not JSON-serialisable"):
        decider.decide_event({"when": object()}, ["amplitude"])


def test_invalid_input_raises_the_client_error_naming_the_field(mapping_path: Path) -> None:
    decider = EmbeddedDecider(mapping_path, limits=Limits(max_destinations=2))
    with pytest.raises(InvalidArgument, match=r"destinations\[1\]"):
        decider.decide(["amplitude", ""], {})
    with pytest.raises(InvalidArgument, match="too many destinations"):
        decider.decide(["a", "b", "c"], {})
    with pytest.raises(TypeError):
        decider.decide("amplitude")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"consent\.category_preferences\.C0002: must be a boolean"):
        decider.decide(["amplitude"], {"C0002": 1})  # type: ignore[dict-item]  # the wire would say true


def test_batches_decide_against_one_snapshot_and_report_bad_entries(mapping_path: Path) -> None:
    decider = EmbeddedDecider(mapping_path, limits=Limits(max_batch=3))
    results = decider.decide_many([Request(("amplitude",), {}), Request(("",), {}), Request(("x",), None)])
    assert results[0].blocked == ("amplitude",)
    assert results[1].error is not None and results[1].error.startswith("requests[1].destinations[0]")
    assert results[2].allowed == ("x",)
    assert {r.policy for r in results} == {decider.policy}
    with pytest.raises(InvalidArgument, match="too many entries"):
        decider.decide_many([Request()] * 4)


def test_a_broken_or_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", MAPPING.replace("id: C0002", "id: 2C0002"))
    with pytest.raises(MappingFileError) as info:
        EmbeddedDecider(bad)
    assert "bad.yaml:" in str(info.value) and "must not start with a digit" in str(info.value)
    with pytest.raises(MappingFileError, match="no such file"):
        EmbeddedDecider(tmp_path / "missing.yaml")


# -- reloads -------------------------------------------------------------------------------------


def test_watching_picks_up_an_edit_after_the_check_interval(mapping_path: Path) -> None:
    clock = FakeClock()
    decider = EmbeddedDecider(mapping_path, watch=True, check_interval=1.0, clock=clock)
    assert decider.decide(["google-ads"], {"C0002": True}).blocked == ("google-ads",)
    write(mapping_path, MAPPING.replace("destinations: [google-ads, braze, twitter-ads]",
                                        "destinations: [braze, twitter-ads]"))
    clock.now = 0.5
    assert decider.decide(["google-ads"], {"C0002": True}).blocked == ("google-ads",)  # not yet due
    clock.now = 1.0
    after = decider.decide(["google-ads"], {"C0002": True})
    assert after.allowed == ("google-ads",)  # now unknown: allowed
    assert after.policy is not None and after.policy.generation == 2
    assert decider.reloads == 1 and decider.last_error is None


def test_a_broken_edit_keeps_the_last_good_policy(mapping_path: Path) -> None:
    clock = FakeClock()
    decider = EmbeddedDecider(mapping_path, watch=True, check_interval=1.0, clock=clock)
    before = decider.policy
    write(mapping_path, MAPPING + "bogus: key\n")
    clock.now = 5.0
    result = decider.decide(["google-ads"], {})
    assert result.blocked == ("google-ads",) and result.policy == before
    assert decider.last_error is not None and "bogus" in decider.last_error
    assert decider.failed_reloads >= 1
    os.remove(mapping_path)  # mid-rename or deleted: still serving
    clock.now = 10.0
    assert decider.decide(["google-ads"], {}).policy == before
    write(mapping_path, MAPPING.replace("Targeting Cookies", "Advertising Cookies"))
    clock.now = 15.0
    assert decider.policy.generation == 2 and decider.last_error is None


def test_a_comment_only_edit_publishes_nothing(mapping_path: Path) -> None:
    decider = EmbeddedDecider(mapping_path)
    write(mapping_path, "# reviewed\n" + MAPPING)
    assert decider.reload() is False
    assert decider.policy.generation == 1


def test_without_watch_the_file_is_read_only_on_reload(mapping_path: Path) -> None:
    clock = FakeClock()
    decider = EmbeddedDecider(mapping_path, clock=clock)
    write(mapping_path, MAPPING.replace("[google-ads, braze, twitter-ads]", "[braze, twitter-ads]"), mtime_s=10)
    clock.now = 100.0
    assert decider.decide(["google-ads"], {}).blocked == ("google-ads",)
    assert decider.reload() is True
    assert decider.decide(["google-ads"], {}).allowed == ("google-ads",)


def test_an_unchanged_settled_file_is_not_reparsed(mapping_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.utime(mapping_path, ns=(10**9, 10**9))  # long ago: its stat can be trusted
    clock = FakeClock()
    decider = EmbeddedDecider(mapping_path, watch=True, check_interval=1.0, clock=clock)
    import consent_client.embedded as embedded

    loads: list[str] = []
    real = embedded._load
    monkeypatch.setattr(embedded, "_load", lambda p: loads.append(p) or real(p))
    for t in range(1, 6):
        clock.now = float(t)
        decider.decide(["amplitude"], {})
    assert loads == []
    write(mapping_path, MAPPING.replace("Targeting Cookies", "Ads"), mtime_s=20)
    clock.now = 10.0
    decider.decide(["amplitude"], {})
    assert len(loads) == 1 and decider.policy.generation == 2


def test_concurrent_decisions_during_reloads_see_whole_policies(mapping_path: Path) -> None:
    decider = EmbeddedDecider(mapping_path, watch=True, check_interval=0.0)
    variants = [MAPPING, MAPPING.replace("[google-ads, braze, twitter-ads]", "[braze, twitter-ads]")]
    stop = threading.Event()
    seen: list[tuple[str, ...]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                r = decider.decide(["google-ads"], {})
                seen.append(r.allowed)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(20):
        write(mapping_path, variants[i % 2], mtime_s=100 + i)
        decider.reload()
    stop.set()
    for t in threads:
        t.join(WAIT)
    assert not errors
    assert set(seen) <= {(), ("google-ads",)}


# -- parity with the sidecar --------------------------------------------------------------------


class Parity:
    def __init__(self, client: ConsentClient, decider: EmbeddedDecider) -> None:
        self.client, self.decider = client, decider


@pytest.fixture(scope="module", params=["allow", "deny"])
def parity(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parity]:
    """A real sidecar (over a unix socket) and an EmbeddedDecider on the same mapping file."""
    text = MAPPING if request.param == "allow" else DENY_MAPPING
    path = write(tmp_path_factory.mktemp("parity") / "mappings.yaml", text)
    with short_tempdir() as d:
        target = f"unix:{d / 'parity.sock'}"
        with (
            ServerThread(path, [target, f"127.0.0.1:{free_port()}"]),
            ConsentClient(target, timeout=WAIT, failure_policy="raise") as client,
        ):
            yield Parity(client, EmbeddedDecider(path))


CATEGORIES = ["C0001", "C0002", "C0003", "C0004", "C0005", "C0006", "C0007", "C9999", "c0002"]
KNOWN = ["snowflake", "google-analytics-4", "amplitude", "mixpanel", "intercom", "braze", "google-ads",
         "twitter-ads", "facebook-pixel", "hotjar", "old-pixel", "aws-s3"]
DESTINATIONS = st.one_of(
    st.sampled_from(KNOWN),
    st.sampled_from(["brand-new", "x", "Amplitude"]),  # unknown (ids are case-sensitive)
    st.builds(lambda d, i: f"{d}/{i}", st.sampled_from([*KNOWN, "brand-new"]), st.sampled_from(["eu", "us", "a/b"])),
)
PREFERENCES = st.dictionaries(st.sampled_from(CATEGORIES), st.booleans(), max_size=len(CATEGORIES))
INTEGRATIONS = st.dictionaries(
    st.sampled_from(["All", *KNOWN[:6], "brand-new"]),
    st.one_of(st.booleans(), st.just({"option": 1})),
    max_size=4,
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {"type": draw(st.sampled_from(["track", "identify", "page"]))}
    if event["type"] == "track":
        event["event"] = draw(st.sampled_from(["Order Completed", "Segment Consent Preference Updated"]))
    consent = draw(st.sampled_from(["prefs", "prefs", "empty-consent", "none"]))
    if consent == "prefs":
        event["context"] = {"consent": {"categoryPreferences": draw(PREFERENCES)}}
    elif consent == "empty-consent":
        event["context"] = {"consent": {}}
    if draw(st.booleans()):
        event["integrations"] = draw(INTEGRATIONS)
    return event


@st.composite
def requests(draw: st.DrawFn) -> Request:
    dests = tuple(draw(st.lists(DESTINATIONS, max_size=8)))
    if draw(st.integers(0, 30)) == 0:
        dests = (*dests, "")  # now and then an invalid entry
    explain = draw(st.booleans())
    kind = draw(st.sampled_from(["consent", "consent", "none", "event", "event"]))
    if kind == "consent":
        return Request(dests, draw(PREFERENCES), None, explain)
    if kind == "event":
        return Request(dests, None, draw(events()), explain)
    return Request(dests, None, None, explain)


def comparable(r: DecideResult) -> tuple[Any, ...]:
    return (r.allowed, r.blocked, r.decisions, r.error, r.policy.digest if r.policy else None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(requests(), min_size=1, max_size=25))
def test_embedded_answers_exactly_like_the_sidecar(parity: Parity, batch: list[Request]) -> None:
    remote = parity.client.decide_many(batch)
    local = parity.decider.decide_many(batch)
    assert [comparable(r) for r in local] == [comparable(r) for r in remote]
    for req, expected in zip(batch[:5], local[:5], strict=True):  # the unary path agrees too
        if expected.error is not None:
            with pytest.raises(InvalidArgument):
                parity.client.decide_request(req)
            with pytest.raises(InvalidArgument):
                parity.decider.decide_request(req)
            continue
        one = parity.client.decide_request(req)
        assert comparable(one) == comparable(parity.decider.decide_request(req))


def test_embedded_and_sidecar_report_the_same_digest(parity: Parity) -> None:
    remote = parity.client.decide(["amplitude"], {})
    assert remote.policy is not None
    assert remote.policy.digest == parity.decider.policy.digest
