"""(f) Scale of the mapping: 100 categories x 10,000 destinations beside the 12 x 200 workload, in one run.

What issue 6 asks of a large mapping: compile under 1 s, resident memory under 150 MB, and a
Decide cost within 10% of the small mapping's. Measured here, each figure beside the 12 x 200
baseline of the same run:

- load (YAML parse + validation, `mapping_file.load_mapping`), compile (`Index`), and the
  reload a running sidecar does (file rewritten -> the new generation answering);
- resident memory: a fresh process before and after loading + compiling, and a running
  sidecar after serving traffic;
- decision cost: in-process `Index.decide` (memo warm and cleared), the DecisionService bytes
  handler for DecideBatch(100) called in-process, and DecideBatch(100) over gRPC (two sidecars
  pinned to core 0, measured in turns; server CPU per event from /proc).

Events have the same shape for both mappings (20 destinations from 50 sources, the same consent
mix). Two request sets go to the large mapping: consent objects naming 12 categories, as the
small workload's do (the same request sizes: this isolates the mapping's size), and consent
objects naming all 100 (requests ~8x larger; what grows then is the request, not the mapping).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from consent.v1 import decision_pb2
from consent_core.index import compile
from consent_core.limits import Limits
from consent_core.mapping_file import load_mapping

from bench.bench_grpc import (
    BATCH_SIZE,
    CHANNEL_OPTIONS,
    Stub,
    _free_port,
    _ready,
    _requests,
    _sidecar_argv,
    _start,
    process_cpu,
)
from bench.bench_grpc import _unary as unary_load
from bench.workload import Workload
from consent_sidecar.services import decision
from consent_sidecar.store.policy import PolicyStore

__all__ = ["ScaleResult", "format_result", "run"]


@dataclass
class ScaleResult:
    names: tuple[str, str]  # the two mappings
    columns: tuple[str, str, str]  # the three request sets of the cost rows
    yaml_bytes: list[int] = field(default_factory=list)
    load_s: list[float] = field(default_factory=list)
    compile_s: list[float] = field(default_factory=list)
    rss_before_mb: list[float] = field(default_factory=list)
    rss_after_mb: list[float] = field(default_factory=list)
    sidecar_rss_mb: list[float] = field(default_factory=list)
    reload_s: float | None = None  # the large mapping, rewritten -> generation 2 answering
    # row name -> per request set (small; large with 12-id consents; large with 100-id consents), per round
    cost: dict[str, tuple[list[float], list[float], list[float]]] = field(default_factory=dict)


def _vm_rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


_RSS_PROBE = """
import json, sys, gc
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
import consent_sidecar.process.server, consent_core.mapping_file, consent_core.index  # what a sidecar imports anyway
gc.collect()
before = rss()
m = consent_core.mapping_file.load_mapping(sys.argv[1]).mapping
index = consent_core.index.compile(m)
del m
gc.collect()
print(json.dumps([before, rss(), len(index.known_destinations)]))
"""


def _median_time(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class _Context:
    """Enough of a ServicerContext for the bytes handlers when nothing is invalid or sampled."""

    def invocation_metadata(self) -> tuple[()]:
        return ()


def _service_batches(workload: Workload, path: Path) -> tuple[decision.DecisionService, list[bytes]]:
    store = PolicyStore()
    store.load_initial(str(path))
    service = decision.DecisionService(store, Limits())
    requests = _requests(workload)
    batches = [
        decision_pb2.DecideBatchRequest(requests=requests[i : i + BATCH_SIZE]).SerializeToString()
        for i in range(0, len(requests) - BATCH_SIZE + 1, BATCH_SIZE)
    ]
    return service, batches


def _rate(fn: Callable[[Any], object], items: list[Any], seconds: float, per_item: int) -> float:
    """µs per event over whole passes through `items`, for about `seconds`."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for it in items:
            fn(it)
        n += len(items) * per_item
        now = time.perf_counter()
        if now >= deadline:
            return (now - start) * 1e6 / n


def _in_process(workloads: tuple[Workload, Workload, Workload], paths: tuple[Path, Path, Path],
                result: ScaleResult, seconds: float, rounds: int) -> None:
    indexes = [compile(w.mapping) for w in workloads]
    services = [_service_batches(w, p) for w, p in zip(workloads, paths, strict=True)]
    loop = asyncio.new_event_loop()
    ctx: Any = _Context()

    def decide_warm(i: int) -> Callable[[Any], object]:
        return lambda e: indexes[i].decide(e.preferences, e.destinations)

    def decide_cold(i: int) -> Callable[[Any], object]:
        index = indexes[i]

        def fn(e: Any) -> object:
            index.clear_memo()
            return index.decide(e.preferences, e.destinations)

        return fn

    def batch(i: int) -> Callable[[bytes], object]:
        service = services[i][0]
        return lambda data: loop.run_until_complete(service.decide_batch_bytes(data, ctx))

    rows: list[tuple[str, Callable[[int], Callable[[Any], object]], Callable[[int], list[Any]], int]] = [
        ("Index.decide (memo warm)", decide_warm, lambda i: list(workloads[i].events), 1),
        ("Index.decide (memo cleared per event)", decide_cold, lambda i: list(workloads[i].events[:1000]), 1),
        ("DecisionService DecideBatch(100) handler, in-process", batch, lambda i: services[i][1], BATCH_SIZE),
    ]
    for name, make, items, _ in rows:  # warm-up
        for i in (0, 1, 2):
            fn = make(i)
            for it in items(i)[:50]:
                fn(it)
        result.cost[name] = ([], [], [])
    for _ in range(rounds):
        for name, make, items, per in rows:
            for i in (0, 1, 2):
                result.cost[name][i].append(_rate(make(i), items(i), seconds, per))
    loop.close()


async def _grpc(workloads: tuple[Workload, Workload, Workload], paths: tuple[Path, Path], workdir: Path,
                result: ScaleResult, seconds: float, rounds: int) -> None:
    servers = []
    for i, path in enumerate(paths):
        addrs = (f"unix:{workdir}/s{i}.sock", f"127.0.0.1:{_free_port()}")
        servers.append((addrs, _start(f"sidecar-{i}", _sidecar_argv(path, addrs), *addrs, workdir)))
    name = "DecideBatch(100) over gRPC, server CPU"
    result.cost[name] = ([], [], [])
    rate_name = "DecideBatch(100) over gRPC, events/s"
    rates: tuple[list[float], list[float], list[float]] = ([], [], [])
    with servers[0][1] as s0, servers[1][1] as s1:
        running = (s0, s1, s1)  # request set -> the sidecar serving its mapping
        for s in (s0, s1):
            await _ready(s)
        batches = []
        for w in workloads:
            reqs = _requests(w)
            batches.append([decision_pb2.DecideBatchRequest(requests=reqs[i : i + BATCH_SIZE])
                            for i in range(0, len(reqs) - BATCH_SIZE + 1, BATCH_SIZE)])
        channels = [grpc.aio.insecure_channel(s.unix, options=CHANNEL_OPTIONS) for s in running]
        try:
            stubs = [Stub(ch) for ch in channels]  # type: ignore[no-untyped-call]
            for _ in range(rounds):
                for i in (0, 1, 2):
                    pid = running[i].process.pid
                    sample = await unary_load(stubs[i].DecideBatch, batches[i], 4, seconds, 0.3, BATCH_SIZE,
                                              cpu=lambda pid=pid: process_cpu(pid))
                    rates[i].append(sample.rate)
                    if sample.cpu_us is not None:
                        result.cost[name][i].append(sample.cpu_us)
            for s in (s0, s1):
                result.sidecar_rss_mb.append(_vm_rss_mb(s.process.pid))
            result.reload_s = await _reload_time(stubs[1], paths[1], workloads[1])
        finally:
            for ch in channels:
                await ch.close()
    result.cost[rate_name] = rates


async def _reload_time(stub: Stub, path: Path, workload: Workload) -> float | None:
    """Rewrites the mapping file with one more destination and times until generation 2 answers."""
    probe = decision_pb2.DecideRequest(destinations=["dest-added-for-reload"])
    before = await stub.Decide(probe)
    text = await asyncio.to_thread(path.read_text)
    first = workload.mapping.categories[0].id
    marker = f"  - id: {first}\n"
    i = text.index(marker)
    j = text.index("destinations: [", i) + len("destinations: [")
    edited = text[:j] + "dest-added-for-reload, " + text[j:]
    tmp = path.with_suffix(".tmp")
    await asyncio.to_thread(tmp.write_text, edited)
    start = time.perf_counter()
    os.replace(tmp, path)
    deadline = start + 120
    while time.perf_counter() < deadline:
        r = await stub.Decide(probe)
        if r.policy.generation > before.policy.generation:
            return time.perf_counter() - start
        await asyncio.sleep(0.01)
    return None


def run(base: Workload, large: Workload, large_full_consent: Workload, *, seconds: float = 1.0, rounds: int = 3,
        log: Callable[[str], None] = print) -> ScaleResult:
    """`large` and `large_full_consent`: the same mapping; consent objects of 12 ids, and of all its ids."""
    assert large.mapping == large_full_consent.mapping
    names = (_shape(base), _shape(large))
    columns = (names[0], f"{names[1]}, 12 ids", f"{names[1]}, {len(large.mapping.categories)} ids")
    result = ScaleResult(names, columns)
    workdir = Path(tempfile.mkdtemp(prefix="consent-scale-"))
    try:
        paths = []
        for i, w in enumerate((base, large)):
            d = workdir / f"m{i}"
            d.mkdir()
            p = w.write_mapping(d)
            paths.append(p)
            result.yaml_bytes.append(p.stat().st_size)
            result.load_s.append(_median_time(lambda p=p: load_mapping(str(p)), 3))
            result.compile_s.append(_median_time(lambda w=w: compile(w.mapping), 5))
            out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(p)], capture_output=True, text=True,
                                 check=True, cwd=os.getcwd())
            before, after, _ = json.loads(out.stdout)
            result.rss_before_mb.append(before)
            result.rss_after_mb.append(after)
        log("  measured load, compile, resident memory")
        sets = (base, large, large_full_consent)
        _in_process(sets, (paths[0], paths[1], paths[1]), result, seconds, rounds)
        log("  measured in-process decision cost")
        asyncio.run(_grpc(sets, (paths[0], paths[1]), workdir, result, seconds, rounds))
        log("  measured gRPC DecideBatch, sidecar memory and reload")
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _shape(w: Workload) -> str:
    return f"{len(w.mapping.categories)} x {len(w.mapping.known_destinations()):,}"


def format_result(r: ScaleResult) -> str:
    a, b = r.names
    head = f"{'mapping scale':<52} {a:>14} {b:>14} {'ratio':>7}"
    out = [head, "-" * len(head)]

    def line(label: str, x: float | None, y: float | None, fmt: str, ratio: bool = True) -> None:
        rx = "-" if x is None else format(x, fmt)
        ry = "-" if y is None else format(y, fmt)
        rr = f"{y / x:.2f}" if ratio and x and y is not None else ""
        out.append(f"{label:<52} {rx:>14} {ry:>14} {rr:>7}")

    line("mapping file (KB)", r.yaml_bytes[0] / 1024, r.yaml_bytes[1] / 1024, ",.0f")
    line("load: YAML parse + validate (s)", r.load_s[0], r.load_s[1], ".3f")
    line("compile: Index (s)", r.compile_s[0], r.compile_s[1], ".3f")
    line("reload in a running sidecar, rewrite -> answering (s)", None, r.reload_s, ".2f", ratio=False)
    line("RSS, fresh process with the sidecar imported (MB)", r.rss_before_mb[0], r.rss_before_mb[1], ".1f")
    line("RSS, after load + compile (MB)", r.rss_after_mb[0], r.rss_after_mb[1], ".1f")
    if len(r.sidecar_rss_mb) == 2:
        line("RSS, running sidecar after the gRPC rows (MB)", r.sidecar_rss_mb[0], r.sidecar_rss_mb[1], ".1f")
    out.append("")
    c0, c1, c2 = r.columns
    head2 = f"{'decision cost, medians (µs/event; events/s)':<52} {c0:>12} {c1:>20} {'ratio':>6} {c2:>21} {'ratio':>6}"
    out += [head2, "-" * len(head2)]
    for name, (xs, ys, zs) in r.cost.items():
        if not xs or not ys or not zs:
            continue
        ry = statistics.median([y / x for x, y in zip(xs, ys, strict=False) if x])
        rz = statistics.median([z / x for x, z in zip(xs, zs, strict=False) if x])
        out.append(
            f"{name:<52} {statistics.median(xs):>12,.2f} {statistics.median(ys):>20,.2f} {ry:>6.2f} "
            f"{statistics.median(zs):>21,.2f} {rz:>6.2f}"
        )
    return "\n".join(out)
