"""`python -m bench.gc_pauses`: what the garbage collector costs the decision handlers, in-process.

Calls DecisionService's bytes handlers (no network) with the workload's requests, repeated
lists (the memos answer) then varying lists (every entry decided anew), and records every
collection through `gc.callbacks`: how many per generation, their total and longest pause,
beside the handlers' own latency percentiles; then again after `gc.freeze()` (everything alive
once the snapshot is compiled and served moved out of the collector's sight). Standalone;
prints one line per configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import workload as workload_module
from bench.bench_grpc import _requests
from bench.bench_scale import _Context, _service_batches

__all__ = ["main"]


def _run(name: str, service: Any, unary: list[bytes], batches: list[bytes], n: int, freeze: bool) -> str:
    loop = asyncio.new_event_loop()
    ctx: Any = _Context()
    for b in batches[:20]:  # warm: the snapshot served, its memos and tables in use
        loop.run_until_complete(service.decide_batch_bytes(b, ctx))
    gc.collect()
    if freeze:
        gc.freeze()
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started: list[float] = [0.0]

    def probe(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(probe)
    latencies: list[float] = []
    t0 = time.perf_counter()
    try:
        for i in range(n):
            s = time.perf_counter()
            loop.run_until_complete(service.decide_bytes(unary[i % len(unary)], ctx))
            latencies.append(time.perf_counter() - s)
        for i in range(n // 100):
            loop.run_until_complete(service.decide_batch_bytes(batches[i % len(batches)], ctx))
    finally:
        gc.callbacks.remove(probe)
        if freeze:
            gc.unfreeze()
        loop.close()
    elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    gens = "  ".join(
        f"gen{g} {len(p):>4} x, {sum(p) * 1e3:6.1f} ms, max {max(p, default=0) * 1e3:5.2f} ms"
        for g, p in pauses.items()
    )
    share = sum(sum(p) for p in pauses.values()) / elapsed
    return (f"{name:<9} freeze={'yes' if freeze else 'no ':<3} Decide p50 {q[49] * 1e6:6.0f} µs"
            f"  p99 {q[98] * 1e6:6.0f} µs   {gens}   gc {share:.1%} of {elapsed:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gc_pauses", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000, help="unary calls per configuration (and /100 batches)")
    args = parser.parse_args(argv)
    repeated = workload_module.build()
    varying = workload_module.build_varying()
    with tempfile.TemporaryDirectory(prefix="consent-bench-gc-") as d:
        path = repeated.write_mapping(Path(d))
        for freeze in (False, True):
            for name, w in (("repeated", repeated), ("varying", varying)):
                service, batches = _service_batches(w, path)
                unary = [r.SerializeToString() for r in _requests(w)]
                print(_run(name, service, unary, batches, args.events, freeze), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
