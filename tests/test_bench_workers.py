"""bench/bench_workers.py: reading h2load's output, and the workers row end to end (no timing asserted)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import bench_workers, workload
from bench.bench_workers import PAIR, W1, W2, WorkersRow, _H2load

ANSWER_FRAME = 1000


def _output(done: int, received: int) -> bytes:
    return (
        f"finished in 1.30s, {done} req/s, 1MB/s\n"
        f"requests: {done} total, {done} started, {done} done, {done} succeeded, 0 failed, 0 errored, 0 timeout\n"
        f"status codes: {done} 2xx, 0 3xx, 0 4xx, 0 5xx\n"
        f"traffic: 1MB ({received + 40 * done}) total, 1KB ({40 * done}) headers (space savings 96%), 1MB (1) data\n"
    ).encode()


def _log(path: Path, calls: list[tuple[int, int]]) -> None:
    path.write_text("".join(f"{start}\t200\t{elapsed}\n" for start, elapsed in calls))


@pytest.fixture
def h2load(tmp_path: Path) -> _H2load:
    return _H2load(tmp_path, b"request", ANSWER_FRAME)


def test_rate_and_window_come_from_the_log(h2load: _H2load, tmp_path: Path) -> None:
    log = tmp_path / "run.tsv"
    _log(log, [(1_000_000, 2_000), (1_500_000, 4_000), (1_999_000, 1_000)])  # µs since the epoch, µs
    run = h2load._parse(_output(3, 3 * ANSWER_FRAME), log, streams=1)
    assert run.start == 1.0 and run.end == 2.0
    assert run.rate == 3 * bench_workers.BATCH / 1.0
    assert run.p50_us == 2_000


def test_a_log_holding_another_runs_calls_is_refused(h2load: _H2load, tmp_path: Path) -> None:
    log = tmp_path / "run.tsv"
    _log(log, [(1_000_000, 2_000), (9_000_000, 2_000)])  # h2load appends: two runs in one file
    with pytest.raises(RuntimeError, match="logged 2 calls but reports 1 done"):
        h2load._parse(_output(1, ANSWER_FRAME), log, streams=1)


def test_short_responses_are_failures_not_throughput(h2load: _H2load, tmp_path: Path) -> None:
    log = tmp_path / "run.tsv"
    _log(log, [(1_000_000, 100), (1_000_200, 100)])
    with pytest.raises(RuntimeError, match="did not answer every call"):
        h2load._parse(_output(2, 2 * 30), log, streams=1)  # a gRPC error status is a few bytes


@pytest.mark.parametrize(("received", "answered"), [
    (4 * ANSWER_FRAME, True),
    (3 * ANSWER_FRAME + 1, True),  # one call straddled the warm-up's end: part of its answer was not counted
    (2 * ANSWER_FRAME + 30, False),  # two short answers with one stream: one call was refused
])
def test_a_call_straddling_the_warm_up_may_be_short_by_one_answer_per_stream(
        h2load: _H2load, tmp_path: Path, received: int, answered: bool) -> None:
    log = tmp_path / "run.tsv"
    _log(log, [(1_000_000 + i * 100, 100) for i in range(4)])
    if answered:
        assert h2load._parse(_output(4, received), log, streams=1).rate > 0
    else:
        with pytest.raises(RuntimeError, match="did not answer every call"):
            h2load._parse(_output(4, received), log, streams=1)


def test_unreadable_output_is_an_error(h2load: _H2load, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot read h2load"):
        h2load._parse(b"connect: Connection refused\n", tmp_path / "missing.tsv", streams=1)


def test_ratios_compare_measurements_of_the_same_round() -> None:
    row = WorkersRow("x")
    for rates in ((100.0, 130.0, 120.0), (200.0, 220.0, 250.0)):
        for config, rate in zip((W1, W2, PAIR), rates, strict=True):
            row.add(config, rate, cores=1.0, client=0.3, p50_us=1000.0)
    assert row.ratios[W2] == [1.3, 1.1]
    assert row.ratios[PAIR] == [1.2, 1.25]
    text = bench_workers.format_workers(row)
    assert "workers=2 / workers=1 per round: 1.30, 1.10" in text


@pytest.mark.parametrize("generator", ["h2load", "python"])
def test_the_workers_row_runs_end_to_end(generator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three sidecars under each load generator, one short round; only that it measures, not how fast."""
    if generator == "h2load" and shutil.which("h2load") is None:
        pytest.skip("h2load (Debian's nghttp2-client) is not installed")
    if generator == "python":
        real = shutil.which
        monkeypatch.setattr(bench_workers.shutil, "which", lambda name: None if name == "h2load" else real(name))
    row = bench_workers.run_workers(workload.build(n_events=600), seconds=0.3, warmup=0.1, rounds=1, log=lambda _: None)
    assert row.generator.startswith(generator)
    for config in (W1, W2, PAIR):
        assert row.rates[config][0] > 0
        assert row.cores[config][0] > 0
    assert len(row.split) == 3  # the parent and two workers
    assert "2 sidecars x workers=1" in bench_workers.format_workers(row)
