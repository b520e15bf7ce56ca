"""Prometheus metrics: their definitions, the hot path's cheap tallies, multiprocess mode and the endpoint.

The decision hot path never calls prometheus_client. It adds to plain Python counters — one
dict increment per answer served, keyed by the memoised answer's precomputed `Tally` — and
`Recorder.flush` moves the sums into the metrics about once a second (and on shutdown). So a
memo hit costs the same whether it blocked one destination or twenty, and counting shadow
would-block outcomes costs nothing per decision beyond that one increment.

With `--workers`, every process writes its own files under one per-run directory
(`RunDirectory`: created by the parent, mode 0700, inside an operator's
PROMETHEUS_MULTIPROC_DIR, which is used and never deleted, or the temporary directory; removed
at exit) and the parent's endpoint (`endpoint`) aggregates them; gauges say how (`liveall`:
one series per live process, so each worker reports its own generation).
Label values are bounded by the mapping (outcomes, reasons, known category and destination
ids): nothing a client sends becomes a label. Never logs, never reads event content.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from consent_core.index import Decision, Reason
from consent_core.memo import MemoStats
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client import values as prometheus_values

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "MULTIPROC_ENV",
    "RPC_BUCKETS",
    "RUN_DIR_PREFIX",
    "MemoSource",
    "Metrics",
    "Recorder",
    "RunDirectory",
    "Tally",
    "enable_multiprocess",
    "mark_process_dead",
    "multiprocess_registry",
    "tally",
]

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# Seconds inside the handler (validation, decision, response), not gRPC's own transport time.
RPC_BUCKETS: Final = (
    0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)
BATCH_SIZE_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000)
METHODS: Final = ("Decide", "DecideBatch", "DecideStream")

_OUTCOMES: Final = ("blocked", "allowed")  # indexed by Decision.allowed


def _slot(reason: Reason, allowed: bool) -> int:
    return int(reason) * 2 + int(allowed)


_SLOTS: Final = tuple((_OUTCOMES[s & 1], Reason(s >> 1).name.lower()) for s in range(2 * (max(Reason) + 1)))


@dataclass(eq=False, frozen=True, slots=True)
class Tally:
    """What one answer adds to the decision metrics each time it is served (hashed by identity).

    reasons: (slot, count) pairs, slot = reason * 2 + allowed.
    shadow: (category, destination, count): the destination was allowed and enforcing the shadow
    category would have blocked it (the destination is the mapping's id, instances folded in).
    """

    reasons: tuple[tuple[int, int], ...]
    shadow: tuple[tuple[str, str, int], ...] = ()


def tally(decisions: Iterable[Decision]) -> Tally:
    """The Tally of one answer's explained decisions (after `integrations`)."""
    reasons: dict[int, int] = {}
    shadow: dict[tuple[str, str], int] = {}
    for d in decisions:
        slot = _slot(d.reason, d.allowed)
        reasons[slot] = reasons.get(slot, 0) + 1
        if d.shadow_missing_categories and d.allowed:
            base = d.destination.split("/", 1)[0]
            for c in d.shadow_missing_categories:
                shadow[c, base] = shadow.get((c, base), 0) + 1
    return Tally(tuple(reasons.items()), tuple((c, d, n) for (c, d), n in shadow.items()))


STORE_APPLY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every consent_sidecar_* metric, registered in `registry` (a private one by default).

    In multiprocess mode (`enable_multiprocess` before this is built) values go to files and the
    registry is only a namespace: scrape `multiprocess_registry()` instead.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.registry = r
        self.decisions = Counter(
            "consent_sidecar_decisions", "Destination decisions by outcome and reason.",
            ["outcome", "reason"], registry=r,
        )
        self.decision_errors = Counter(
            "consent_sidecar_decision_errors", "Invalid decision requests (a unary error or one batch/stream entry).",
            ["method"], registry=r,
        )
        self.rpc_duration = Histogram(
            "consent_sidecar_rpc_duration_seconds",
            "Time in the DecisionService handler per RPC (stream: per message).",
            ["method"], buckets=RPC_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "consent_sidecar_batch_size", "Entries per DecideBatch request.", buckets=BATCH_SIZE_BUCKETS, registry=r,
        )
        self.policy_generation = Gauge(
            "consent_sidecar_policy_generation", "Generation of the serving policy (one series per process).",
            registry=r, multiprocess_mode="liveall",
        )
        self.policy_info = Gauge(
            "consent_sidecar_policy_info", "1 for the digest of the serving policy, 0 for earlier ones.",
            ["digest"], registry=r, multiprocess_mode="liveall",
        )
        self.reloads = Counter(
            "consent_sidecar_reloads", "Mapping reloads that published a change.", registry=r,
        )
        self.failed_reloads = Counter(
            "consent_sidecar_failed_reloads", "Mapping reloads rejected (the last good policy kept serving).",
            registry=r,
        )
        self.last_reload = Gauge(
            "consent_sidecar_last_reload_timestamp_seconds", "Unix time the serving policy was published.",
            registry=r, multiprocess_mode="livemax",
        )
        self.audit_events = Counter(
            "consent_sidecar_audit_events", "Audit events written.", registry=r,
        )
        self.shadow_would_block = Counter(
            "consent_sidecar_shadow_would_block",
            "Allowed decisions that enforcing the shadow (dry-run) category would have blocked.",
            ["category", "destination"], registry=r,
        )
        self.decision_log_dropped = Counter(
            "consent_sidecar_decision_log_dropped",
            "Sampled decision-log lines dropped (why: rate_limit, bytes or queue_full).", ["why"], registry=r,
        )
        self.decision_log_written = Counter(
            "consent_sidecar_decision_log_written", "Decision-log lines written.", registry=r,
        )
        self.workers_serving = Gauge(
            "consent_sidecar_workers_serving",
            "--workers processes up and answering (the parent's count; equal to --workers when healthy).",
            registry=r, multiprocess_mode="livemax",
        )
        self.worker_restarts = Counter(
            "consent_sidecar_worker_restarts", "--workers processes killed and replaced by the parent, by why.",
            ["reason"], registry=r,
        )
        self.memo_bytes = Gauge(
            "consent_sidecar_memo_bytes",
            "Estimated bytes held by the serving policy's memos (decisions, per-mask tables, encoded answers).",
            registry=r, multiprocess_mode="livesum",
        )
        self.memo_budget = Gauge(
            "consent_sidecar_memo_budget_bytes", "The byte budget of those memos (from --memo-bytes).",
            registry=r, multiprocess_mode="livesum",
        )
        self.memo_evictions = Counter(
            "consent_sidecar_memo_evictions", "Memo entries dropped to stay within the byte budget.", registry=r,
        )
        # The fleet store (serve --etcd-endpoints); a file-backed sidecar leaves them at 0.
        self.store_connected = Gauge(
            "consent_sidecar_store_connected", "1 while the fleet store (etcd) answers, 0 while it does not.",
            registry=r, multiprocess_mode="liveall",
        )
        self.store_revision_lag = Gauge(
            "consent_sidecar_store_revision_lag",
            "Document revisions etcd holds beyond the one serving (0 when caught up).",
            registry=r, multiprocess_mode="liveall",
        )
        self.store_apply_seconds = Histogram(
            "consent_sidecar_store_apply_seconds",
            "Time from seeing a document revision in etcd to serving it (audit check, validate, compile, swap).",
            buckets=STORE_APPLY_BUCKETS, registry=r,
        )
        self._digest: str | None = None
        self._lock = threading.Lock()

    def policy_published(self, generation: int, digest: str, published_at: float) -> None:
        """Sets the policy gauges (a PolicyStore listener calls this on every publish)."""
        with self._lock:
            if self._digest is not None and self._digest != digest:
                self.policy_info.labels(self._digest).set(0)  # labels cannot be removed in multiprocess mode
            self._digest = digest
            self.policy_info.labels(digest).set(1)
            self.policy_generation.set(generation)
            self.last_reload.set(published_at)


class _Hist:
    """Bucket counts of one histogram child, added to in plain Python and flushed in bulk."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any, bounds: tuple[float, ...]) -> None:
        self.child = child
        self.bounds = (*bounds, float("inf"))
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        counts, total = self.counts, self.total
        if not any(counts):
            return
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        # prometheus_client keeps non-cumulative per-bucket values and a sum (Histogram.observe adds
        # 1 to the bucket and the value to the sum): adding n at once is the same as n observations.
        buckets = self.child._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
        self.child._sum.inc(total)


MemoSource = Callable[[], list[tuple[object, MemoStats]]]
"""What holds memos, as (owner, its stats) pairs: the owner (a compiled index, a snapshot's served
answers) identifies whose cumulative evictions they are; a new owner starts from zero."""


class Recorder:
    """The hot path's side of the metrics: cheap adds now, `flush` into prometheus_client later.

    Single-threaded by design (the event loop adds and flushes); `flush` from another thread
    only under the caller's own exclusion. `memo_sources` are read at each flush.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.pending: dict[Tally, int] = {}
        # Decisions counted by slot (reason * 2 + allowed) without a Tally: the native DecideBatch's counts.
        self.slots = [0] * len(_SLOTS)
        self.rpc = {m: _Hist(metrics.rpc_duration.labels(m), RPC_BUCKETS) for m in METHODS}
        self.batch = _Hist(metrics.batch_size, tuple(float(b) for b in BATCH_SIZE_BUCKETS))
        self.errors = dict.fromkeys(METHODS, 0)
        self._decisions: dict[int, Any] = {}  # slot -> counter child, created on first use
        self.memo_sources: list[MemoSource] = []
        self._evictions: dict[int, tuple[object, int]] = {}  # id(owner) -> (owner, evictions counted)

    def count(self, t: Tally) -> None:
        """One answer served: its decisions are added at the next flush."""
        pending = self.pending
        pending[t] = pending.get(t, 0) + 1

    def error(self, method: str) -> None:
        self.errors[method] += 1

    def add_slots(self, counts: Sequence[int]) -> None:
        """Decisions counted by slot (reason * 2 + allowed; as many as there are slots), added at the next flush."""
        self.slots = [a + b for a, b in zip(self.slots, counts, strict=True)]

    def flush(self) -> None:
        """Moves everything added since the last flush into the prometheus metrics."""
        pending, self.pending = self.pending, {}
        slots, self.slots = self.slots, [0] * len(_SLOTS)
        if pending or any(slots):
            by_slot: dict[int, int] = {s: c for s, c in enumerate(slots) if c}
            shadow: dict[tuple[str, str], int] = {}
            for t, n in pending.items():
                for slot, c in t.reasons:
                    by_slot[slot] = by_slot.get(slot, 0) + c * n
                for cat, dest, c in t.shadow:
                    shadow[cat, dest] = shadow.get((cat, dest), 0) + c * n
            for slot, c in by_slot.items():
                child = self._decisions.get(slot)
                if child is None:
                    child = self._decisions[slot] = self.metrics.decisions.labels(*_SLOTS[slot])
                child.inc(c)
            for (cat, dest), c in shadow.items():
                self.metrics.shadow_would_block.labels(cat, dest).inc(c)
        for h in self.rpc.values():
            h.flush()
        self.batch.flush()
        for method, n in self.errors.items():
            if n:
                self.metrics.decision_errors.labels(method).inc(n)
                self.errors[method] = 0
        if self.memo_sources:
            self._flush_memos()

    def _flush_memos(self) -> None:
        owners: dict[int, tuple[object, MemoStats]] = {}
        for source in self.memo_sources:
            for owner, stats in source():
                owners[id(owner)] = (owner, stats)  # an index shared by several services counts once
        counted = self._evictions
        new = 0
        for key, (owner, stats) in owners.items():
            before = counted.get(key)
            new += stats.evictions - (before[1] if before is not None and before[0] is owner else 0)
        self._evictions = {key: (owner, stats.evictions) for key, (owner, stats) in owners.items()}
        if new > 0:
            self.metrics.memo_evictions.inc(new)
        self.metrics.memo_bytes.set(sum(stats.bytes for _, stats in owners.values()))
        self.metrics.memo_budget.set(sum(stats.budget for _, stats in owners.values()))


# -- multiprocess mode ------------------------------------------------------------------------


RUN_DIR_PREFIX: Final = "consent-sidecar-metrics-"
_LOCK: Final = ".lock"  # held (flock) by the parent for the run's lifetime: a free lock means a dead run


class RunDirectory:
    """One run's metrics directory, which the sidecar creates (0700 whatever the umask) and removes.

    `base` is the operator's PROMETHEUS_MULTIPROC_DIR (None: the temporary directory): it is
    used, never emptied or deleted. Directories of earlier runs killed before they could remove
    theirs (their lock free) are removed first; nothing else in `base` is touched.
    """

    def __init__(self, base: str | None) -> None:
        if base is not None:
            os.makedirs(base, exist_ok=True)
            _remove_dead_runs(base)
        self.path = tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=base)
        os.chmod(self.path, 0o700)  # mkdtemp asks for 0700, but the umask may have taken more away
        self._lock = os.open(os.path.join(self.path, _LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def remove(self) -> None:
        """Deletes this run's directory (never its base). Idempotent."""
        if self._lock < 0:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock)
        self._lock = -1


def _remove_dead_runs(base: str) -> None:
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            if not entry.name.startswith(RUN_DIR_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                fd = os.open(os.path.join(entry.path, _LOCK), os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue  # not one of ours, or not ours to touch
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live run holds it
            finally:
                os.close(fd)
            shutil.rmtree(entry.path, ignore_errors=True)


def enable_multiprocess(directory: str) -> None:
    """Puts this process (and children started later, through the environment) in multiprocess mode.

    Call before any `Metrics` is built, with the run's directory (`RunDirectory.path`; workers:
    the one in their environment).
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.environ[MULTIPROC_ENV] = directory
    # prometheus_client picks its value class when it is first imported, from this variable; a
    # process that imported it before the variable was set switches here (what it would have chosen).
    if not getattr(prometheus_values.ValueClass, "_multiprocess", False):
        prometheus_values.ValueClass = prometheus_values.MultiProcessValue()  # type: ignore[no-untyped-call]


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """A registry that aggregates every process's files in `directory`: what the endpoint serves."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def mark_process_dead(pid: int, directory: str) -> None:
    """Drops a dead worker's live gauges (its counters stay summed in)."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
