"""Mapping-size limits: what a too-large mapping costs to reject, and what a maximal one costs to reload.

`python -m bench.bench_limits [rss|reload|all]` (not part of `make test` nor of `python -m bench`):

- rss: `consent-sidecar check` on a generated mapping of 100,000 categories (2 destinations each,
  from a pool of 1,000; ~7 MB), and on a maximal valid one (1,000 categories, 100,000 distinct
  destinations of ~150 bytes; just under 16 MiB): wall time, exit code and the child's peak
  resident memory (`wait4`'s ru_maxrss).
- reload: `consent-sidecar serve` on the maximal mapping (pinned to core 0; this process on
  core 1). One Decide at a time, paced every 2 ms, over a unix socket; the mapping is rewritten
  (a category renamed) `--reloads` times, each waiting until Decide answers with the new
  generation. Latencies of Decide calls made while a reload was in progress (write -> new
  generation) are compared with those of a quiet window of the same length before it.
- admin: the same with `--admin-listen`, on a mapping as large in destinations (1,000
  categories, 100,000 distinct ids) but with short ids (~1.7 MiB, so each write's own reads
  stay short): `--writes` owner UpdateCategory calls (a rename of one category), one at a
  time, each validating, rendering, compiling and diffing the whole mapping; Decide latencies
  while a write runs against those of the 2.5 s before it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
from consent.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc
from google.protobuf import field_mask_pb2

from bench.bench_grpc import _pinned

__all__ = ["main", "many_categories", "maximal_mapping"]

PACE_S = 0.002


def many_categories(path: Path, n: int = 100_000, pool: int = 1_000) -> Path:
    """`n` categories of 2 destinations each from a pool of `pool`: valid but for the category limit."""
    with path.open("w", encoding="utf-8") as f:
        f.write("version: 1\ncategories:\n")
        for i in range(n):
            dests = f"[d{i % pool}, d{(i * 7 + 1) % pool}]"
            f.write(f"  - id: C{i:06d}\n    name: Category {i}\n    destinations: {dests}\n")
    return path


def maximal_mapping(path: Path, categories: int = 1_000, destinations: int = 100_000, pad: int = 140,
                    name_suffix: str = "") -> Path:
    """The largest mapping the default limits accept: every destination distinct, ids of ~150 bytes, < 16 MiB."""
    per = destinations // categories
    with path.open("w", encoding="utf-8") as f:
        f.write("version: 1\ncategories:\n")
        for i in range(categories):
            f.write(f"  - id: C{i:04d}\n    name: Category {i}{name_suffix if i == 0 else ''}\n    destinations:\n")
            for j in range(per):
                f.write(f"      - dest-{i * per + j:06d}-{'x' * pad}\n")
    return path


def _cli() -> str:
    cli = Path(sys.executable).parent / "consent-sidecar"
    return str(cli) if cli.exists() else "consent-sidecar"


def check_rss(path: Path) -> tuple[int, float, float]:
    """(exit code, seconds, peak RSS in MB) of `consent-sidecar check path`."""
    t0 = time.monotonic()
    process = subprocess.Popen([_cli(), "check", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.stderr is not None
    process.stderr.close()
    return process.returncode, time.monotonic() - t0, usage.ru_maxrss / 1024


def run_rss(workdir: Path) -> None:
    print("(rss) consent-sidecar check: exit code, wall time, peak resident memory of the child")
    for name, build in (("100,000 categories", many_categories), ("maximal valid", maximal_mapping)):
        path = build(workdir / f"{name.split()[0].replace(',', '')}.yaml")
        code, seconds, rss = check_rss(path)
        print(f"  {name:<20} {path.stat().st_size / 2**20:6.1f} MiB  exit {code}  {seconds:6.2f} s  {rss:8.0f} MB")


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class _Window:
    latencies_ms: list[float]
    seconds: float  # how long the window was open, in all


async def _paced(stub: decision_pb2_grpc.DecisionServiceStub, request: decision_pb2.DecideRequest,
                 stop: asyncio.Event, out: list[tuple[float, float, int]]) -> None:
    """Decide every PACE_S until `stop`: (start time, latency ms, generation) per call."""
    next_at = time.perf_counter()
    while not stop.is_set():
        t0 = time.perf_counter()
        response = await stub.Decide(request, timeout=30)
        out.append((t0, (time.perf_counter() - t0) * 1000, response.policy.generation))
        next_at += PACE_S
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


async def _reloads(path: Path, sock: str, reloads: int) -> tuple[_Window, _Window, list[float]]:
    async with grpc.aio.insecure_channel(sock) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        deadline = time.monotonic() + 120
        while True:
            try:
                first = await stub.Decide(decision_pb2.DecideRequest(destinations=["probe"]), timeout=2)
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the sidecar did not answer within 120 s") from None
                await asyncio.sleep(0.2)
        ids = [f"dest-{k:06d}-{'x' * 140}" for k in range(0, 100_000, 5_000)]
        request = decision_pb2.DecideRequest(
            consent=decision_pb2.Consent(category_preferences={"C0000": True, "C0001": False, "C0500": True}),
            destinations=ids,
        )
        samples: list[tuple[float, float, int]] = []
        stop = asyncio.Event()
        load = asyncio.create_task(_paced(stub, request, stop, samples))
        generation = first.policy.generation
        busy: list[tuple[float, float]] = []
        reload_s: list[float] = []
        await asyncio.sleep(2)  # warm
        for k in range(reloads):
            await asyncio.sleep(3)  # a quiet window before each reload
            generation += 1
            t0 = time.perf_counter()
            await asyncio.to_thread(maximal_mapping, path, name_suffix=f" v{k + 1}")
            while not samples or samples[-1][2] < generation:
                await asyncio.sleep(0.01)
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError("a reload took over 120 s")
            busy.append((t0, samples[-1][0]))
            reload_s.append(time.perf_counter() - t0)
        stop.set()
        await load
    during = [lat for (t, lat, _) in samples if any(a <= t <= b for a, b in busy)]
    quiet = [lat for (t, lat, _) in samples if any(a - 2.5 <= t < a for a, _ in busy)]  # the 2.5 s before each
    return (_Window(quiet, 0.0), _Window(during, sum(b - a for a, b in busy)), reload_s)


async def _admin_writes(sock: str, admin: str, writes: int, token: str) -> tuple[_Window, _Window, list[float]]:
    async with grpc.aio.insecure_channel(sock) as channel, grpc.aio.insecure_channel(admin) as admin_channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        admin_stub = admin_pb2_grpc.AdminServiceStub(admin_channel)
        await asyncio.wait_for(channel.channel_ready(), 300)
        await asyncio.wait_for(admin_channel.channel_ready(), 300)
        request = decision_pb2.DecideRequest(
            consent=decision_pb2.Consent(category_preferences={"C0000": True, "C0001": False, "C0500": True}),
            destinations=[f"dest-{k:06d}-" for k in range(0, 100_000, 5_000)],
        )
        samples: list[tuple[float, float, int]] = []
        stop = asyncio.Event()
        load = asyncio.create_task(_paced(stub, request, stop, samples))
        busy: list[tuple[float, float]] = []
        write_s: list[float] = []
        await asyncio.sleep(2)  # warm
        mask = field_mask_pb2.FieldMask(paths=["name"])
        for k in range(writes):
            await asyncio.sleep(3)  # a quiet window before each write
            t0 = time.perf_counter()
            await admin_stub.UpdateCategory(admin_pb2.UpdateCategoryRequest(
                category_id="C0000", category=admin_pb2.Category(name=f"Category 0 v{k + 1}"), update_mask=mask),
                metadata=(("authorization", f"Bearer {token}"),), timeout=300)
            busy.append((t0, time.perf_counter()))
            write_s.append(time.perf_counter() - t0)
        stop.set()
        await load
    during = [lat for (t, lat, _) in samples if any(a <= t <= b for a, b in busy)]
    quiet = [lat for (t, lat, _) in samples if any(a - 2.5 <= t < a for a, _ in busy)]
    return (_Window(quiet, 0.0), _Window(during, sum(b - a for a, b in busy)), write_s)


def run_admin(workdir: Path, writes: int) -> None:
    path = maximal_mapping(workdir / "wide.yaml", pad=0)
    token = "bench-limits-owner"
    principals = workdir / "principals.yaml"
    digest = hashlib.sha256(token.encode()).hexdigest()
    principals.write_text(f"principals:\n  - id: owner\n    role: owner\n    token_sha256: {digest}\n")
    sock, admin = f"unix:{workdir}/d.sock", f"unix:{workdir}/a.sock"
    with (workdir / "serve-admin.log").open("wb") as out:
        argv = [_cli(), "serve", "--mappings", str(path), "--listen", sock, "--admin-listen", admin,
                "--principals", str(principals), "--audit-db", str(workdir / "audit.db"), "--log-level", "warning"]
        process = subprocess.Popen(_pinned(argv, 0), stdout=out, stderr=subprocess.STDOUT)
    try:
        quiet, during, write_s = asyncio.run(_admin_writes(sock, admin, writes, token))
    finally:
        process.terminate()
        process.wait(20)
    print(f"(admin) Decide (20 destinations, one call every {PACE_S * 1000:.0f} ms) while an owner renames a "
          f"category of a 100,000-destination mapping ({path.stat().st_size / 2**20:.1f} MiB); {writes} writes")
    print(f"  write time (UpdateCategory, answered): median {statistics.median(write_s):.2f} s, "
          f"max {max(write_s):.2f} s")
    for name, w in (("quiet", quiet), ("during write", during)):
        lat = w.latencies_ms
        print(f"  {name:<14} calls {len(lat):6d}  p50 {_percentile(lat, 0.5):7.2f} ms  "
              f"p99 {_percentile(lat, 0.99):7.2f} ms  max {max(lat):8.2f} ms  "
              f"over 100 ms {sum(1 for x in lat if x > 100)}")


def run_reload(workdir: Path, reloads: int) -> None:
    path = maximal_mapping(workdir / "maximal.yaml")
    sock = f"unix:{workdir}/d.sock"
    log = workdir / "serve.log"
    with log.open("wb") as out:
        argv = [_cli(), "serve", "--mappings", str(path), "--listen", sock, "--log-level", "warning"]
        process = subprocess.Popen(_pinned(argv, 0), stdout=out, stderr=subprocess.STDOUT)
    try:
        quiet, during, reload_s = asyncio.run(_reloads(path, sock, reloads))
    finally:
        process.terminate()
        process.wait(20)
    print(f"(reload) Decide (20 destinations, one call every {PACE_S * 1000:.0f} ms) while the maximal mapping "
          f"({path.stat().st_size / 2**20:.1f} MiB) reloads; {reloads} reloads")
    print(f"  reload time (write -> new generation answering): median {statistics.median(reload_s):.2f} s, "
          f"max {max(reload_s):.2f} s")
    for name, w in (("quiet", quiet), ("during reload", during)):
        lat = w.latencies_ms
        print(f"  {name:<14} calls {len(lat):6d}  p50 {_percentile(lat, 0.5):7.2f} ms  "
              f"p99 {_percentile(lat, 0.99):7.2f} ms  max {max(lat):8.2f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_limits", description=__doc__.splitlines()[0])
    p.add_argument("part", nargs="?", choices=("rss", "reload", "admin", "all"), default="all")
    p.add_argument("--reloads", type=int, default=5)
    p.add_argument("--writes", type=int, default=5)
    ns = p.parse_args(argv)
    if sys.platform.startswith("linux") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory(prefix="consent-bench-limits-") as d:
        workdir = Path(d)
        if ns.part in ("rss", "all"):
            run_rss(workdir)
        if ns.part in ("reload", "all"):
            run_reload(workdir, ns.reloads)
        if ns.part in ("admin", "all"):
            run_admin(workdir, ns.writes)
    print(f"(this process: peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
