"""Profiles the sidecar server under one kind of load with py-spy: where a Decide/Batch/Stream call goes.

    .venv/bin/python -m bench.profile batch --seconds 10 [--native] [--out /tmp/x]

Starts the sidecar pinned to core 0 (as `bench grpc` does), attaches `py-spy record` to it, drives
the load from this process (core 1) and prints the heaviest functions by self and total samples
(from py-spy's collapsed stacks). Needs py-spy (`pip install py-spy`) and usually root or
ptrace permission. A tool for development, not part of `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc.aio
from consent.v1 import decision_pb2

from bench import workload as workload_module
from bench.bench_grpc import (
    BATCH_SIZE,
    CHANNEL_OPTIONS,
    Stub,
    _free_port,
    _ready,
    _requests,
    _sidecar_argv,
    _start,
    _stream,
    _unary,
)

__all__ = ["main", "summarise"]


def summarise(collapsed: str, top: int = 30) -> str:
    """Self and inclusive sample counts per function from py-spy's `--format raw` output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for f in set(frames):
            total[f] += count
    out = [f"{samples} samples", "", f"{'self %':>7}  function"]
    out += [f"{100 * n / samples:7.1f}  {f}" for f, n in own.most_common(top)]
    out += ["", f"{'total %':>7}  function"]
    out += [f"{100 * n / samples:7.1f}  {f}" for f, n in total.most_common(top)]
    return "\n".join(out)


async def _load(kind: str, target: str, seconds: float, explain: bool) -> float:
    workload = workload_module.build()
    requests = _requests(workload)
    if explain:
        for r in requests:
            r.explain = True
    batches = [
        decision_pb2.DecideBatchRequest(requests=requests[i : i + BATCH_SIZE])
        for i in range(0, len(requests) - BATCH_SIZE + 1, BATCH_SIZE)
    ]
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = Stub(channel)  # type: ignore[no-untyped-call]
        if kind == "unary":
            sample = await _unary(stub.Decide, requests, 32, seconds, 0.5)
        elif kind == "batch":
            sample = await _unary(stub.DecideBatch, batches, 4, seconds, 0.5, BATCH_SIZE)
        else:
            sample = await _stream(stub, requests, 4, seconds, 0.5)
    return sample.rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["unary", "batch", "stream"])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--native", action="store_true", help="include C frames (grpc core, upb)")
    parser.add_argument("--explain", action="store_true", help="requests ask for explain")
    parser.add_argument("--out", default=None, help="keep the raw collapsed stacks here")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if os.path.exists("/proc/self/status"):
        os.sched_setaffinity(0, {1})
    workdir = Path(tempfile.mkdtemp(prefix="consent-profile-"))
    try:
        workload = workload_module.build()
        mappings = workload.write_mapping(workdir)
        addrs = (f"unix:{workdir}/sidecar.sock", f"127.0.0.1:{_free_port()}")
        raw = Path(args.out or workdir / "stacks.txt")
        with _start("sidecar", _sidecar_argv(mappings, addrs), *addrs, workdir) as server:
            asyncio.run(_ready(server))
            cmd = [spy, "record", "--pid", str(server.process.pid), "--format", "raw", "--rate", "500",
                   "--duration", str(int(args.seconds)), "--output", str(raw), "--nonblocking"]
            if args.native:
                cmd.append("--native")
            spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rate = asyncio.run(_load(args.kind, addrs[0], args.seconds, args.explain))
            spy_proc.wait(30)
        print(f"{args.kind}: {rate:,.0f} {'req' if args.kind == 'unary' else 'events'}/s while profiled")
        print(summarise(raw.read_text()))
    finally:
        if args.out is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
