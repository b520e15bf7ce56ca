"""Soak: a real `serve` (admin listener, principals, audit) under valid and hostile traffic for minutes.

`python -m bench soak [--seconds N]` (default 180 s) or `python -m bench.bench_soak`. Starts
`consent-sidecar serve` on the benchmark workload's mapping in a temporary directory (pinned to
core 0 when `taskset` exists), then, all at once until the time is up:

- Decide, DecideBatch and DecideStream calls mixing valid events (half of them unique, so the
  memo keeps meeting new ones) with hostile ones: lone surrogates, duplicate keys, control and
  format characters in ids, nesting beyond the limit and far beyond it, huge numbers, events
  and messages over the limits, not JSON; invalid entries inside batches and streams;
- 2 admin writes a second by an owner: create, update, disable, delete (now and then with a
  name holding a bidi control), with a deadline on every call;
- a hand edit of the mapping file every 3 s, every fourth one broken (then fixed by the next).

Every call has a deadline: a DEADLINE_EXCEEDED is a hung call. It reports the RSS of the
sidecar's processes after the warm-up and at the end (goal: growth <= 50 MB), the p99 latency
of valid Decide calls, the status codes per kind of input (some hostile inputs get their
proper INVALID_ARGUMENT only with fixes made elsewhere; the soak reports what it got and never
stops on it), every generation seen in responses that has no POLICY_RELOADED in the trail, and
whether `consent-sidecar audit verify` accepts the chain after the sidecar stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
from consent.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc
from google.protobuf import field_mask_pb2

from bench import workload as workload_module
from bench.soak_trace import Trace
from bench.workload import Workload

__all__ = ["SoakReport", "format_report", "main", "run"]

DEADLINE = 10.0  # seconds, every call
TOKEN = "soak-owner-token"
OWNER = (("authorization", f"Bearer {TOKEN}"),)
MARKER = "soak-hand-"  # the destination a hand edit renames
Req = decision_pb2.DecideRequest


@dataclass
class SoakReport:
    seconds: float
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0
    decide_ms: list[float] = field(default_factory=list)  # valid Decide calls, client-side
    decide_starts: list[float] = field(default_factory=list)  # each one's start, seconds on the trace's clock
    trace: Trace = field(default_factory=Trace)
    codes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    entry_errors: Counter[str] = field(default_factory=Counter)  # batch/stream entries answered with `error`
    generations: dict[int, str] = field(default_factory=dict)  # seen in responses: generation -> digest
    audited: set[tuple[int, str]] = field(default_factory=set)
    hand_edits: int = 0
    verify_code: int = -1
    verify_output: str = ""
    exit_code: int | None = None

    @property
    def hung(self) -> int:
        return sum(c["DEADLINE_EXCEEDED"] for c in self.codes.values())

    @property
    def calls(self) -> int:
        return sum(sum(c.values()) for c in self.codes.values())

    @property
    def unaudited(self) -> list[int]:
        return sorted(g for g, d in self.generations.items() if (g, d) not in self.audited)


# -- hostile and valid inputs ---------------------------------------------------------------------------


def _event(n: int, preferences: dict[str, bool] | None, extra: str = "") -> bytes:
    prefs = json.dumps(preferences)
    consent = "" if preferences is None else f',"context":{{"consent":{{"categoryPreferences":{prefs}}}}}'
    return f'{{"type":"track","event":"Soak","messageId":"m-{n}"{consent}{extra}}}'.encode()


def _hostile(n: int) -> dict[str, Req]:
    """One request per kind of hostile input (raw bytes where JSON itself is the weapon); 7 variants, built once."""
    return _hostile_variant(n % 7)


@functools.lru_cache(maxsize=7)
def _hostile_variant(n: int) -> dict[str, Req]:
    deep = '{"a":' * 100 + "1" + "}" * 100
    bomb = "[" * 100_000 + "]" * 100_000
    return {
        "lone-surrogate": Req(segment_event=b'{"type":"track","context":{"consent":{"categoryPreferences":'
                                            b'{"\\ud800":true}}}}', destinations=["amplitude"]),
        "duplicate-keys": Req(segment_event=b'{"type":"track","context":{"consent":{"categoryPreferences":'
                                            b'{"C0002":true,"C0002":false}}}}', destinations=["amplitude"]),
        "control-char-id": Req(consent=decision_pb2.Consent(category_preferences={"C0002": True}),
                               destinations=[f"amp\x07litude-{n % 7}", "zero\u200bwidth"]),
        "deep-nesting": Req(segment_event=_event(n, {"C0001": True}, f',"properties":{deep}'), destinations=["x"]),
        "nesting-bomb": Req(segment_event=_event(n, None, f',"properties":{bomb}'), destinations=["x"]),
        "huge-number": Req(segment_event=_event(n, {"C0001": True}, f',"properties":{{"n":{"9" * 50_000}}}'),
                           destinations=["x"]),
        "oversized-event": Req(segment_event=_event(n, None, f',"pad":"{"x" * (1 << 20)}"'), destinations=["x"]),
        "not-json": Req(segment_event=b"\xff\xfe{not json", destinations=["x"]),
        "prefs-not-bools": Req(segment_event=b'{"context":{"consent":{"categoryPreferences":{"C0002":"yes"}}}}',
                               destinations=["x"]),
    }


def _valid(workload: Workload, n: int) -> Req:
    e = workload.events[n % len(workload.events)]
    if n % 2:  # half unique: the memo keeps meeting events it has not seen
        return Req(segment_event=_event(n, e.preferences), destinations=list(e.destinations))
    request = Req(destinations=list(e.destinations))
    if e.preferences is not None:
        request.consent.category_preferences.update(e.preferences)
    return request


# -- the sidecar --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "consent-sidecar"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "consent_sidecar"]


def _rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children (workers), in MB."""
    total, pids = 0, [pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
    for p in pids:
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


@contextlib.contextmanager
def _sidecar(
    workdir: Path, mapping: Path, decision: str, admin: str, workers: int, log_level: str = "warning",
    asyncio_debug: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    principals = workdir / "principals.yaml"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    principals.write_text(f"principals:\n  - id: soak-owner\n    role: owner\n    token_sha256: {digest}\n")
    argv = [*_cli(), "serve", "--mappings", str(mapping), "--listen", decision, "--admin-listen", admin,
            "--principals", str(principals), "--audit-db", str(workdir / "audit.db"), "--workers", str(workers),
            "--log-level", log_level, "--log-format", "json", "--grace-period", "5"]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        argv = ["taskset", "-c", "0", *argv]
    with (workdir / "sidecar.log").open("wb") as log:
        # asyncio's debug mode logs every callback that holds the loop over 100 ms (and costs some speed).
        env = {**os.environ, "PYTHONASYNCIODEBUG": "1"} if asyncio_debug else None
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- the load ------------------------------------------------------------------------------------------


class _Soak:
    def __init__(self, report: SoakReport, workload: Workload, decision: grpc.aio.Channel, admin: grpc.aio.Channel,
                 mapping: Path) -> None:
        self.report = report
        self.workload = workload
        self.stub = decision_pb2_grpc.DecisionServiceStub(decision)  # type: ignore[no-untyped-call]
        self.admin = admin_pb2_grpc.AdminServiceStub(admin)  # type: ignore[no-untyped-call]
        self.mapping = mapping
        self.stop = False
        self.n = 0

    def _seen(self, policy: decision_pb2.PolicyVersion) -> None:
        if policy.generation:
            self.report.generations[policy.generation] = policy.digest

    async def _call(self, kind: str, call: Awaitable[object]) -> object | None:
        """Awaits one call (already started), counting its status under `kind` (and its span, but for valid Decide)."""
        trace = self.report.trace
        start = trace.now()
        try:
            result = await call
        except grpc.aio.AioRpcError as e:
            self.report.codes[kind][e.code().name] += 1
            return None
        finally:
            if kind != "valid/Decide":  # those are the probes themselves, kept in decide_ms
                trace.add(start, kind)
        self.report.codes[kind]["OK"] += 1
        return result

    async def decide(self) -> None:
        while not self.stop:
            self.n += 1
            n = self.n
            if n % 4:  # three valid calls for every hostile one
                request = _valid(self.workload, n)
                t0 = time.perf_counter()
                started = self.report.trace.now()
                self.report.trace.outstanding[n] = started
                try:
                    r = await self._call("valid/Decide", self.stub.Decide(request, timeout=DEADLINE))
                finally:
                    del self.report.trace.outstanding[n]
                if isinstance(r, decision_pb2.DecideResponse):
                    self.report.decide_ms.append((time.perf_counter() - t0) * 1000)
                    self.report.decide_starts.append(started)
                    self._seen(r.policy)
                continue
            kinds = _hostile(n)
            kind = list(kinds)[(n // 4) % len(kinds)]
            await self._call(f"{kind}/Decide", self.stub.Decide(kinds[kind], timeout=DEADLINE))

    async def batch(self) -> None:
        while not self.stop:
            self.n += 1
            n = self.n
            hostile = [r for k, r in _hostile(n).items() if k not in ("oversized-event", "nesting-bomb")]
            entries = [_valid(self.workload, n * 50 + i) for i in range(40)] + hostile
            r = await self._call("mixed/DecideBatch", self.stub.DecideBatch(
                decision_pb2.DecideBatchRequest(requests=entries), timeout=DEADLINE))
            if isinstance(r, decision_pb2.DecideBatchResponse):
                self._seen(r.policy)
                self.report.entry_errors["DecideBatch"] += sum(1 for x in r.responses if x.error)
            if n % 20 == 0:  # a batch over the 4 MiB message limit
                big = [Req(segment_event=_event(i, None, f',"pad":"{"y" * 900_000}"'), destinations=["x"])
                       for i in range(5)]
                await self._call("oversized-message/DecideBatch", self.stub.DecideBatch(
                    decision_pb2.DecideBatchRequest(requests=big), timeout=DEADLINE))

    async def stream(self) -> None:
        while not self.stop:
            self.n += 1
            n = self.n
            hostile = list(_hostile(n).values())
            messages = [_valid(self.workload, n * 30 + i) if i % 5 else hostile[i // 5 % len(hostile)]
                        for i in range(30)]
            call = self.stub.DecideStream(iter(messages), timeout=DEADLINE * 3)
            start = self.report.trace.now()
            try:
                async for r in call:
                    self._seen(r.policy)
                    if r.error:
                        self.report.entry_errors["DecideStream"] += 1
                self.report.codes["mixed/DecideStream"]["OK"] += 1
            except grpc.aio.AioRpcError as e:
                self.report.codes["mixed/DecideStream"][e.code().name] += 1
            self.report.trace.add(start, "mixed/DecideStream")

    async def writes(self) -> None:
        """2 admin writes a second: create, update, disable, delete one category after another."""
        k = 0
        while not self.stop:
            k += 1
            cid, name = f"Soak{k % 1000:03d}", f"Soak category {k}" if k % 10 else f"Soak \u202e{k}"
            category = admin_pb2.Category(id=cid, name=name, destinations=[f"soak-dest-{k}", "amplitude"])
            changed = admin_pb2.Category(destinations=[f"soak-dest-{k}", "mixpanel"])
            mask = field_mask_pb2.FieldMask(paths=["destinations"])
            steps = (
                ("admin/CreateCategory", "CreateCategory", admin_pb2.CreateCategoryRequest(category=category)),
                ("admin/UpdateCategory", "UpdateCategory",
                 admin_pb2.UpdateCategoryRequest(category_id=cid, category=changed, update_mask=mask)),
                ("admin/DisableCategory", "DisableCategory",
                 admin_pb2.DisableCategoryRequest(category_id=cid, confirm_name=name)),
                ("admin/DeleteCategory", "DeleteCategory",
                 admin_pb2.DeleteCategoryRequest(category_id=cid, confirm_name=name)),
            )
            for kind, rpc, request in steps:
                if self.stop:
                    return
                await self._call(kind, getattr(self.admin, rpc)(request, metadata=OWNER, timeout=DEADLINE))
                await asyncio.sleep(0.5)

    async def hand_edits(self) -> None:
        """A hand edit every 3 s (temp file + rename), every fourth one broken (the next one fixes it)."""
        while not self.stop:
            await asyncio.sleep(3)
            self.report.hand_edits += 1
            k = self.report.hand_edits
            text = self.mapping.read_text(encoding="utf-8")
            text = re.sub(r"#? ?broken: \[\]\n", "", text)
            text = re.sub(rf"{MARKER}\d+", f"{MARKER}{k}", text)
            if k % 4 == 0:
                text += "broken: []\n"  # an unknown key: rejected, the last good policy keeps serving
            tmp = self.mapping.with_name(f".{self.mapping.name}.soak")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.mapping)
            self.report.trace.add(self.report.trace.now(), "hand-edit" + (" (broken)" if k % 4 == 0 else ""))

    async def audited(self) -> None:
        """Every (generation, digest) the trail's POLICY_RELOADED events name."""
        token = ""
        pattern = re.compile(r"generation (\d+) digest ([0-9a-f]{64})")
        while True:
            page = await self.admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(
                page_size=1000, page_token=token, action=admin_pb2.AUDIT_ACTION_POLICY_RELOADED),
                metadata=OWNER, timeout=DEADLINE)
            for event in page.events:
                if m := pattern.search(event.detail):
                    self.report.audited.add((int(m.group(1)), m.group(2)))
            token = page.next_page_token
            if not token:
                return


async def _run(workload: Workload, seconds: float, warmup: float, workers: int, keep: Path | None,
               log: Callable[[str], None], trace: bool, dump_after_ms: float | None,
               asyncio_debug: bool = False) -> SoakReport:
    report = SoakReport(seconds)
    report.trace.dump_after_ms = dump_after_ms
    workdir = Path(tempfile.mkdtemp(prefix="consent-bench-soak-"))
    try:
        mapping = workload.write_mapping(workdir)
        text = mapping.read_text(encoding="utf-8")
        mapping.write_text(text.replace("destinations: [", f"destinations: [{MARKER}0, ", 1), encoding="utf-8")
        # unix: sockets stay in the parent: with workers the traffic goes where they listen, TCP.
        decision = f"unix:{workdir}/decide.sock" if workers == 1 else f"127.0.0.1:{_free_port()}"
        admin = f"127.0.0.1:{_free_port()}"
        level = "info" if trace else "warning"
        with _sidecar(workdir, mapping, decision, admin, workers, level, asyncio_debug) as process:
            report.trace.pid = process.pid
            traced = asyncio.Event()
            async with grpc.aio.insecure_channel(decision) as dch, grpc.aio.insecure_channel(admin) as ach:
                await asyncio.wait_for(dch.channel_ready(), 60)
                await asyncio.wait_for(ach.channel_ready(), 60)
                soak = _Soak(report, workload, dch, ach, mapping)
                tasks = [asyncio.create_task(t) for t in (
                    *(soak.decide() for _ in range(6)), *(soak.batch() for _ in range(2)),
                    *(soak.stream() for _ in range(2)), soak.writes(), soak.hand_edits())]
                if trace:
                    tasks += [asyncio.create_task(report.trace.sample(traced)),
                              asyncio.create_task(report.trace.watch_stalls(traced))]
                await asyncio.sleep(warmup)
                report.rss_start_mb = report.rss_peak_mb = _rss_mb(process.pid)
                log(f"soak: warm-up done, RSS {report.rss_start_mb:.1f} MB; running {seconds:g} s")
                ends = time.monotonic() + seconds
                while (left := ends - time.monotonic()) > 0 and process.poll() is None:
                    await asyncio.sleep(min(5.0, left))
                    report.rss_peak_mb = max(report.rss_peak_mb, _rss_mb(process.pid))
                report.rss_end_mb = _rss_mb(process.pid)
                soak.stop = True
                traced.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                await soak.audited()
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                report.exit_code = await asyncio.to_thread(process.wait, 30)
        verify = await asyncio.to_thread(
            subprocess.run, [*_cli(), "audit", "verify", "--audit-db", str(workdir / "audit.db")],
            capture_output=True, text=True, timeout=120,
        )
        report.verify_code, report.verify_output = verify.returncode, (verify.stdout + verify.stderr).strip()
        if trace:
            report.trace.read_log(workdir / "sidecar.log")
        if keep is not None:
            shutil.copy(workdir / "sidecar.log", keep)
        return report
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(workload: Workload | None = None, *, seconds: float = 180.0, warmup: float = 10.0, workers: int = 1,
        keep_log: Path | None = None, log: Callable[[str], None] = lambda line: None, trace: bool = False,
        dump_after_ms: float | None = None, asyncio_debug: bool = False) -> SoakReport:
    """`trace`: record the timeline (`soak_trace`) and run the sidecar at --log-level info;
    `dump_after_ms`: with it, py-spy dumps of the sidecar while a Decide has waited that long;
    `asyncio_debug`: the sidecar in asyncio's debug mode (its slow-callback warnings in the log)."""
    return asyncio.run(_run(workload or workload_module.build(), seconds, warmup, workers, keep_log, log,
                            trace, dump_after_ms, asyncio_debug))


def format_report(r: SoakReport) -> str:
    lat = sorted(r.decide_ms)

    def p(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    growth = r.rss_end_mb - r.rss_start_mb
    lines = [
        f"soak: {r.seconds:g} s of mixed valid and hostile traffic, {r.calls:,} calls, "
        f"{sum(r.entry_errors.values()):,} batch/stream entries answered with an error",
        f"  RSS after warm-up {r.rss_start_mb:.1f} MB, at the end {r.rss_end_mb:.1f} MB: growth {growth:+.1f} MB "
        f"(goal <= 50 MB), peak {r.rss_peak_mb:.1f} MB",
        f"  valid Decide latency (client side): p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, "
        f"max {max(lat, default=float('nan')):.1f} ms over {len(lat):,} calls; "
        f"over 100 ms: {sum(1 for x in lat if x > 100):,}, over 1 s: {sum(1 for x in lat if x > 1000):,}",
        f"  hung calls (DEADLINE_EXCEEDED, {DEADLINE:g} s deadlines): {r.hung}",
        f"  generations seen in responses: {len(r.generations)}, POLICY_RELOADED in the trail: {len(r.audited)}, "
        f"seen but not audited: {r.unaudited or 0}",
        f"  hand edits: {r.hand_edits} (every fourth broken); sidecar exit code after SIGTERM: {r.exit_code}",
        f"  audit verify: exit {r.verify_code}: {r.verify_output}",
        "  status codes per kind of input:",
    ]
    for kind in sorted(r.codes):
        codes = ", ".join(f"{code} {n:,}" for code, n in r.codes[kind].most_common())
        lines.append(f"    {kind:<32} {codes}")
    if r.decide_ms:
        lines.append(f"  (median valid Decide {statistics.median(r.decide_ms):.2f} ms)")
    return "\n".join(lines)


def format_slowest(r: SoakReport, n: int) -> str:
    """The `n` slowest valid Decide calls (start on the trace's clock), each with what the trace saw then."""
    slowest = sorted(zip(r.decide_ms, r.decide_starts, strict=True), reverse=True)[:n]
    lines = [f"the {len(slowest)} slowest valid Decide calls (start: seconds since the soak began):"]
    for ms, start in slowest:
        lines.append(f"  {ms:,.1f} ms from {start:+.3f} s")
        lines += [f"      {line}" for line in r.trace.around(start, ms)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="measured seconds (default 180)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the first RSS sample (default 10)")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers (default 1)")
    parser.add_argument("--trace", action="store_true",
                        help="record the timeline (host load, CPU, calls, sidecar log) and show the slowest calls")
    parser.add_argument("--slowest", type=int, default=5, metavar="N", help="with --trace: how many (default 5)")
    parser.add_argument("--dump-stalls", type=float, default=None, metavar="MS",
                        help="with --trace: py-spy dump the sidecar while a Decide has waited MS ms")
    parser.add_argument("--asyncio-debug", action="store_true",
                        help="the sidecar in asyncio's debug mode: callbacks holding its loop > 100 ms are logged")
    parser.add_argument("--trace-json", type=Path, default=None, metavar="FILE",
                        help="with --trace: write the whole timeline here as JSON")
    parser.add_argument("--keep-log", type=Path, default=None, metavar="FILE", help="copy the sidecar's log here")
    args = parser.parse_args(argv)
    report = run(seconds=args.seconds, warmup=args.warmup, workers=args.workers, keep_log=args.keep_log,
                 log=lambda line: print(line, file=sys.stderr, flush=True), trace=args.trace,
                 dump_after_ms=args.dump_stalls, asyncio_debug=args.asyncio_debug)
    print(format_report(report))
    if args.trace:
        print(format_slowest(report, args.slowest))
        if args.trace_json is not None:
            report.trace.save(args.trace_json, list(zip(report.decide_starts, report.decide_ms, strict=True)))
    return 0 if report.hung == 0 and report.verify_code == 0 and not report.unaudited else 1


if __name__ == "__main__":
    sys.exit(main())
