"""Live reload: edit-to-live latency over 50 edits, and Decide throughput during an edit storm vs. without one.

`python -m bench.bench_reload` (not part of `make test`). Starts `consent-sidecar serve` on the
workload's mapping in a temporary directory (pinned to core 0 when `taskset` exists; this
process, the load generator and the editor, pinned to core 1), then:

(e) edit-to-live: 50 editor saves (temp file + rename) and 50 in-place writes, one at a time;
    each is timed from just before the write until the first Decide that answers with the new
    generation (Decide is called back to back, so the figure includes at most one call).
(f) Decide throughput (unix socket, 32 tasks) during an edit storm, as a ratio of the same
    measurement without one: rounds alternate quiet / storm, each ratio compares neighbours
    of one round, the table shows medians. The storm is an editor thread saving a new version
    (temp + rename) every `--storm-interval-ms` (default: two rows, 25 ms, which the watcher
    coalesces until the storm pauses, and 250 ms, where every save goes live); every
    response's generation is checked to be monotonic and every call to succeed, and each row
    reports how many generations went live during its storm windows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core.mapping_file import parse_mapping

from bench import workload as workload_module
from bench.workload import Workload

__all__ = ["ReloadReport", "StormRound", "StormRow", "format_report", "main", "run"]

EDITS = 50
CONCURRENCY = 32
LIVE_DEADLINE = 30.0  # seconds an edit may take to go live before the run is declared broken
Stub = decision_pb2_grpc.DecisionServiceStub


@dataclass(frozen=True, slots=True)
class Latency:
    method: str
    samples_ms: list[float]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True, slots=True)
class StormRound:
    quiet_rps: float
    storm_rps: float
    saves: int  # edits written during the storm window
    published: int  # generations that went live during the storm window (seen in responses)


@dataclass(frozen=True, slots=True)
class StormRow:
    interval_ms: float
    rounds: list[StormRound]


@dataclass(frozen=True, slots=True)
class ReloadReport:
    latencies: list[Latency]
    storms: list[StormRow]
    seconds: float


# -- the sidecar process ----------------------------------------------------------------------


def _pinned(argv: list[str], cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def _serve_argv(mappings: Path, listen: str) -> list[str]:
    cli = Path(sys.executable).parent / "consent-sidecar"
    if cli.exists():
        return [str(cli), "serve", "--mappings", str(mappings), "--listen", listen, "--log-level", "warning"]
    code = (
        "import sys; from consent_sidecar.process.server import run; from consent_sidecar.config import ServeConfig; "
        f"sys.exit(run(ServeConfig(mappings={str(mappings)!r}, listen=({listen!r},), log_level='warning')))"
    )
    return [sys.executable, "-c", code]


@contextlib.contextmanager
def _sidecar(mappings: Path, listen: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(_pinned(_serve_argv(mappings, listen), 0), stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _ready(stub: Stub, process: subprocess.Popen[bytes], log: Path) -> decision_pb2.DecideResponse:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the sidecar exited with {process.returncode}; its output is in {log}")
        with contextlib.suppress(grpc.aio.AioRpcError):
            response: decision_pb2.DecideResponse = await stub.Decide(decision_pb2.DecideRequest(), timeout=1)
            return response
        if time.monotonic() > deadline:
            raise RuntimeError("the sidecar did not answer within 30 s")
        await asyncio.sleep(0.05)


# -- edits --------------------------------------------------------------------------------------


class Editor:
    """Writes successive versions of the mapping file, each one a different policy."""

    def __init__(self, path: Path, base: str) -> None:
        self.path = path
        self.base = base
        self.version = 0
        self.last_text = base

    def next_text(self) -> str:
        self.version += 1
        # A destination added in front of the first category's list: a new digest every time.
        self.last_text = self.base.replace("destinations: [", f"destinations: [bench-edit-{self.version}, ", 1)
        return self.last_text

    def save_renamed(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{self.version}.tmp")
        tmp.write_text(self.next_text(), encoding="utf-8")
        os.replace(tmp, self.path)

    def save_in_place(self) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(self.next_text())


async def _edit_to_live(stub: Stub, editor: Editor, method: str, generation: int, edits: int) -> tuple[Latency, int]:
    save = editor.save_renamed if method == "temp+rename" else editor.save_in_place
    request = decision_pb2.DecideRequest(destinations=["bench-probe"])
    samples = []
    for _ in range(edits):
        generation += 1
        t0 = time.perf_counter()
        save()
        while True:
            response = await stub.Decide(request, timeout=5)
            if response.policy.generation >= generation:
                break
            if time.perf_counter() - t0 > LIVE_DEADLINE:
                raise RuntimeError(f"edit {editor.version} not live after {LIVE_DEADLINE} s")
        samples.append((time.perf_counter() - t0) * 1000)
        if response.policy.generation != generation:
            raise RuntimeError(f"expected generation {generation}, got {response.policy.generation}")
    return Latency(method, samples), generation


# -- throughput under a storm -------------------------------------------------------------------


@dataclass
class _Load:
    stop: bool = False
    count: int = 0
    first_generation: int = 0
    last_generation: int = 0


async def _decide_load(stub: Stub, requests: list[decision_pb2.DecideRequest], seconds: float) -> _Load:
    load = _Load()
    last_seen = [0] * CONCURRENCY

    async def worker(i: int) -> None:
        k = i
        while not load.stop:
            response = await stub.Decide(requests[k % len(requests)], timeout=10)  # any failure ends the run
            k += CONCURRENCY
            g = response.policy.generation
            if g < last_seen[i]:
                raise RuntimeError(f"generation went back from {last_seen[i]} to {g} for one client")
            last_seen[i] = g
            load.count += 1

    tasks = [asyncio.create_task(worker(i)) for i in range(CONCURRENCY)]
    await asyncio.sleep(0.2)  # warm-up
    load.count = 0
    load.first_generation = min(last_seen)
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    count, elapsed = load.count, time.perf_counter() - start
    load.stop = True
    await asyncio.gather(*tasks)
    load.count = round(count / elapsed)  # requests/s from here on
    load.last_generation = max(last_seen)
    return load


class _Storm:
    """An editor thread saving a new version every `interval` seconds until stopped."""

    def __init__(self, editor: Editor, interval: float) -> None:
        self.editor = editor
        self.interval = interval
        self.saves = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edit-storm", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.editor.save_renamed()
            self.saves += 1

    def __enter__(self) -> _Storm:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _settle(stub: Stub, editor: Editor) -> int:
    """Waits until the last saved version is the one deciding; returns its generation."""
    want = parse_mapping(editor.last_text, str(editor.path)).digest()
    deadline = time.monotonic() + LIVE_DEADLINE
    while True:
        response = await stub.Decide(decision_pb2.DecideRequest(destinations=["bench-probe"]), timeout=5)
        if response.policy.digest == want:
            return int(response.policy.generation)
        if time.monotonic() > deadline:
            raise RuntimeError("the storm's last edit did not go live")
        await asyncio.sleep(0.05)  # a poll interval: the loop re-checks the served digest


async def _run(workload: Workload, *, edits: int, seconds: float, rounds: int, storm_intervals: list[float],
               log: Path | None) -> ReloadReport:
    workdir = Path(tempfile.mkdtemp(prefix="consent-bench-reload-"))
    try:
        mappings = workload.write_mapping(workdir)
        editor = Editor(mappings, mappings.read_text(encoding="utf-8"))
        listen = f"unix:{workdir}/sidecar.sock"
        with _sidecar(mappings, listen, log or workdir / "sidecar.log") as process:
            async with grpc.aio.insecure_channel(listen) as channel:
                stub = Stub(channel)  # type: ignore[no-untyped-call]
                generation = (await _ready(stub, process, log or workdir / "sidecar.log")).policy.generation
                # One unmeasured edit: the watch is armed shortly after the sidecar answers.
                _, generation = await _edit_to_live(stub, editor, "temp+rename", generation, 1)
                latencies = []
                for method in ("temp+rename", "in-place"):
                    latency, generation = await _edit_to_live(stub, editor, method, generation, edits)
                    latencies.append(latency)
                requests = []
                for e in workload.events:
                    request = decision_pb2.DecideRequest(destinations=e.destinations)
                    if e.preferences is not None:
                        request.consent.category_preferences.update(e.preferences)
                    requests.append(request)
                storms = []
                for interval in storm_intervals:
                    results = []
                    for _ in range(rounds):
                        quiet = await _decide_load(stub, requests, seconds)
                        with _Storm(editor, interval) as storm:
                            stormy = await _decide_load(stub, requests, seconds)
                            saves = storm.saves
                        await _settle(stub, editor)
                        results.append(StormRound(quiet.count, stormy.count, saves,
                                                  stormy.last_generation - stormy.first_generation))
                    storms.append(StormRow(interval * 1000, results))
                if process.poll() is not None:
                    raise RuntimeError(f"the sidecar exited with {process.returncode}")
                return ReloadReport(latencies, storms, seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(workload: Workload, *, edits: int = EDITS, seconds: float = 2.0, rounds: int = 3,
        storm_intervals_ms: tuple[float, ...] = (25.0, 250.0), log: Path | None = None) -> ReloadReport:
    return asyncio.run(_run(workload, edits=edits, seconds=seconds, rounds=rounds,
                            storm_intervals=[ms / 1000 for ms in storm_intervals_ms], log=log))


def format_report(report: ReloadReport) -> str:
    edits = len(report.latencies[0].samples_ms)
    lines = [f"(e) edit-to-live: write -> first Decide answering the new generation, {edits} edits each, one at a time"]
    for lat in report.latencies:
        lines.append(f"  {lat.method:<12}  p50 {lat.percentile(0.50):7.1f} ms   p99 {lat.percentile(0.99):7.1f} ms   "
                     f"max {max(lat.samples_ms):7.1f} ms")
    lines.append(f"(f) Decide unix c={CONCURRENCY} during an edit storm (temp+rename saves) vs. quiet; "
                 f"{len(report.storms[0].rounds)} rounds of {report.seconds:g} s each, medians; no call failed, "
                 "generations monotonic per client")
    for row in report.storms:
        rs = row.rounds
        ratios = [r.storm_rps / r.quiet_rps for r in rs]
        quiet, storm = statistics.median(r.quiet_rps for r in rs), statistics.median(r.storm_rps for r in rs)
        each = ", ".join(f"{x:.2f}" for x in ratios)
        saves, live = statistics.median(r.saves for r in rs), statistics.median(r.published for r in rs)
        lines.append(
            f"  a save every {row.interval_ms:>4g} ms: quiet {quiet:7,.0f} req/s, storm {storm:7,.0f} req/s, "
            f"ratio {statistics.median(ratios):.2f} (rounds {each}); per window {saves:.0f} saves, {live:.0f} went live"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_reload", description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=EDITS, help=f"edits per method for (e) (default {EDITS})")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per window for (f) (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="quiet/storm rounds for (f) (default 3)")
    parser.add_argument("--storm-interval-ms", type=float, action="append",
                        help="milliseconds between saves during a storm; repeat for several rows (default 25 and 250)")
    args = parser.parse_args(argv)
    from bench.__main__ import _pin  # the same pinning as `python -m bench`

    print(f"cpu: {_pin()}", flush=True)
    workload = workload_module.build()
    print(f"workload: {workload.describe()}\n", flush=True)
    report = run(workload, edits=args.edits, seconds=args.seconds, rounds=args.rounds,
                 storm_intervals_ms=tuple(args.storm_interval_ms or (25.0, 250.0)))
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
