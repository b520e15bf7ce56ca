"""(b)-(d) The sidecar over gRPC against the floor (an empty-handler server), measured in turns.

Both servers run as subprocesses pinned to core 0 (`taskset -c 0`); this process is the load
generator, pinned to core 1 by `bench/__main__.py`: N asyncio tasks on grpc.aio channels replay
the same pre-built request messages. Every row is measured floor, sidecar, floor, sidecar, ...
and each ratio compares the two neighbouring measurements of one round; the table shows medians.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core.index import compile

from bench.workload import Workload

__all__ = ["GrpcRow", "format_rows", "run"]

BATCH_SIZE = 100
STREAM_WINDOW = 32  # requests in flight per stream
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 4 << 20), ("grpc.max_send_message_length", 4 << 20)]
Stub = decision_pb2_grpc.DecisionServiceStub


@dataclass(frozen=True, slots=True)
class Sample:
    rate: float  # requests/s for unary, events/s for batch and stream
    p50_us: float | None
    p99_us: float | None
    cpu_us: float | None = None  # server CPU time (user + system, all threads) per request or event


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) a process has used so far; None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CpuProbe = Callable[[], float | None]


def process_children(pid: int) -> list[int]:
    """The live child processes of `pid` (a sidecar's --workers); empty where /proc is missing."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


@dataclass(slots=True)
class GrpcRow:
    name: str
    unit: str
    floor: list[Sample] = field(default_factory=list)
    sidecar: list[Sample] = field(default_factory=list)


# -- servers ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pinned(argv: list[str], cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def _unpinned(argv: list[str]) -> list[str]:
    """Every core: this process is pinned to core 1 and children would inherit that."""
    n = os.cpu_count() or 1
    if shutil.which("taskset") and n > 1:
        return ["taskset", "-c", f"0-{n - 1}", *argv]
    return argv


def _sidecar_argv(mappings: Path, listen: Sequence[str], *extra: str) -> list[str]:
    listen_flags = [x for address in listen for x in ("--listen", address)]
    cli = Path(sys.executable).parent / "consent-sidecar"
    if cli.exists():
        return [str(cli), "serve", "--mappings", str(mappings), *listen_flags, "--log-level", "warning", *extra]
    # The console script is missing (not installed yet): run the server module directly.
    code = (
        "import sys; from consent_sidecar.process.server import run; from consent_sidecar.config import ServeConfig; "
        f"sys.exit(run(ServeConfig(mappings={str(mappings)!r}, listen={tuple(listen)!r}, log_level='warning')))"
    )
    return [sys.executable, "-c", code]


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    unix: str
    tcp: str
    log: Path

    def describe_failure(self) -> str:
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        return f"{self.name} exited with {self.process.poll()}:\n{tail}"


@contextlib.contextmanager
def _start(name: str, argv: list[str], unix: str, tcp: str, workdir: Path, *, pin: bool = True) -> Iterator[Server]:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            _pinned(argv, 0) if pin else _unpinned(argv), stdout=out, stderr=subprocess.STDOUT, cwd=os.getcwd()
        )
    server = Server(name, process, unix, tcp, log)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _ready(server: Server, patience: float = 30.0) -> None:
    deadline = time.monotonic() + patience
    for target in (server.unix, server.tcp):
        async with grpc.aio.insecure_channel(target) as channel:
            while True:
                if server.process.poll() is not None:
                    raise RuntimeError(server.describe_failure())
                try:
                    await asyncio.wait_for(channel.channel_ready(), 0.5)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{server.name} not ready on {target} after {patience}s") from None


# -- load generators -----------------------------------------------------------------------------


@dataclass
class _State:
    stop: bool = False
    record: bool = False
    count: int = 0
    latencies_ns: list[int] = field(default_factory=list)


def _percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


async def _drive(
    workers: Callable[[_State], list[Coroutine[Any, Any, None]]], seconds: float, warmup: float, per_call: int,
    cpu: CpuProbe | None = None,
) -> Sample:
    state = _State()
    tasks = [asyncio.create_task(w) for w in workers(state)]
    await asyncio.sleep(warmup)
    state.record = True
    cpu0 = cpu() if cpu else None
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    count = state.count
    elapsed = time.perf_counter() - start
    cpu1 = cpu() if cpu else None
    state.stop = True
    await asyncio.gather(*tasks)
    lat = state.latencies_ns
    units = count * per_call
    return Sample(
        units / elapsed,
        _percentile(lat, 0.50) if lat else None,
        _percentile(lat, 0.99) if lat else None,
        (cpu1 - cpu0) * 1e6 / units if cpu0 is not None and cpu1 is not None and units else None,
    )


async def _unary(call: Any, requests: Sequence[Any], concurrency: int, seconds: float, warmup: float,
                 per_call: int = 1, cpu: CpuProbe | None = None) -> Sample:
    def workers(state: _State) -> list[Coroutine[Any, Any, None]]:
        async def worker(i: int) -> None:
            n = len(requests)
            k = i
            lat = state.latencies_ns
            clock = time.perf_counter_ns
            while not state.stop:
                request = requests[k % n]
                k += concurrency
                t0 = clock()
                await call(request)
                if state.record:
                    lat.append(clock() - t0)
                    state.count += 1

        return [worker(i) for i in range(concurrency)]

    return await _drive(workers, seconds, warmup, per_call, cpu)


async def _stream(stub: Stub, requests: Sequence[decision_pb2.DecideRequest], streams: int, seconds: float,
                  warmup: float, cpu: CpuProbe | None = None) -> Sample:
    """Latency per event: from just before its write to its response's read (responses come in order)."""

    def workers(state: _State) -> list[Coroutine[Any, Any, None]]:
        async def one_stream(i: int) -> None:
            call = stub.DecideStream()
            window = asyncio.Semaphore(STREAM_WINDOW)
            sent: collections.deque[int] = collections.deque()
            clock = time.perf_counter_ns

            async def writer() -> None:
                n = len(requests)
                k = i
                while not state.stop:
                    await window.acquire()
                    sent.append(clock())
                    await call.write(requests[k % n])
                    k += streams
                await call.done_writing()

            async def reader() -> None:
                lat = state.latencies_ns
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        return
                    t0 = sent.popleft()
                    window.release()
                    if state.record:
                        lat.append(clock() - t0)
                        state.count += 1

            await asyncio.gather(writer(), reader())

        return [one_stream(i) for i in range(streams)]

    return await _drive(workers, seconds, warmup, 1, cpu)


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    unit: str
    transport: str  # "unix" | "tcp"
    kind: str  # "unary" | "batch" | "stream"
    concurrency: int
    varying: bool = False  # the requests of build_varying(): destination lists that do not repeat


SPECS = [
    _Spec("Decide            unix  c=1", "req/s", "unix", "unary", 1),
    _Spec("Decide            unix  c=32", "req/s", "unix", "unary", 32),
    _Spec("Decide            tcp   c=1", "req/s", "tcp", "unary", 1),
    _Spec("Decide            tcp   c=32", "req/s", "tcp", "unary", 32),
    _Spec(f"DecideBatch x{BATCH_SIZE}  unix  c=1", "events/s", "unix", "batch", 1),
    _Spec(f"DecideBatch x{BATCH_SIZE}  unix  c=4", "events/s", "unix", "batch", 4),
    _Spec("DecideStream      unix  1 stream", "events/s", "unix", "stream", 1),
    _Spec("DecideStream      unix  4 streams", "events/s", "unix", "stream", 4),
    # Varying destination lists: the sidecar's per-snapshot memos miss; every event is decided.
    _Spec("varying Decide          unix  c=1", "req/s", "unix", "unary", 1, True),
    _Spec(f"varying DecideBatch x{BATCH_SIZE} unix c=1", "events/s", "unix", "batch", 1, True),
    _Spec(f"varying DecideBatch x{BATCH_SIZE} unix c=4", "events/s", "unix", "batch", 4, True),
    _Spec("varying DecideStream    unix  1 stream", "events/s", "unix", "stream", 1, True),
]


def _requests(workload: Workload) -> list[decision_pb2.DecideRequest]:
    out = []
    for e in workload.events:
        request = decision_pb2.DecideRequest(destinations=e.destinations)
        if e.preferences is not None:
            request.consent.category_preferences.update(e.preferences)
        out.append(request)
    return out


async def _check_sidecar(stub: Stub, workload: Workload, requests: list[decision_pb2.DecideRequest]) -> None:
    """The sidecar serves the workload's policy and decides as the in-process index does."""
    index = compile(workload.mapping)
    for e, request in list(zip(workload.events, requests, strict=True))[:200]:
        response = await stub.Decide(request)
        want = index.decide(e.preferences, e.destinations)
        if (tuple(response.allowed), tuple(response.blocked)) != (want.allowed, want.blocked):
            raise RuntimeError(f"sidecar decided {response} for {request}, expected {want}")
        if response.policy.digest != workload.mapping.digest():
            raise RuntimeError("the sidecar does not serve the workload's mapping (digest differs)")


async def _measure(spec: _Spec, stub: Stub, requests: list[decision_pb2.DecideRequest],
                   batches: list[decision_pb2.DecideBatchRequest], seconds: float, warmup: float,
                   cpu: CpuProbe | None = None) -> Sample:
    if spec.kind == "unary":
        return await _unary(stub.Decide, requests, spec.concurrency, seconds, warmup, cpu=cpu)
    if spec.kind == "batch":
        return await _unary(stub.DecideBatch, batches, spec.concurrency, seconds, warmup, BATCH_SIZE, cpu=cpu)
    return await _stream(stub, requests, spec.concurrency, seconds, warmup, cpu)


def _batches(requests: list[decision_pb2.DecideRequest]) -> list[decision_pb2.DecideBatchRequest]:
    return [
        decision_pb2.DecideBatchRequest(requests=requests[i : i + BATCH_SIZE])
        for i in range(0, len(requests) - BATCH_SIZE + 1, BATCH_SIZE)
    ]


async def _run(
    workload: Workload, varying: Workload | None, seconds: float, warmup: float, rounds: int,
    log: Callable[[str], None], metrics: bool = False, rows_matching: str | None = None,
) -> list[GrpcRow]:
    if varying is not None and varying.mapping.digest() != workload.mapping.digest():
        raise ValueError("the varying workload must use the workload's mapping (one sidecar serves both)")
    traffic = {False: (workload, _requests(workload))}
    if varying is not None:
        traffic[True] = (varying, _requests(varying))
    batches = {k: _batches(requests) for k, (_, requests) in traffic.items()}
    workdir = Path(tempfile.mkdtemp(prefix="consent-bench-"))
    try:
        mappings = workload.write_mapping(workdir)
        floor_addrs = (f"unix:{workdir}/floor.sock", f"127.0.0.1:{_free_port()}")
        sidecar_addrs = (f"unix:{workdir}/sidecar.sock", f"127.0.0.1:{_free_port()}")
        floor_argv = [sys.executable, "-m", "bench.floor", "--listen", floor_addrs[0], "--listen", floor_addrs[1]]
        with (
            _start("floor", floor_argv, *floor_addrs, workdir) as floor,
            _start("sidecar", _sidecar_argv(
                mappings, sidecar_addrs, *(("--metrics-listen", f"127.0.0.1:{_free_port()}") if metrics else ()),
            ), *sidecar_addrs, workdir) as sidecar,
        ):
            await _ready(floor)
            await _ready(sidecar)
            channels = {
                (server.name, transport): grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
                for server in (floor, sidecar)
                for transport, target in (("unix", server.unix), ("tcp", server.tcp))
            }
            try:
                stubs = {key: Stub(ch) for key, ch in channels.items()}  # type: ignore[no-untyped-call]
                for w, requests in traffic.values():
                    await _check_sidecar(stubs["sidecar", "unix"], w, requests)
                    await _check_sidecar(stubs["sidecar", "tcp"], w, requests)
                rows = []
                for spec in SPECS:
                    if spec.varying not in traffic or (rows_matching is not None and rows_matching not in spec.name):
                        continue
                    requests = traffic[spec.varying][1]
                    row = GrpcRow(spec.name, spec.unit)
                    for _ in range(rounds):
                        for server, samples in ((floor, row.floor), (sidecar, row.sidecar)):
                            stub = stubs[server.name, spec.transport]
                            pid = server.process.pid
                            samples.append(await _measure(
                                spec, stub, requests, batches[spec.varying], seconds, warmup,
                                lambda pid=pid: process_cpu(pid),
                            ))
                            for s in (floor, sidecar):
                                if s.process.poll() is not None:
                                    raise RuntimeError(s.describe_failure())
                    log(f"  measured {spec.name.split()[0]} {' '.join(spec.name.split()[1:])}")
                    rows.append(row)
                return rows
            finally:
                for ch in channels.values():
                    await ch.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(workload: Workload, *, varying: Workload | None = None, seconds: float = 1.5, warmup: float = 0.3,
        rounds: int = 3, log: Callable[[str], None] = print, metrics: bool = False,
        rows_matching: str | None = None) -> list[GrpcRow]:
    """The rows of SPECS; the `varying` ones only when `varying` (build_varying()) is given.

    metrics: the sidecar serves with --metrics-listen (as deployments do); rows_matching: only
    the rows whose name contains it."""
    return asyncio.run(_run(workload, varying, seconds, warmup, rounds, log, metrics, rows_matching))


# -- the table ------------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _ratios(row: GrpcRow, attr: str) -> float | None:
    pairs = [(getattr(f, attr), getattr(s, attr)) for f, s in zip(row.floor, row.sidecar, strict=True)]
    return _median([s / f if f and s is not None else None for f, s in pairs])


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_rows(rows: list[GrpcRow]) -> str:
    head = (
        f"{'gRPC (server core 0, client core 1)':<36} {'unit':<9}"
        f"{'floor':>9} {'sidecar':>9} {'ratio':>6}   "
        f"{'p50 µs floor':>12} {'sidecar':>8} {'ratio':>6}   "
        f"{'p99 µs floor':>12} {'sidecar':>8} {'ratio':>6}   "
        f"{'server CPU µs/unit floor':>24} {'sidecar':>8} {'ratio':>6}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(
            f"{r.name:<36} {r.unit:<9}"
            f"{_fmt(_median([s.rate for s in r.floor]), ',.0f'):>9} "
            f"{_fmt(_median([s.rate for s in r.sidecar]), ',.0f'):>9} "
            f"{_fmt(_ratios(r, 'rate'), '.2f'):>6}   "
            f"{_fmt(_median([s.p50_us for s in r.floor]), ',.0f'):>12} "
            f"{_fmt(_median([s.p50_us for s in r.sidecar]), ',.0f'):>8} "
            f"{_fmt(_ratios(r, 'p50_us'), '.2f'):>6}   "
            f"{_fmt(_median([s.p99_us for s in r.floor]), ',.0f'):>12} "
            f"{_fmt(_median([s.p99_us for s in r.sidecar]), ',.0f'):>8} "
            f"{_fmt(_ratios(r, 'p99_us'), '.2f'):>6}   "
            f"{_fmt(_median([s.cpu_us for s in r.floor]), ',.1f'):>24} "
            f"{_fmt(_median([s.cpu_us for s in r.sidecar]), ',.1f'):>8} "
            f"{_fmt(_ratios(r, 'cpu_us'), '.2f'):>6}"
        )
    return "\n".join(out)
