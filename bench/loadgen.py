"""A DecideBatch load generator in its own process (not pinned): the workers row's fallback when h2load is missing.

    python -m bench.loadgen 127.0.0.1:50051 --batch 500 --connections 32 --in-flight 1 --seconds 1.5

Sends the workload's events as pre-encoded DecideBatch bytes over separate TCP connections and
leaves the responses undecoded; prints one JSON object: events/s, p50 per call (µs) and the
measured window's start and end (time.time()), so the caller can read server CPU over exactly it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from consent.v1 import decision_pb2

from bench import workload
from bench.bench_grpc import CHANNEL_OPTIONS, _percentile, _requests

__all__ = ["main"]


async def _run(target: str, batch: int, connections: int, in_flight: int, seconds: float, warmup: float,
               stagger: int) -> dict[str, float]:
    import grpc.aio

    requests = _requests(workload.build())
    batches = [
        decision_pb2.DecideBatchRequest(requests=requests[i : i + batch]).SerializeToString()
        for i in range(0, len(requests) - batch + 1, batch)
    ]
    channels = [
        grpc.aio.insecure_channel(target, options=[*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    state = {"stop": False, "record": False, "count": 0}
    latencies: list[int] = []

    async def worker(call: object, k: int) -> None:
        clock = time.perf_counter_ns
        while not state["stop"]:
            data = batches[k % len(batches)]
            k += stagger
            t0 = clock()
            await call(data)  # type: ignore[operator]
            if state["record"]:
                latencies.append(clock() - t0)
                state["count"] += 1

    try:
        for ch in channels:
            await ch.channel_ready()
        calls = [ch.unary_unary("/consent.v1.DecisionService/DecideBatch") for ch in channels]
        tasks = [asyncio.create_task(worker(c, i)) for i, c in enumerate(calls * in_flight)]
        await asyncio.sleep(warmup)
        state["record"] = True
        wall0, t0 = time.time(), time.perf_counter()
        await asyncio.sleep(seconds)
        count = state["count"]
        elapsed = time.perf_counter() - t0
        wall1 = time.time()
        state["stop"] = True
        await asyncio.gather(*tasks)
    finally:
        for ch in channels:
            await ch.close()
    return {
        "rate": count * batch / elapsed,
        "p50_us": _percentile(latencies, 0.5) if latencies else 0.0,
        "start": wall0,
        "end": wall1,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("target")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--in-flight", type=int, default=2)
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--warmup", type=float, default=0.3)
    p.add_argument("--stagger", type=int, default=7)
    a = p.parse_args(argv)
    result = asyncio.run(_run(a.target, a.batch, a.connections, a.in_flight, a.seconds, a.warmup, a.stagger))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
