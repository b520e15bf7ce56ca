"""(e) `serve --workers 1` vs `--workers 2` under a batch load generator in its own process.

Both sidecars run unpinned (the workers need every core); they are measured in turns, round
after round, and each ratio compares the two measurements of one round. The load generator is
h2load (Debian's nghttp2-client, written in C) when it is on PATH: it replays one pre-encoded
gRPC frame (a DecideBatch of the workload's events) over many HTTP/2 connections and costs a
fraction of the CPU a Python gRPC client needs for the same bytes, which matters because on a
2-core machine every cycle it spends is one a second worker cannot. Without h2load,
`python -m bench.loadgen` (grpc.aio, responses left undecoded) takes its place.

Before measuring, both sidecars must decide the workload as the in-process index does, and every
h2load response must be as long as the real answer (an error status would be a few bytes), so a
fast failure can never pass for throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc.aio
from consent.v1 import decision_pb2

from bench.bench_grpc import (
    CHANNEL_OPTIONS,
    Server,
    Stub,
    _check_sidecar,
    _fmt,
    _free_port,
    _median,
    _percentile,
    _ready,
    _requests,
    _sidecar_argv,
    _start,
    _unpinned,
    process_children,
    process_cpu,
)
from bench.workload import Workload

__all__ = ["WorkersRow", "format_workers", "run_workers"]

CONNECTIONS = 32  # the kernel spreads connections (not calls) across SO_REUSEPORT listeners: many, for an even split
IN_FLIGHT = 1  # batch calls in flight per connection
BATCH = 500  # entries per call: a light client, so that the servers (not it) are the limit
METHOD = "/consent.v1.DecisionService/DecideBatch"


W1, W2, PAIR = "workers=1", "workers=2", "2 sidecars x workers=1"


@dataclass(slots=True)
class WorkersRow:
    """Per configuration (W1, W2, PAIR), one value per round."""

    name: str
    generator: str = ""
    rates: dict[str, list[float]] = field(default_factory=dict)  # events/s
    ratios: dict[str, list[float]] = field(default_factory=dict)  # events/s / workers=1's of the same round
    cores: dict[str, list[float]] = field(default_factory=dict)  # sidecar cores busy (every process)
    client: dict[str, list[float]] = field(default_factory=dict)  # load generator cores busy
    cpu: dict[str, list[float]] = field(default_factory=dict)  # sidecar CPU µs per event
    p50: dict[str, list[float]] = field(default_factory=dict)  # per call, µs
    split: list[float] = field(default_factory=list)  # workers=2: each process's cores, last round

    def add(self, config: str, rate: float, cores: float, client: float, p50_us: float) -> None:
        for values, value in ((self.rates, rate), (self.cores, cores), (self.client, client),
                              (self.cpu, cores * 1e6 / rate if rate else 0.0), (self.p50, p50_us)):
            values.setdefault(config, []).append(value)
        base = self.rates.get(W1, [])
        if base and len(base) == len(self.rates[config]) and base[-1]:
            self.ratios.setdefault(config, []).append(rate / base[-1])


@dataclass(frozen=True, slots=True)
class _Run:
    rate: float  # events/s
    p50_us: float
    start: float  # the measured window, time.time()
    end: float


async def _sampled(argv: list[str], pids: list[int],
                   parse: Callable[[bytes], _Run]) -> tuple[_Run, dict[int, float], float]:
    """Runs a load generator; returns its result, each server pid's cores busy and its own over the window."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, cwd=os.getcwd())
    samples: list[tuple[float, dict[int, float | None]]] = []
    reading = asyncio.ensure_future(proc.communicate())
    while not reading.done():
        samples.append((time.time(), {pid: process_cpu(pid) for pid in (*pids, proc.pid)}))
        await asyncio.wait([reading], timeout=0.05)
    out, _ = await reading
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: {out[-2000:].decode(errors='replace')}")
    result = parse(out)

    def at(t: float) -> tuple[float, dict[int, float | None]]:
        return min(samples, key=lambda s: abs(s[0] - t))

    (t0, c0), (t1, c1) = at(result.start), at(result.end)

    def busy(pid: int) -> float:
        return ((c1[pid] or 0.0) - (c0[pid] or 0.0)) / (t1 - t0) if t1 > t0 else 0.0

    return result, {pid: busy(pid) for pid in pids}, busy(proc.pid)


async def _python_loadgen(target: str, seconds: float, warmup: float, pids: list[int],
                          connections: int) -> tuple[_Run, dict[int, float], float]:
    argv = _unpinned([sys.executable, "-m", "bench.loadgen", target, "--batch", str(BATCH),
                      "--connections", str(connections), "--in-flight", str(IN_FLIGHT),
                      "--seconds", str(seconds), "--warmup", str(warmup)])

    def parse(out: bytes) -> _Run:
        r = json.loads(out)
        return _Run(r["rate"], r["p50_us"], r["start"], r["end"])

    return await _sampled(argv, pids, parse)


class _H2load:
    """h2load replaying one DecideBatch frame; checks every response had the real answer's length."""

    def __init__(self, workdir: Path, request: bytes, answer_frame: int) -> None:
        self.body = workdir / "batch.grpc"
        self.body.write_bytes(b"\x00" + struct.pack(">I", len(request)) + request)  # uncompressed gRPC frame
        self.answer_frame = answer_frame  # bytes of the response's gRPC frame: the floor for a good response
        self.workdir = workdir

    async def run(self, target: str, seconds: float, warmup: float, pids: list[int],
                  connections: int) -> tuple[_Run, dict[int, float], float]:
        log = self.workdir / f"h2load-{target.rpartition(':')[2]}.tsv"  # one per target: pairs run at once
        log.unlink(missing_ok=True)  # h2load appends to an existing log
        argv = _unpinned([
            "h2load", "-D", f"{round(seconds * 1000)}ms", "--warm-up-time", f"{round(warmup * 1000)}ms",
            "-c", str(connections), "-m", str(IN_FLIGHT), "-t", "1", "-d", str(self.body),
            "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", str(log),
            f"http://{target}{METHOD}",
        ])
        return await _sampled(argv, pids, lambda out: self._parse(out, log, connections * IN_FLIGHT))

    def _parse(self, out: bytes, log: Path, streams: int) -> _Run:
        text = out.decode(errors="replace")
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", text)
        traffic = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers", text)
        if done is None or traffic is None:
            raise RuntimeError(f"cannot read h2load's output:\n{text[-2000:]}")
        n, ok = int(done.group(1)), int(done.group(2))
        received = int(traffic.group(1)) - int(traffic.group(2))  # frames other than headers, all requests
        # A call in flight when the warm-up ends is counted done, but the bytes it received during the
        # warm-up are not: up to one answer per stream may be short. A refused call is short by a whole
        # answer, so a sidecar that refuses more than that many is still caught.
        if n == 0 or ok != n or received < (n - streams) * self.answer_frame:
            raise RuntimeError(f"h2load: {ok}/{n} succeeded, {received / max(n, 1):.0f} bytes per response "
                               f"(a full answer is {self.answer_frame}): the sidecar did not answer every call")
        rows = [line.split("\t") for line in log.read_text().splitlines() if line]
        if len(rows) != n:  # the log must be this run's calls exactly: the rate and window come from it
            raise RuntimeError(f"h2load logged {len(rows)} calls but reports {n} done")
        starts = [int(r[0]) for r in rows]
        ends = [int(r[0]) + int(r[2]) for r in rows]
        elapsed = (max(ends) - min(starts)) / 1e6
        return _Run(len(rows) * BATCH / elapsed, _percentile([int(r[2]) * 1000 for r in rows], 0.5),
                    min(starts) / 1e6, max(ends) / 1e6)


async def _run_workers(workload: Workload, seconds: float, warmup: float, rounds: int,
                       log: Callable[[str], None]) -> WorkersRow:
    row = WorkersRow(f"DecideBatch x{BATCH} tcp, {CONNECTIONS} conns x {IN_FLIGHT} call")
    workdir = Path(tempfile.mkdtemp(prefix="consent-bench-workers-"))
    requests = _requests(workload)
    request = decision_pb2.DecideBatchRequest(requests=requests[:BATCH]).SerializeToString()
    try:
        mappings = workload.write_mapping(workdir)
        with contextlib.ExitStack() as stack:
            servers = []  # workers=1, workers=2, and a second workers=1 for the pair
            for i, n in enumerate((1, 2, 1)):
                addrs = (f"unix:{workdir}/s{i}.sock", f"127.0.0.1:{_free_port()}")
                argv = _sidecar_argv(mappings, addrs, "--workers", str(n))
                servers.append(stack.enter_context(_start(f"sidecar-{i}-workers-{n}", argv, *addrs, workdir,
                                                          pin=False)))
            answers: set[bytes] = set()
            for server in servers:
                await _ready(server)
                async with grpc.aio.insecure_channel(server.tcp, options=CHANNEL_OPTIONS) as channel:
                    await _check_sidecar(Stub(channel), workload, requests)
                    answers.add(await channel.unary_unary(METHOD)(request))  # raw bytes: no (de)serializer
            if len(answers) != 1:
                raise RuntimeError("the sidecars answer the same batch differently")
            h2load = _H2load(workdir, request, 5 + len(answers.pop())) if shutil.which("h2load") else None
            row.generator = "h2load (nghttp2-client)" if h2load else "python -m bench.loadgen (no h2load on PATH)"

            async def drive(server: Server, connections: int) -> tuple[_Run, dict[int, float], float]:
                pids = [server.process.pid, *process_children(server.process.pid)]
                if h2load is not None:
                    return await h2load.run(server.tcp, seconds, warmup, pids, connections)
                return await _python_loadgen(server.tcp, seconds, warmup, pids, connections)

            for _ in range(rounds):
                for config in (W1, W2, PAIR):
                    if config == PAIR:  # the same total load split over two independent sidecars
                        runs = await asyncio.gather(*(drive(s, CONNECTIONS // 2) for s in (servers[0], servers[2])))
                    else:
                        runs = [await drive(servers[0] if config == W1 else servers[1], CONNECTIONS)]
                    row.add(config, sum(r.rate for r, _, _ in runs), sum(sum(c.values()) for _, c, _ in runs),
                            sum(g for _, _, g in runs), statistics.median(r.p50_us for r, _, _ in runs))
                    if config == W2:
                        row.split = list(runs[0][1].values())
                for server in servers:
                    if server.process.poll() is not None:
                        raise RuntimeError(server.describe_failure())
            log("  measured workers=1, workers=2 and two independent sidecars")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return row


def run_workers(workload: Workload, *, seconds: float = 1.5, warmup: float = 0.3, rounds: int = 3,
                log: Callable[[str], None] = print) -> WorkersRow:
    return asyncio.run(_run_workers(workload, seconds, warmup, rounds, log))


def format_workers(row: WorkersRow) -> str:
    head = (f"{'load generator: ' + row.generator:<48} {'events/s':>10} {'ratio':>6} {'p50 ms':>7} "
            f"{'sidecar cores':>14} {'loadgen cores':>14} {'sidecar CPU µs/event':>21}")
    out = [f"{row.name}; ratio = events/s / workers=1's of the same round", head, "-" * len(head)]

    def med(values: dict[str, list[float]], config: str, spec: str, width: int, scale: float = 1.0) -> str:
        m = _median(list[float | None](values.get(config, [])))
        return f"{_fmt(None if m is None else m * scale, spec):>{width}}"

    for config in (W1, W2, PAIR):
        out.append(
            f"{config:<48} {med(row.rates, config, ',.0f', 10)} {med(row.ratios, config, '.2f', 6)} "
            f"{med(row.p50, config, '.1f', 7, 1e-3)} {med(row.cores, config, '.2f', 14)} "
            f"{med(row.client, config, '.2f', 14)} {med(row.cpu, config, '.2f', 21)}"
        )
    for config in (W2, PAIR):
        if row.ratios.get(config):
            out.append(f"{config} / workers=1 per round: " + ", ".join(f"{r:.2f}" for r in row.ratios[config]))
    if row.split:
        split = ", ".join(f"{c:.2f}" for c in row.split)
        out.append(f"workers=2, cores busy per process (parent, workers...): {split}")
    w2, pair = row.rates.get(W2, []), row.rates.get(PAIR, [])
    if w2 and pair:
        share = _median([a / b if b else None for a, b in zip(w2, pair, strict=False)])
        out.append(f"workers=2 reaches {_fmt(share, '.2f')}x the events/s of two independent sidecars under the "
                   f"same load, the most two processes reach on these {os.cpu_count()} cores")
    return "\n".join(out)
