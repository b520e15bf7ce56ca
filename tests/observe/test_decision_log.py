"""Decision logs: sampling, the rate limit, bounded queueing with counted drops, and masking of the event.

The masking tests send events full of personal data through the real DecisionService and check
that a line holds nothing but the documented keys: ids of the request and policy, destinations,
reasons and the consent reduced to the mapping's category ids.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from consent.v1 import decision_pb2
from consent_core.index import compile
from consent_core.model import Category, ConsentMapping
from samples import FUNCTIONAL_SHADOW, mapping_text
from serving import decision_server

from consent_sidecar.observe import decision_log
from consent_sidecar.observe.decision_log import DecisionLog, Entry, TokenBucket, format_line, parse_rate
from consent_sidecar.observe.metrics import Metrics, Recorder
from consent_sidecar.store.policy import PolicyStore

Req = decision_pb2.DecideRequest

# The sample with a disabled category: its consent never reaches a log line.
MAPPING = mapping_text(FUNCTIONAL_SHADOW, """\
  - id: C0009
    name: Off
    enabled: false
    destinations: [mixpanel]
""")

KEYS = [
    "time", "request_id", "rpc", "entry", "policy_generation", "policy_digest", "consent", "allowed", "blocked",
    "reasons",
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def entry(index: Any, **kw: Any) -> Entry:
    fields: dict[str, Any] = {
        "rpc": "Decide", "request_id": "r-1", "position": None, "generation": 3, "index": index,
        "granted": 0, "destinations": ("amplitude",), "time": 1_700_000_000.25,
    }
    fields.update(kw)
    return Entry(**fields)


@pytest.fixture
def index() -> Any:
    return compile(ConsentMapping((
        Category("C0002", "Perf", ("amplitude", "mixpanel")),
        Category("C0004", "Ads", ("google-ads",)),
        Category("C0003", "Dry", ("amplitude",), shadow=True),
    )))


# -- the line --------------------------------------------------------------------------------------


def test_a_line_holds_ids_destinations_reasons_and_reduced_consent(index: Any) -> None:
    prefs = {"C0002": True, "C0004": False, "unknown-id": True}
    granted = index.granted_mask(prefs)
    request = Req(consent=decision_pb2.Consent(category_preferences=prefs)).SerializeToString()
    line = json.loads(format_line(entry(
        index, granted=granted, destinations=("amplitude", "google-ads", "nobody", "amplitude/eu"), request=request,
    )))
    assert list(line) == KEYS
    assert line["time"] == "2023-11-14T22:13:20.250Z"
    assert line["request_id"] == "r-1"
    assert line["policy_generation"] == 3
    assert line["policy_digest"] == index.digest
    # mapping ids only; C0003 was not in the event at all: absent, not denied
    assert line["consent"] == {"granted": ["C0002"], "denied": ["C0004"], "absent": ["C0003"]}
    assert line["allowed"] == ["amplitude", "nobody", "amplitude/eu"]
    assert line["blocked"] == ["google-ads"]
    assert line["reasons"] == {"amplitude": "REASON_GRANTED", "google-ads": "REASON_DENIED",
                               "nobody": "REASON_UNMAPPED", "amplitude/eu": "REASON_GRANTED"}


@pytest.mark.parametrize(
    ("prefs", "consent"),
    [
        ({}, {"granted": [], "denied": [], "absent": ["C0002", "C0004", "C0003"]}),
        ({"C0002": False, "C0004": False, "C0003": False}, {"granted": [], "denied": ["C0002", "C0004", "C0003"],
                                                             "absent": []}),
        ({"C0003": True, "C0009": False}, {"granted": ["C0003"], "denied": [], "absent": ["C0002", "C0004"]}),
    ],
)
def test_categories_absent_from_the_event_are_not_called_denied(
    index: Any, prefs: dict[str, bool], consent: dict[str, list[str]]
) -> None:
    request = Req(consent=decision_pb2.Consent(category_preferences=prefs)).SerializeToString()
    line = json.loads(format_line(entry(index, granted=index.granted_mask(prefs), request=request)))
    assert line["consent"] == consent


def test_no_consent_object_logs_consent_null(index: Any) -> None:
    line = json.loads(format_line(entry(index, granted=None, destinations=("google-ads",))))
    assert line["consent"] is None
    assert line["reasons"] == {"google-ads": "REASON_NO_CONSENT"}


def test_integrations_show_only_as_reasons(index: Any) -> None:
    line = format_line(entry(index, granted=index.all_categories_mask, destinations=("amplitude",),
                             integrations={"amplitude": False, "secret-key": "s3cr3t"}))
    assert json.loads(line)["reasons"] == {"amplitude": "REASON_DISABLED_BY_EVENT"}
    assert "s3cr3t" not in line and "secret-key" not in line


# -- sampling, rate, queue ----------------------------------------------------------------------------


def test_parse_rate() -> None:
    assert parse_rate("100/s") == 100
    assert parse_rate("100") == 100
    assert parse_rate("60/m") == 1
    assert parse_rate("3600/h") == 1
    assert parse_rate("0") is None
    assert parse_rate("unlimited") is None
    for bad in ("fast", "-1/s", "10/d", "1e3"):
        with pytest.raises(ValueError, match="decision log rate"):
            parse_rate(bad)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, clock=clock)
    assert sum(bucket.take() for _ in range(50)) == 10  # the burst (one second's worth)
    clock.now += 0.5
    assert sum(bucket.take() for _ in range(50)) == 5
    clock.now += 100
    assert sum(bucket.take() for _ in range(50)) == 10  # never more than the burst


def test_sampling_draws_once_per_decision(tmp_path: Path) -> None:
    draws = iter([0.5, 0.004, 0.02, 0.0099])
    log = DecisionLog(str(tmp_path / "d.log"), sample=0.01, random_fn=lambda: next(draws))
    try:
        assert [log.sampled() for _ in range(4)] == [False, True, False, True]
    finally:
        log.close()


def test_rate_limited_and_overflowing_lines_are_dropped_and_counted(tmp_path: Path, index: Any) -> None:
    path = tmp_path / "d.log"
    clock = FakeClock()
    log = DecisionLog(str(path), rate=5, clock=clock)
    try:
        results = [log.submit(entry(index, request_id=f"r{i}")) for i in range(8)]
        assert results == [True] * 5 + [False] * 3
        assert log.dropped_rate == 3
        assert log.flush()
        assert [line["request_id"] for line in read_lines(path)] == ["r0", "r1", "r2", "r3", "r4"]
        assert log.written == 5
    finally:
        log.close()


def test_a_full_queue_drops_instead_of_growing(
    tmp_path: Path, index: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    started = threading.Event()

    def stuck(e: Entry) -> str:  # a writer that cannot keep up
        started.set()
        release.wait(10)
        return format_line(e)

    monkeypatch.setattr(decision_log, "format_line", stuck)
    path = tmp_path / "d.log"
    log = DecisionLog(str(path), queue_size=3)
    try:
        assert log.submit(entry(index, request_id="taken"))
        assert started.wait(5)  # the writer holds the first line
        assert [log.submit(entry(index, request_id=f"q{i}")) for i in range(5)] == [True] * 3 + [False] * 2
        assert log.dropped_full == 2
        release.set()
        assert log.flush()
        assert [x["request_id"] for x in read_lines(path)] == ["taken", "q0", "q1", "q2"]
    finally:
        release.set()
        log.close()


def test_stdout_target_writes_lines_to_fd_1(capfd: pytest.CaptureFixture[str], index: Any) -> None:
    log = DecisionLog("-")
    try:
        assert log.submit(entry(index, request_id="to-stdout"))
        assert log.flush()
    finally:
        log.close()
    out = capfd.readouterr().out
    assert json.loads(out.splitlines()[-1])["request_id"] == "to-stdout"


def test_sample_must_be_a_fraction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        DecisionLog(str(tmp_path / "x"), sample=1.5)


# -- through the service ----------------------------------------------------------------------------------


class Served:
    def __init__(self, channel: grpc.aio.Channel, log: DecisionLog, path: Path, store: PolicyStore) -> None:
        self.channel = channel
        self.log = log
        self.path = path
        self.store = store

    def lines(self) -> list[dict[str, Any]]:
        assert self.log.flush()
        return read_lines(self.path)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    path = tmp_path / "decisions.log"
    log = DecisionLog(str(path), sample=1.0)
    try:
        async with decision_server(tmp_path, MAPPING, decision_log=log) as server:
            yield Served(server.channel, log, path, server.store)
    finally:
        log.close()


PII_EVENT = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user-4242",
    "anonymousId": "anon-9999",
    "properties": {"email": "jane@example.com", "total": 99.5},
    "context": {
        "ip": "203.0.113.7",
        "traits": {"phone": "+44 7700 900123"},
        "consent": {"categoryPreferences": {"C0002": True, "C0004": False, "C0009": True, "Unknown-Cat": True}},
    },
    "integrations": {"braze": {"apiKey": "sk_live_abc"}, "mixpanel": False},
}


async def test_a_segment_event_is_logged_without_any_of_its_content(served: Served) -> None:
    call = served.channel.unary_unary("/consent.v1.DecisionService/Decide")
    request = Req(segment_event=json.dumps(PII_EVENT).encode(), destinations=["amplitude", "mixpanel", "braze", "x"])
    await call(request.SerializeToString(), metadata=(("x-request-id", "req-77"),), timeout=5)
    raw = served.path.read_text() if served.log.flush() else ""
    for secret in ("user-4242", "anon-9999", "jane@example.com", "203.0.113.7", "7700", "sk_live_abc", "apiKey",
                   "Unknown-Cat", "C0009", "Order Completed", "99.5"):
        assert secret not in raw, secret
    [line] = read_lines(served.path)
    assert list(line) == KEYS
    assert line["request_id"] == "req-77"
    assert line["rpc"] == "Decide" and line["entry"] is None
    assert line["policy_generation"] == 1
    assert line["consent"] == {"granted": ["C0002"], "denied": ["C0004"], "absent": ["C0003"]}
    assert line["allowed"] == ["amplitude", "x"]
    assert line["blocked"] == ["mixpanel", "braze"]
    assert line["reasons"] == {"amplitude": "REASON_GRANTED", "mixpanel": "REASON_DISABLED_BY_EVENT",
                               "braze": "REASON_DENIED", "x": "REASON_UNMAPPED"}


async def test_batch_and_stream_entries_are_numbered(served: Served) -> None:
    batch = served.channel.unary_unary("/consent.v1.DecisionService/DecideBatch")
    requests = [
        Req(consent=decision_pb2.Consent(category_preferences={"C0002": True}), destinations=["amplitude"]),
        Req(destinations=[""]),  # invalid: an error entry, not a decision
        Req(destinations=["google-ads"]),
    ]
    await batch(decision_pb2.DecideBatchRequest(requests=requests).SerializeToString(),
                metadata=(("x-request-id", "b-1"),), timeout=5)
    stream = served.channel.stream_stream("/consent.v1.DecisionService/DecideStream")(timeout=5)
    for r in requests[::2]:
        await stream.write(r.SerializeToString())
        await stream.read()
    await stream.done_writing()
    lines = served.lines()
    assert [(x["rpc"], x["entry"], x["allowed"]) for x in lines] == [
        ("DecideBatch", 0, ["amplitude"]),
        ("DecideBatch", 2, ["google-ads"]),
        ("DecideStream", 0, ["amplitude"]),
        ("DecideStream", 1, ["google-ads"]),
    ]
    assert {x["request_id"] for x in lines[:2]} == {"b-1"}
    assert lines[1]["consent"] is None


async def test_nothing_is_logged_when_the_sample_misses(served: Served) -> None:
    served.log.sample = 0.0
    call = served.channel.unary_unary("/consent.v1.DecisionService/Decide")
    for _ in range(20):
        await call(Req(destinations=["amplitude"]).SerializeToString(), timeout=5)
    assert served.lines() == []


# -- the command line ------------------------------------------------------------------------------------


def test_serve_flags_parse_sample_and_rate(capsys: pytest.CaptureFixture[str]) -> None:
    from consent_sidecar import cli

    parser = cli.build_parser()
    ns = parser.parse_args(["serve", "--mappings", "m.yaml", "--decision-log", "-", "--decision-log-sample", "0.01",
                            "--decision-log-rate", "6000/m"])
    assert (ns.decision_log, ns.decision_log_sample, ns.decision_log_rate) == ("-", 0.01, 100.0)
    ns = parser.parse_args(["serve", "--mappings", "m.yaml", "--decision-log-rate", "0"])
    assert ns.decision_log_rate is None  # unlimited
    assert cli.run_cli(["serve", "--mappings", "m.yaml", "--decision-log-sample", "1.5"], {}) == 2
    assert "invalid fraction '1.5'" in capsys.readouterr().err
    assert cli.run_cli(["serve", "--mappings", "m.yaml", "--decision-log-rate", "fast"], {}) == 2
    assert "decision log rate 'fast'" in capsys.readouterr().err


def test_a_decision_log_file_it_creates_is_private_whatever_the_umask(tmp_path: Path) -> None:
    import os

    path = tmp_path / "decisions.jsonl"
    old = os.umask(0)
    try:
        log = DecisionLog(str(path))
    finally:
        os.umask(old)
    log.close()
    assert path.stat().st_mode & 0o777 == 0o600
    existing = tmp_path / "theirs.jsonl"
    existing.write_text("")
    existing.chmod(0o640)
    DecisionLog(str(existing)).close()  # appended to: its owner's mode is kept
    assert existing.stat().st_mode & 0o777 == 0o640


# -- the byte budget -----------------------------------------------------------------------------------


def test_lines_are_bounded_in_bytes_per_second_not_only_in_lines(tmp_path: Path, index: Any) -> None:
    """Ten-thousand-destination requests made 1.3 GB of log in 10 s at 100 lines/s: bytes are what a disk fills with."""
    path = tmp_path / "d.log"
    clock = FakeClock()
    wide = tuple(f"destination-{i:05d}" for i in range(2_000))  # a ~90 KB line
    log = DecisionLog(str(path), rate=1_000, bytes_rate=200_000, clock=clock)
    try:
        for second in range(5):
            for i in range(10):
                log.submit(entry(index, request_id=f"s{second}-{i}", destinations=wide))
            assert log.flush()
            clock.now += 1.0
        written = path.stat().st_size
        assert log.written >= 5  # some pass: the budget refills every second
        assert written <= 200_000 * 6  # the burst (one second's worth) and five seconds of rate
        assert log.dropped_bytes == 50 - log.written
        assert log.dropped_rate == log.dropped_full == 0
    finally:
        log.close()


def test_a_line_larger_than_the_whole_burst_is_dropped_and_small_ones_still_pass(tmp_path: Path, index: Any) -> None:
    log = DecisionLog(str(tmp_path / "d.log"), bytes_rate=50_000, clock=FakeClock())
    try:
        assert not log.submit(entry(index, destinations=tuple(f"d{i}" for i in range(5_000))))
        assert log.submit(entry(index, destinations=("amplitude",)))
        assert (log.dropped_bytes, log.flush(), log.written) == (1, True, 1)
    finally:
        log.close()


def test_bytes_beyond_the_estimate_are_charged_once_the_writer_knows_them(tmp_path: Path, index: Any) -> None:
    """Ids of multi-byte characters make lines longer than estimated: the difference is owed, and paid."""
    path = tmp_path / "d.log"
    clock = FakeClock()
    long_ids = tuple("\u00e9" * 200 + str(i) for i in range(40))  # 2 bytes per character, estimated as one
    log = DecisionLog(str(path), bytes_rate=60_000, clock=clock)
    try:
        for _ in range(40):
            assert log.submit(entry(index, destinations=long_ids)) or log.dropped_bytes
            assert log.flush()  # the writer reports each line's true size before the next is asked
        assert path.stat().st_size <= 60_000 + 20_000  # the budget, and at most one line's shortfall
    finally:
        log.close()


def test_the_queue_is_bounded_in_bytes_too(tmp_path: Path, index: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    started = threading.Event()

    def stuck(e: Entry) -> str:
        started.set()
        release.wait(10)
        return format_line(e)

    monkeypatch.setattr(decision_log, "format_line", stuck)
    wide = entry(index, destinations=tuple(f"destination-{i:04d}" for i in range(1_000)))
    size = decision_log.estimate(wide)
    assert size > 50_000
    log = DecisionLog(str(tmp_path / "d.log"), queue_bytes=3 * size + size // 2)
    try:
        assert log.submit(entry(index, request_id="taken"))
        assert started.wait(5)
        results = [log.submit(wide) for _ in range(6)]
        assert results == [True] * 3 + [False] * 3  # three fit in three and a half, a fourth does not
        assert log.dropped_full == 3
    finally:
        release.set()
        log.close()


def test_dropped_lines_are_counted_by_why_in_the_metrics(tmp_path: Path, index: Any) -> None:
    from prometheus_client import generate_latest

    from consent_sidecar.observe.observability import Observability

    clock = FakeClock()
    log = DecisionLog(str(tmp_path / "d.log"), rate=2, bytes_rate=5_000, clock=clock)
    metrics = Metrics()
    obs = Observability(metrics=metrics, recorder=Recorder(metrics), decision_log=log)
    try:
        log.submit(entry(index, destinations=tuple(f"d{i}" for i in range(1_000))))  # over the bytes
        log.submit(entry(index))
        log.submit(entry(index))  # over the line rate
        obs.flush(count_reloads=False)
        text = generate_latest(metrics.registry).decode()
        assert 'consent_sidecar_decision_log_dropped_total{why="bytes"} 1.0' in text
        assert 'consent_sidecar_decision_log_dropped_total{why="rate_limit"} 1.0' in text
    finally:
        log.close()


def test_serve_flag_sets_the_byte_rate(capsys: pytest.CaptureFixture[str]) -> None:
    from consent_sidecar import cli
    from consent_sidecar.config import DEFAULT_DECISION_LOG_BYTES_RATE

    flag = {(f.verb, f.flag): f for f in cli.flag_reference()}[("serve", "--decision-log-bytes-rate")]
    assert (flag.default, flag.env) == (DEFAULT_DECISION_LOG_BYTES_RATE, "CONSENT_SIDECAR_DECISION_LOG_BYTES_RATE")
    parser = cli.build_parser()
    for value, rate in (("2MiB", 2 << 20), ("512KiB/s", 512 << 10), ("65536", 65536), ("0", None)):
        ns = parser.parse_args(["serve", "--mappings", "m.yaml", "--decision-log-bytes-rate", value])
        assert ns.decision_log_bytes_rate == rate
    assert cli.run_cli(["serve", "--mappings", "m.yaml", "--decision-log-bytes-rate", "lots"], {}) == 2
    assert "invalid size 'lots'" in capsys.readouterr().err
