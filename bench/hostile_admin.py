"""`python -m bench.hostile_admin PART...`: the admin port, audit trail and watcher under hostile load.

The figures behind docs/reference.md "Bounded resources" (issue 14's write-path, audit, watcher
and auth findings), measured against a real `consent-sidecar serve` process over unix sockets
in a temporary directory, so the same script measures any checkout (put it first on
PYTHONPATH). Parts:

- `audit-size`: one CreateCategory with 1,000 / 4,000 / 20,000 destinations: audit database
  bytes (with its WAL) and the server's peak RSS (VmHWM), under a 4 GiB address-space limit.
- `denials`: a member's 5,000 refused writes: audit events added, and how long they took.
- `watchers`: 200 WatchAuditEvents streams from sequence 0 (that never read, or `--read`) on a
  ~1,400-event trail: how many opened, server RSS, and a paced Decide's p50/p99/max before, while
  the server works for them, and after; this checkout single-process, with `--workers N`, and
  any older checkout given by `--tree` (the A/B), in turns for `--rounds`.
- `locked`: a CreateCategory while another connection holds the audit database's write lock:
  how long Decide sees the new category before the write fails (0 = never served).
- `diskfull`: 30 CreateCategory calls with the audit database on a full tmpfs (root only):
  the generation before and after, and the events recorded.
- `hash`: read + sha256 of a 16 MiB file, the watcher's worst-case content check.

Loopback only, bounded in count and time; every server it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import os
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PARTS = ("audit-size", "denials", "watchers", "locked", "diskfull", "hash")
OWNER = (("authorization", "Bearer alice-token"),)
MEMBER = (("authorization", "Bearer bob-token"),)
MAPPING = """\
version: 1
categories:
  - id: C0001
    name: Strictly Necessary
    destinations: [amplitude]
  - id: C0002
    name: Performance
    destinations: [mixpanel, heap]
"""


MEMBERS = 20  # member{i} with token member{i}-token, besides alice and bob


def _principals() -> str:
    def line(pid: str, role: str) -> str:
        return f"  - {{id: {pid}, role: {role}, token_sha256: {hashlib.sha256(f'{pid}-token'.encode()).hexdigest()}}}\n"

    members = "".join(line(f"member{i}", "member") for i in range(MEMBERS))
    return "principals:\n" + line("alice", "owner") + line("bob", "member") + members


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    directory: Path
    decide: str
    admin: str
    db: Path

    def rss_kib(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def db_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob(self.db.name + "*") if p.is_file())

    def table_bytes(self) -> int:
        """Bytes of event text in the trail (what the database must hold, WAL and page slack aside)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            (n,) = conn.execute(
                "SELECT sum(length(actor) + length(category_id) + length(destination) + length(before_json)"
                " + length(after_json) + length(detail) + 200) FROM audit_events"
            ).fetchone()
        finally:
            conn.close()
        return int(n or 0)


def _limit_memory() -> None:
    gib = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (4 * gib, 4 * gib))


def _spawn(cmd: list[str], log_path: Path, tree: Path | None = None) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """`cmd` with its output in `log_path`; `tree`: import the sidecar from that checkout instead."""
    env = None
    if tree is not None:
        paths = [tree / "core", tree / "clients" / "python", tree]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}
    log = open(log_path, "wb")  # noqa: SIM115 - the caller closes it
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_limit_memory, env=env), log


def _mount_tmpfs(path: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=False)


@contextlib.asynccontextmanager
async def serve(
    directory: Path, *, db_dir: Path | None = None, workers: int = 1, tree: Path | None = None,
    args: tuple[str, ...] = (),
) -> AsyncIterator[Server]:
    import grpc.aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    mapping = directory / "mappings.yaml"
    if not mapping.exists():
        mapping.write_text(MAPPING)
    (directory / "principals.yaml").write_text(_principals())
    db = (db_dir or directory) / "audit.db"
    decide, admin = f"unix:{directory}/d.sock", f"unix:{directory}/a.sock"
    extra: list[str] = []
    if workers > 1:  # decisions in worker processes, which share TCP ports only
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            decide = f"127.0.0.1:{probe.getsockname()[1]}"
        extra = ["--workers", str(workers)]
    cmd = [
        sys.executable, "-c", "import sys; from consent_sidecar.cli import main; sys.exit(main())",
        "serve", "--mappings", str(mapping), "--listen", decide, "--admin-listen", admin,
        "--principals", str(directory / "principals.yaml"), "--audit-db", str(db), "--log-level", "error", *extra,
        *args,
    ]
    proc, log = _spawn(cmd, directory / "server.log", tree)
    server = Server(proc, db.parent, decide, admin, db)
    try:
        deadline = time.monotonic() + 30
        async with grpc.aio.insecure_channel(decide) as ch:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited: {(directory / 'server.log').read_text()[-2000:]}")
                try:
                    r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not become healthy in 30 s")
                await asyncio.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _admin_stub(channel: object) -> object:
    from consent.v1 import admin_pb2_grpc

    return admin_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]


async def _events(stub: object) -> int:
    from consent.v1 import admin_pb2

    n, token = 0, ""
    while True:
        r = await stub.ListAuditEvents(  # type: ignore[attr-defined]
            admin_pb2.ListAuditEventsRequest(page_size=50, page_token=token), metadata=OWNER, timeout=60
        )
        n += len(r.events)
        token = r.next_page_token
        if not token:
            return n


async def audit_size(sizes: list[int]) -> None:
    import grpc.aio
    from consent.v1 import admin_pb2

    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="hw-") as d:
            async with serve(Path(d)) as server, grpc.aio.insecure_channel(server.admin) as ch:
                stub = _admin_stub(ch)
                base_db, base_rss, base_text = server.db_bytes(), server.rss_kib("VmHWM"), server.table_bytes()
                cat = admin_pb2.Category(id="C0009", name="Big", destinations=[f"dest-{i:06d}" for i in range(n)])
                started = time.monotonic()
                try:
                    await stub.CreateCategory(  # type: ignore[attr-defined]
                        admin_pb2.CreateCategoryRequest(category=cat), metadata=OWNER, timeout=600
                    )
                    outcome = "OK"
                except grpc.aio.AioRpcError as e:
                    outcome = f"{e.code().name}: {(e.details() or '')[:80]}"
                took = time.monotonic() - started
                alive = server.proc.poll() is None
                status = await stub.GetPolicyStatus(  # type: ignore[attr-defined]
                    admin_pb2.GetPolicyStatusRequest(), metadata=OWNER, timeout=30
                ) if alive else None
                files = (server.db_bytes() - base_db) / 1e6
                text = (server.table_bytes() - base_text) / 1e6
                print(
                    f"audit-size n={n}: {outcome} in {took:.1f} s; audit db files +{files:.2f} MB (event text "
                    f"+{text:.2f} MB); peak RSS {base_rss / 1024:.0f} -> {server.rss_kib('VmHWM') / 1024:.0f} MB; "
                    f"generation {status.policy.generation if status else '?'}; server alive: {alive}",
                    flush=True,
                )


async def denials(count: int) -> None:
    import grpc.aio
    from consent.v1 import admin_pb2

    with tempfile.TemporaryDirectory(prefix="hw-") as d:
        async with serve(Path(d)) as server, grpc.aio.insecure_channel(server.admin) as ch:
            stub = _admin_stub(ch)
            before = await _events(stub)
            req = admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(id="C0009", name="x", destinations=["y"]))
            started = time.monotonic()
            sem = asyncio.Semaphore(32)

            async def one() -> None:
                async with sem:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await stub.CreateCategory(req, metadata=MEMBER, timeout=30)  # type: ignore[attr-defined]

            await asyncio.gather(*(one() for _ in range(count)))
            took = time.monotonic() - started
            after = await _events(stub)
            print(f"denials: {count} refused writes in {took:.1f} s added {after - before} audit events "
                  f"(right after the burst)", flush=True)


PROBE_EVERY = 0.002  # seconds between the probe's Decide calls (a paced caller, not a flood)


async def _probe(target: str, until: Path) -> None:
    """`decide-probe`: one Decide every PROBE_EVERY s until `until` exists; prints `start latency_ms` per call.

    `start` is time.monotonic(), the same clock in every process here, so the parent can cut
    the series at the moments it opened the streams and saw the server go quiet.
    """
    import grpc.aio
    from consent.v1 import decision_pb2, decision_pb2_grpc

    async with grpc.aio.insecure_channel(target) as ch:
        stub = decision_pb2_grpc.DecisionServiceStub(ch)  # type: ignore[no-untyped-call]
        req = decision_pb2.DecideRequest(consent=decision_pb2.Consent(category_preferences={"C0001": True}))
        for _ in range(50):
            await stub.Decide(req, timeout=10)
        print("ready", flush=True)
        out = []
        next_at = time.monotonic()
        while not until.exists():  # noqa: ASYNC240 - a stat per call, the same for every configuration
            t = time.monotonic()
            await stub.Decide(req, timeout=10)
            out.append(f"{t:.6f} {(time.monotonic() - t) * 1000:.4f}")
            next_at = max(next_at + PROBE_EVERY, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())
    print("\n".join(out), flush=True)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and all its threads (children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


@dataclass
class Phases:
    """Decide latencies (ms) of one watchers run: before the streams, while the server worked for them, after."""

    label: str
    before: list[float]
    during: list[float]
    after: list[float]
    busy: float  # seconds from opening the streams until the server went quiet
    opened: int
    refused: int
    rss: tuple[int, int]
    timeline: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (s after opening, ms)
    cpu: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (s after opening, server cores)

    def print_timeline(self, step: float = 1.0) -> None:
        """Per `step` seconds from opening the streams: Decide p50 / p99 / max and the server's cores."""
        buckets: dict[int, list[float]] = {}
        for t, ms in self.timeline:
            buckets.setdefault(int(t // step), []).append(ms)
        cores: dict[int, list[float]] = {}
        for t, c in self.cpu:
            cores.setdefault(int(t // step), []).append(c)
        for b in sorted(buckets):
            xs = buckets[b]
            c = cores.get(b)
            print(f"    {b * step:+6.1f} s  n={len(xs):4d}  p50 {_pct(xs, 0.5):6.2f}  p99 {_pct(xs, 0.99):7.2f}  "
                  f"max {max(xs):7.1f} ms  server {statistics.mean(c) if c else float('nan'):.2f} cores", flush=True)

    def row(self) -> str:
        base50, base99 = _pct(self.before, 0.5), _pct(self.before, 0.99)

        def cell(xs: list[float]) -> str:
            return f"{_pct(xs, 0.5):6.2f} /{_pct(xs, 0.99):7.2f} /{max(xs, default=float('nan')):7.1f}"

        return (
            f"{self.label:<22} {cell(self.before)} | {cell(self.during)} ({len(self.during):4d}) "
            f"x{_pct(self.during, 0.5) / base50:5.1f} /x{_pct(self.during, 0.99) / base99:5.1f} | "
            f"{cell(self.after)} x{_pct(self.after, 0.99) / base99:4.1f} | {self.busy:4.1f} s "
            f"{self.opened:3d} open {self.refused} refused, RSS {self.rss[0] / 1024:.0f}->{self.rss[1] / 1024:.0f} MB"
        )


TRAIL_SEED = "trail"  # a directory holding mappings.yaml + audit.db with the trail, built once per run


async def _build_trail(directory: Path, tree: Path | None) -> None:
    """One 1,000-destination category, then 200 small updates: a ~1,400-event trail, kept for every run."""
    import grpc.aio
    from consent.v1 import admin_pb2

    async with serve(directory, tree=tree) as server, grpc.aio.insecure_channel(server.admin) as ch:
        stub = _admin_stub(ch)
        big = admin_pb2.Category(id="C0009", name="Big", destinations=[f"dest-{i:05d}" for i in range(1000)])
        await stub.CreateCategory(admin_pb2.CreateCategoryRequest(category=big), metadata=OWNER, timeout=120)  # type: ignore[attr-defined]
        for i in range(200):
            cat = admin_pb2.Category(id="C0002", name=f"Performance {i}", destinations=["mixpanel", "heap"])
            await stub.UpdateCategory(  # type: ignore[attr-defined]
                admin_pb2.UpdateCategoryRequest(category_id="C0002", category=cat), metadata=OWNER, timeout=30
            )


async def _watchers_once(
    seed: Path, label: str, streams: int, principals: int, workers: int, tree: Path | None, read: bool,
    args: tuple[str, ...] = (), max_busy: float = 180.0,
) -> Phases:
    import grpc.aio
    from consent.v1 import admin_pb2

    with tempfile.TemporaryDirectory(prefix="hw-") as d:
        directory = Path(d)
        for name in ("mappings.yaml", "audit.db"):
            shutil.copy(seed / name, directory / name)
        async with serve(directory, workers=workers, tree=tree, args=args) as server, \
                grpc.aio.insecure_channel(server.admin) as ch:
            trail = await _events(_admin_stub(ch))
            stop_file = directory / "probe.stop"
            probe = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.hostile_admin", "decide-probe", "--target", server.decide,
                "--stop-file", str(stop_file), stdout=asyncio.subprocess.PIPE,
            )
            assert probe.stdout is not None
            await asyncio.wait_for(probe.stdout.readline(), 30)
            pid = server.proc.pid
            t0, c0 = time.monotonic(), _cpu_seconds(pid)
            await asyncio.sleep(3)  # the baseline: no streams
            idle = (_cpu_seconds(pid) - c0) / (time.monotonic() - t0)  # what the probe alone costs the server
            rss0 = server.rss_kib()
            channels = [grpc.aio.insecure_channel(server.admin, options=[("grpc.use_local_subchannel_pool", 1)])
                        for _ in range(streams)]
            who = [MEMBER] if principals == 1 else [
                (("authorization", f"Bearer member{i % MEMBERS}-token"),) for i in range(principals)
            ]
            opened_at = time.monotonic()
            cpu0 = _cpu_seconds(pid)
            calls = [
                _admin_stub(c).WatchAuditEvents(  # type: ignore[attr-defined]
                    admin_pb2.WatchAuditEventsRequest(after_sequence=0), metadata=who[i % len(who)], timeout=600
                )
                for i, c in enumerate(channels)
            ]
            received = [0]

            async def drain(call: object) -> None:
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                    async for _ in call:  # type: ignore[attr-defined]
                        received[0] += 1

            readers = [asyncio.ensure_future(drain(c)) for c in calls] if read else []
            # Busy until the server CPU is within a tenth of a core of the baseline for 0.5 s (or max_busy s pass).
            quiet_since = None
            cpu_series: list[tuple[float, float]] = []
            last_t, last_cpu = opened_at, cpu0
            while time.monotonic() - opened_at < max_busy:
                await asyncio.sleep(0.1)
                now, cpu = time.monotonic(), _cpu_seconds(pid)
                cpu_series.append((now, (cpu - last_cpu) / (now - last_t)))
                busy = (cpu - last_cpu) / (now - last_t) > idle + 0.1
                last_t, last_cpu = now, cpu
                if busy or (read and received[0] < streams * trail):
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = now
                elif now - quiet_since >= 0.5:
                    break
            quiet_at = quiet_since if quiet_since is not None else time.monotonic()
            await asyncio.sleep(3)  # the after window
            rss1 = server.rss_kib()
            stop_file.touch()
            out, _ = await asyncio.wait_for(probe.communicate(), 60)
            opened = refused = 0
            for c in calls:
                if c.done():  # type: ignore[attr-defined]
                    code = await c.code()  # type: ignore[attr-defined]
                    refused += code == grpc.StatusCode.RESOURCE_EXHAUSTED
                else:
                    opened += 1
            for c in calls:
                c.cancel()  # type: ignore[attr-defined]
            for r in readers:
                r.cancel()
            for c in channels:
                await c.close()
    series = [(float(a), float(b)) for a, b in (line.split() for line in out.decode().splitlines() if line)]
    before = [ms for t, ms in series if opened_at - 3 <= t < opened_at]
    during = [ms for t, ms in series if opened_at <= t < quiet_at]
    after = [ms for t, ms in series if quiet_at + 0.5 <= t]
    phases = Phases(label, before, during, after, quiet_at - opened_at, opened, refused, (rss0, rss1))
    phases.timeline = [(t - opened_at, ms) for t, ms in series]
    phases.cpu = [(t - opened_at, c) for t, c in cpu_series]
    return phases


async def watchers(
    streams: int, principals: int, workers: int = 1, trees: list[Path] | None = None, rounds: int = 1,
    read: bool = False, timeline: bool = False, replay_rates: list[str] | None = None, max_busy: float = 180.0,
) -> None:
    """Decide latency before / during / after `streams` WatchAuditEvents streams catch up, per configuration.

    Configurations: this checkout single-process (its default settings, then once per
    `replay_rates` value as `--audit-replay-rate`), this checkout with `--workers` (when > 1), and
    each `trees` checkout single-process (an older commit: the A/B). Run in turns, `rounds` times.
    """
    configs: list[tuple[str, int, Path | None, tuple[str, ...]]] = [("this, 1 process", 1, None, ())]
    for rate in replay_rates or []:
        configs.append((f"this, replay {rate}/s", 1, None, ("--audit-replay-rate", rate)))
    if workers > 1:
        configs.append((f"this, --workers {workers}", workers, None, ()))
    for tree in trees or []:
        configs.append((f"{tree.name}, 1 process", 1, tree, ()))
    with tempfile.TemporaryDirectory(prefix="hw-seed-") as seed_dir:
        seed = Path(seed_dir)
        await _build_trail(seed, trees[0] if trees else None)  # the oldest tree writes a trail all can read
        print(f"watchers: {streams} streams from sequence 0 by {principals} member(s), "
              f"{'reading' if read else 'never reading'}; Decide every {PROBE_EVERY * 1000:.0f} ms from "
              f"another process. Columns: p50 / p99 / max ms before | during (calls) ratio to before "
              f"p50 / p99 | after, p99 ratio | server busy", flush=True)
        results: dict[str, list[Phases]] = {}
        for r in range(rounds):
            for label, n, tree, args in configs:
                phases = await _watchers_once(seed, label, streams, principals, n, tree, read, args, max_busy)
                results.setdefault(label, []).append(phases)
                print(f"  round {r + 1} {phases.row()}", flush=True)
                if timeline:
                    phases.print_timeline()
        if rounds > 1:
            print("  all rounds pooled:")
            for label, runs in results.items():
                pooled = Phases(
                    label, [x for p in runs for x in p.before], [x for p in runs for x in p.during],
                    [x for p in runs for x in p.after], statistics.median(p.busy for p in runs),
                    min(p.opened for p in runs), max(p.refused for p in runs),
                    (max(p.rss[0] for p in runs), max(p.rss[1] for p in runs)),
                )
                print(f"  pooled  {pooled.row()}", flush=True)


async def locked() -> None:
    import grpc.aio
    from consent.v1 import admin_pb2, decision_pb2, decision_pb2_grpc

    with tempfile.TemporaryDirectory(prefix="hw-") as d:
        async with serve(Path(d)) as server, grpc.aio.insecure_channel(server.admin) as ch, \
                grpc.aio.insecure_channel(server.decide) as dch:
            stub = _admin_stub(ch)
            decide = decision_pb2_grpc.DecisionServiceStub(dch)  # type: ignore[no-untyped-call]
            lock = sqlite3.connect(server.db, isolation_level=None, timeout=5)
            lock.execute("BEGIN IMMEDIATE")
            cat = admin_pb2.Category(id="C0009", name="New", destinations=["new-dest"])
            create = asyncio.ensure_future(
                stub.CreateCategory(admin_pb2.CreateCategoryRequest(category=cat), metadata=OWNER, timeout=120)  # type: ignore[attr-defined]
            )
            seen = 0.0
            started = time.monotonic()
            first: float | None = None
            while not create.done() and time.monotonic() - started < 90:
                r = await decide.Decide(decision_pb2.DecideRequest(), timeout=10)
                if "new-dest" in r.allowed:
                    first = first if first is not None else time.monotonic()
                    seen = time.monotonic() - first
                await asyncio.sleep(0.05)
            lock.execute("ROLLBACK")
            lock.close()
            try:
                await create
                outcome = "OK"
            except grpc.aio.AioRpcError as e:
                outcome = e.code().name
            status = await stub.GetPolicyStatus(admin_pb2.GetPolicyStatusRequest(), metadata=OWNER, timeout=30)  # type: ignore[attr-defined]
            print(f"locked: CreateCategory with the audit db write-locked -> {outcome} after "
                  f"{time.monotonic() - started:.1f} s; Decide saw the new category for {seen:.1f} s "
                  f"({'never' if first is None else 'served before audited'}); generation now "
                  f"{status.policy.generation}", flush=True)


async def diskfull(writes: int) -> None:
    import grpc.aio
    from consent.v1 import admin_pb2

    if os.geteuid() != 0:
        print("diskfull: skipped (needs root to mount a tmpfs)")
        return
    with tempfile.TemporaryDirectory(prefix="hw-") as d:
        mnt = Path(d) / "small"
        mnt.mkdir()
        _mount_tmpfs(mnt, "1m")
        try:
            async with serve(Path(d), db_dir=mnt) as server, grpc.aio.insecure_channel(server.admin) as ch:
                stub = _admin_stub(ch)
                s0 = await stub.GetPolicyStatus(admin_pb2.GetPolicyStatusRequest(), metadata=OWNER, timeout=30)  # type: ignore[attr-defined]
                events0 = await _events(stub)
                fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    while True:
                        os.write(fd, b"\0" * 512)
                except OSError:
                    pass  # full
                finally:
                    os.close(fd)
                codes: dict[str, int] = {}
                for i in range(writes):
                    cat = admin_pb2.Category(id=f"C{100 + i}", name=f"Full {i}", destinations=[f"d{i}"])
                    req = admin_pb2.CreateCategoryRequest(category=cat)
                    try:
                        await stub.CreateCategory(req, metadata=OWNER, timeout=60)  # type: ignore[attr-defined]
                        codes["OK"] = codes.get("OK", 0) + 1
                    except grpc.aio.AioRpcError as e:
                        codes[e.code().name] = codes.get(e.code().name, 0) + 1
                s1 = await stub.GetPolicyStatus(admin_pb2.GetPolicyStatusRequest(), metadata=OWNER, timeout=30)  # type: ignore[attr-defined]
                (mnt / "filler").unlink()
                events1 = await _events(stub)
                print(f"diskfull: {writes} creates with the audit db's disk full -> {codes}; generation "
                      f"{s0.policy.generation} -> {s1.policy.generation}; audit events {events0} -> {events1}",
                      flush=True)
        finally:
            _umount(mnt)


def hash_cost(size: int = 16 << 20, rounds: int = 20) -> None:
    with tempfile.NamedTemporaryFile() as f:
        f.write(os.urandom(size))
        f.flush()
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            with open(f.name, "rb") as g:
                hashlib.sha256(g.read()).hexdigest()
            times.append((time.perf_counter() - t) * 1000)
    print(f"hash: read + sha256 of {size >> 20} MiB: median {statistics.median(times):.1f} ms, "
          f"max {max(times):.1f} ms (page cache warm); at one check per second that is "
          f"{statistics.median(times) / 10:.1f}% of one core", flush=True)


@contextlib.contextmanager
def _timed(part: str) -> Iterator[None]:
    t = time.monotonic()
    yield
    print(f"  ({part}: {time.monotonic() - t:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_admin", description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", choices=[*PARTS, "decide-probe", []], metavar="|".join(PARTS))
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="1000,4000,20000", help="audit-size: destinations per create")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--principals", type=int, default=1,
                        help=f"watchers: spread the streams over this many members (at most {MEMBERS})")
    parser.add_argument("--denials", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1,
                        help="watchers: also serve --workers N (decisions in N worker processes, over TCP)")
    parser.add_argument("--tree", action="append", type=Path, default=[],
                        help="watchers: also run the server from this checkout (e.g. an older commit), in turns")
    parser.add_argument("--rounds", type=int, default=1, help="watchers: runs of each configuration, in turns")
    parser.add_argument("--read", action="store_true", help="watchers: the streams read everything (not idle)")
    parser.add_argument("--timeline", action="store_true", help="watchers: Decide latency and server CPU per second")
    parser.add_argument("--replay-rate", action="append", default=[], metavar="N",
                        help="watchers: also run this checkout with --audit-replay-rate N (0 = unpaced); repeatable")
    parser.add_argument("--max-busy", type=float, default=180.0, metavar="SECONDS",
                        help="watchers: end the 'during' window after this long even if the server is still busy")
    args = parser.parse_args(argv)
    if args.parts == ["decide-probe"]:  # the measuring child of `watchers`
        asyncio.run(_probe(args.target, Path(args.stop_file)))
        return 0
    parts = args.parts or list(PARTS)
    import consent_sidecar

    print(f"consent_sidecar from {Path(consent_sidecar.__file__).parent}", flush=True)
    for part in parts:
        with _timed(part):
            if part == "audit-size":
                asyncio.run(audit_size([int(s) for s in args.sizes.split(",")]))
            elif part == "denials":
                asyncio.run(denials(args.denials))
            elif part == "watchers":
                asyncio.run(watchers(args.streams, args.principals, args.workers, args.tree, args.rounds, args.read,
                                     args.timeline, args.replay_rate, args.max_busy))
            elif part == "locked":
                asyncio.run(locked())
            elif part == "diskfull":
                asyncio.run(diskfull(30))
            elif part == "hash":
                hash_cost()
    return 0


if __name__ == "__main__":
    sys.exit(main())
