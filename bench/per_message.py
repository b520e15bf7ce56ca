"""`python -m bench.per_message`: what one Decide call or DecideStream message costs in the handler, in-process.

Drives DecisionService's bytes handlers (no network) with the workload's requests, varying and
repeated destination lists, with and without metrics (a Recorder flushed every `--flush-every`
messages, as the server's once-a-second task would), native and pure (`consent_core.native.pure()`
around the whole configuration), beside the floor's handler work in the same round (bench/floor.py:
parse the DecideRequest, build and serialize an empty DecideResponse). Per message: the time from
one answer to the next through the stream handler's async generator (unary: one awaited call),
its mean, p50, p99 and p99.9, and the collector's runs (gc.callbacks) in that span. Rounds
alternate floor and sidecar; the table shows medians and sidecar/floor ratios of the same round.
Only ratios within one run mean anything on a shared host. Standalone; a tool for issue 16's tails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from consent.v1 import decision_pb2
from consent_core import native as native_module
from consent_core.limits import Limits

from bench import workload as workload_module
from bench.bench_grpc import _requests
from consent_sidecar.observe.metrics import Metrics, Recorder
from consent_sidecar.services import decision
from consent_sidecar.store.policy import PolicyStore

__all__ = ["main"]


class _Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()


async def _feed(messages: list[bytes]) -> AsyncIterator[bytes]:
    for m in messages:
        yield m


async def _floor_stream(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for data in source:
        decision_pb2.DecideRequest.FromString(data)  # what grpc's deserializer does for the floor
        yield decision_pb2.DecideResponse().SerializeToString()


Measure = Callable[[list[bytes]], Coroutine[Any, Any, list[float]]]


def _stream_of(handler: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]], flush: Callable[[], None] | None,
               every: int) -> Measure:
    async def measure(messages: list[bytes]) -> list[float]:
        out: list[float] = []
        clock = time.perf_counter
        t = clock()
        async for _ in handler(_feed(messages)):
            now = clock()
            out.append(now - t)
            if flush is not None and len(out) % every == 0:
                flush()  # on the server's loop too: its cost lands on the next message
                now = clock()
            t = now
        return out

    return measure


def _unary_of(call: Callable[[bytes], Coroutine[Any, Any, bytes]], flush: Callable[[], None] | None,
              every: int) -> Measure:
    async def measure(messages: list[bytes]) -> list[float]:
        out: list[float] = []
        clock = time.perf_counter
        for i, m in enumerate(messages):
            t = clock()
            await call(m)
            out.append(clock() - t)
            if flush is not None and (i + 1) % every == 0:
                flush()
        return out

    return measure


def _floor_unary(data: bytes) -> Coroutine[Any, Any, bytes]:
    async def call() -> bytes:
        decision_pb2.DecideRequest.FromString(data)
        return decision_pb2.DecideResponse().SerializeToString()

    return call()


def _run_one(measure: Measure, messages: list[bytes]) -> tuple[list[float], int]:
    collections = [0]

    def probe(phase: str, info: dict[str, Any]) -> None:
        collections[0] += phase == "stop"

    gc.callbacks.append(probe)
    try:
        lat = asyncio.run(measure(messages))
    finally:
        gc.callbacks.remove(probe)
    return lat, collections[0]


def _stats(lat: list[float]) -> tuple[float, float, float, float]:
    q = statistics.quantiles(lat, n=1000)
    return statistics.fmean(lat) * 1e6, q[499] * 1e6, q[989] * 1e6, q[998] * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.per_message", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flush-every", type=int, default=5_000, help="messages per Recorder.flush (metrics)")
    parser.add_argument("--rpc", choices=["stream", "unary"], default="stream")
    parser.add_argument("--paths", default="native,pure", help="native, pure, or both (comma-separated)")
    args = parser.parse_args(argv)
    repeated = workload_module.build()
    varying = workload_module.build_varying()
    print(f"{args.rpc}, {args.messages} messages x {args.rounds} rounds; medians; ratio = sidecar / floor of the "
          f"same round; µs per message", flush=True)
    print(f"{'configuration':<30} {'mean':>7} {'p50':>7} {'p99':>7} {'p99.9':>7}  {'ratio mean':>10} "
          f"{'ratio p99':>9} {'ratio p99.9':>11}  gc runs (floor)", flush=True)
    with tempfile.TemporaryDirectory(prefix="consent-bench-msg-") as d:
        path = repeated.write_mapping(Path(d))
        for path_name in args.paths.split(","):
            for traffic, w in (("varying", varying), ("repeated", repeated)):
                for metrics in (False, True):
                    pure = native_module.pure() if path_name == "pure" else contextlib.nullcontext()
                    with pure:
                        store = PolicyStore()
                        store.load_initial(str(path))
                        rec = Recorder(Metrics()) if metrics else None
                        service = decision.DecisionService(store, Limits(), recorder=rec)
                        service._served()  # built here: under pure(), without a native table
                        messages = [r.SerializeToString() for r in _requests(w)]
                        messages = (messages * (args.messages // len(messages) + 1))[: args.messages]
                        flush = rec.flush if rec is not None else None
                        ctx: Any = _Context()
                        every = args.flush_every
                        if args.rpc == "stream":
                            side = _stream_of(functools.partial(service.decide_stream_bytes, context=ctx), flush, every)
                            floor = _stream_of(_floor_stream, None, every)
                        else:
                            side = _unary_of(functools.partial(service.decide_bytes, context=ctx), flush, every)
                            floor = _unary_of(_floor_unary, None, every)
                        _run_one(side, messages[:2_000])  # warm
                        rows: list[tuple[tuple[float, ...], tuple[float, ...], int, int]] = []
                        for _ in range(args.rounds):
                            f_lat, f_gc = _run_one(floor, messages)
                            s_lat, s_gc = _run_one(side, messages)
                            rows.append((_stats(f_lat), _stats(s_lat), f_gc, s_gc))
                    name = f"{path_name} {traffic}{' metrics' if metrics else ''}"
                    med = [statistics.median(r[1][i] for r in rows) for i in range(4)]
                    ratio = [statistics.median(r[1][i] / r[0][i] for r in rows) for i in (0, 2, 3)]
                    gcs = statistics.median(r[3] for r in rows), statistics.median(r[2] for r in rows)
                    fl = [statistics.median(r[0][i] for r in rows) for i in range(4)]
                    print(f"{name:<30} {med[0]:7.2f} {med[1]:7.2f} {med[2]:7.2f} {med[3]:7.2f}  {ratio[0]:9.2f}x "
                          f"{ratio[1]:8.2f}x {ratio[2]:10.2f}x  {gcs[0]:.0f} ({gcs[1]:.0f})", flush=True)
                    print(f"{'  floor':<30} {fl[0]:7.2f} {fl[1]:7.2f} {fl[2]:7.2f} {fl[3]:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
