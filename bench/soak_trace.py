"""The soak's timeline: what else happened while its slowest Decide calls waited (`bench soak --trace`).

A slow call alone says nothing about its cause. This records, on one wall clock (the sidecar's
log timestamps use it too), every call the soak made (start, duration, kind), every 0.25 s the
host's load average, the sidecar's own CPU (utime + stime of all its threads, % of one core)
and the load generator's (its CPU and how late its own event loop woke: a stalled client
makes every call look slow), the sidecar's info log lines (reloads, admin edits, audit), and,
with `--dump-stalls MS`, a `py-spy dump` of the sidecar whenever a Decide has been waiting
longer than MS (at most one a second): the stack its threads are in during the stall.

Reading it: a Decide that waits while the sidecar's CPU is ~100% and its loop thread is busy
in a dump is the sidecar's own pause; one that waits while the sidecar's threads sit in the
run queue (schedstat's wait time: runnable, no CPU given) is the host's; one whose client lag
is as long as the call is the load generator's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["Sample", "Span", "Trace"]

SAMPLE_EVERY = 0.25  # seconds
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class Span:
    start: float  # seconds since the trace began
    ms: float
    label: str


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    load1: float
    sidecar_cpu: float  # % of one core since the previous sample
    sidecar_wait: float  # % of the interval its threads sat runnable but not running (schedstat), summed
    loop_cpu: float  # the main thread's (the event loop's) CPU, % of the interval
    loop_wait: float  # the main thread's run-queue wait, % of the interval
    client_cpu: float
    client_lag_ms: float  # how late the load generator's loop woke for this sample
    host_idle: float  # of both cores together, % (from /proc/stat): ~0 = saturated
    host_iowait: float
    host_steal: float  # time the hypervisor gave our vCPUs to someone else


def _proc_cpu_seconds(pid: int, task: int | None = None) -> float:
    """utime + stime of `pid` (all its threads; or its thread `task`), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of stat)


def _run_queue_seconds(pid: int, task: int | None = None) -> float:
    """Seconds `pid`'s threads (or its thread `task`) spent runnable, waiting for a CPU (schedstat's 2nd field)."""
    total = 0
    with contextlib.suppress(OSError):
        for t in os.listdir(f"/proc/{pid}/task") if task is None else [task]:
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[1])
    return total / 1e9


def _host_cpu() -> tuple[int, int, int, int]:
    """(total, idle, iowait, steal) jiffies of all CPUs, from /proc/stat's first line."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return (0, 0, 0, 0)
    return sum(v), v[3], v[4], v[7]


def _load1() -> float:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return float("nan")


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"  # the venv's, when the shell has not activated it
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Trace:
    pid: int = 0  # the sidecar's
    dump_after_ms: float | None = None  # py-spy dump when a Decide has waited this long
    t0: float = field(default_factory=time.time)
    spans: list[Span] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    dumps: list[tuple[float, float, str]] = field(default_factory=list)  # (t, waited ms, dump text)
    log_lines: list[tuple[float, str]] = field(default_factory=list)
    outstanding: dict[int, float] = field(default_factory=dict)  # valid Decide calls in flight: id -> start

    def now(self) -> float:
        return time.time() - self.t0

    def add(self, start: float, label: str) -> None:
        self.spans.append(Span(start, (self.now() - start) * 1000, label))

    async def sample(self, stop: asyncio.Event) -> None:
        """Every SAMPLE_EVERY seconds until `stop`: load, both processes' CPU, the client's loop lag."""
        last_t, last_s, last_c = time.monotonic(), _proc_cpu_seconds(self.pid), time.process_time()
        pid = self.pid
        last_w, last_lc, last_lw = _run_queue_seconds(pid), _proc_cpu_seconds(pid, pid), _run_queue_seconds(pid, pid)
        last_h = _host_cpu()
        while not stop.is_set():
            due = time.monotonic() + SAMPLE_EVERY
            await asyncio.sleep(SAMPLE_EVERY)
            t, c = time.monotonic(), time.process_time()
            s, w = _proc_cpu_seconds(pid), _run_queue_seconds(pid)
            lc, lw = _proc_cpu_seconds(pid, pid), _run_queue_seconds(pid, pid)
            h = _host_cpu()
            span = max(t - last_t, 1e-6) / 100  # -> percentages
            jiffies = max(h[0] - last_h[0], 1) / 100
            self.samples.append(Sample(
                self.now(), _load1(), (s - last_s) / span, (w - last_w) / span, (lc - last_lc) / span,
                (lw - last_lw) / span, (c - last_c) / span, max(0.0, (t - due) * 1000),
                (h[1] - last_h[1]) / jiffies, (h[2] - last_h[2]) / jiffies, (h[3] - last_h[3]) / jiffies))
            last_t, last_s, last_c, last_w, last_lc, last_lw, last_h = t, s, c, w, lc, lw, h

    async def watch_stalls(self, stop: asyncio.Event) -> None:
        """A `py-spy dump` of the sidecar whenever a valid Decide has waited `dump_after_ms` (one a second at most)."""
        exe = _py_spy()
        if self.dump_after_ms is None or exe is None:
            return
        last = -10.0
        while not stop.is_set():
            await asyncio.sleep(0.05)
            if not self.outstanding:
                continue
            now = self.now()
            waited = (now - min(self.outstanding.values())) * 1000
            if waited < self.dump_after_ms or now - last < 1.0:
                continue
            last = now
            proc = await asyncio.create_subprocess_exec(
                exe, "dump", "--pid", str(self.pid), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            with contextlib.suppress(asyncio.TimeoutError):
                out, _ = await asyncio.wait_for(proc.communicate(), 15)
                self.dumps.append((now, waited, out.decode(errors="replace")))
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    def read_log(self, path: Path) -> None:
        """The sidecar's JSON log lines (run it at --log-level info), on the trace's clock."""
        with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    entry = json.loads(line)
                    t = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp() - self.t0
                    extra = {k: v for k, v in entry.items() if k in ("actor", "policy_generation", "error", "edit")}
                    if entry.get("logger_name") == "asyncio":  # debug mode: "Executing <Handle ...> took 0.5 seconds"
                        extra = {}
                    self.log_lines.append((t, f"{entry['event']} {extra}" if extra else str(entry["event"])))

    def save(self, path: Path, decide: list[tuple[float, float]]) -> None:
        """The whole timeline as JSON (for a closer look than `around`): decide = (start s, ms) pairs."""
        path.write_text(json.dumps({
            "t0": self.t0, "decide": decide, "spans": [(s.start, s.ms, s.label) for s in self.spans],
            "samples": [(s.t, s.load1, s.sidecar_cpu, s.sidecar_wait, s.loop_cpu, s.loop_wait, s.client_cpu,
                         s.client_lag_ms, s.host_idle, s.host_iowait, s.host_steal) for s in self.samples],
            "log": self.log_lines, "dumps": self.dumps,
        }), encoding="utf-8")

    def around(self, start: float, ms: float, before: float = 0.5) -> list[str]:
        """What the trace holds in [start - before, start + ms]: one line per kind of thing."""
        lo, hi = start - before, start + ms / 1000
        lines = []
        samples = [s for s in self.samples if lo <= s.t <= hi + SAMPLE_EVERY]
        if samples:
            lines.append(
                "host load1 " + "/".join(f"{s.load1:.1f}" for s in samples[:12])
                + "; sidecar CPU % " + "/".join(f"{s.sidecar_cpu:.0f}" for s in samples[:12])
                + "; sidecar run-queue wait % " + "/".join(f"{s.sidecar_wait:.0f}" for s in samples[:12])
                + "; loop thread CPU % " + "/".join(f"{s.loop_cpu:.0f}" for s in samples[:12])
                + " run-queue wait % " + "/".join(f"{s.loop_wait:.0f}" for s in samples[:12])
                + "; client CPU % " + "/".join(f"{s.client_cpu:.0f}" for s in samples[:12])
                + f"; client loop lag max {max(s.client_lag_ms for s in samples):.0f} ms"
                + "; host idle/iowait/steal % " + " ".join(
                    f"{s.host_idle:.0f}/{s.host_iowait:.0f}/{s.host_steal:.0f}" for s in samples[:12]))
        overlapping = [s for s in self.spans if s.start <= hi and s.start + s.ms / 1000 >= lo]
        if overlapping:
            kinds: Counter[str] = Counter(s.label for s in overlapping)
            longest = max(overlapping, key=lambda s: s.ms)
            lines.append("calls overlapping: " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common(8))
                         + f"; longest {longest.label} {longest.ms:.0f} ms from {longest.start:+.2f} s")
        lines += [f"sidecar log {t:+.2f} s: {text}" for t, text in self.log_lines if lo <= t <= hi]
        for t, waited, dump in self.dumps:
            if lo <= t <= hi:
                lines.append(f"py-spy dump at {t:+.2f} s (a Decide waiting {waited:.0f} ms):")
                lines += ["    " + d for d in dump.splitlines() if d.strip()][:40]
        return lines
