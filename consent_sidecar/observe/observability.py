"""Wires metrics and decision logs into a running process: the shell around `metrics` and `decision_log`.

`Observability.start` builds what the config asks for — the consent_sidecar_* metrics (in
multiprocess mode when decisions run in worker processes), the /metrics endpoint (only in the
process that owns `--metrics-listen`: the parent), the hot path's `Recorder` and its flush loop,
the policy gauges (a PolicyStore listener), reload and audit counters, and the decision log —
and `aclose` flushes and stops all of it. A process without `--metrics-listen` (and not a
worker of one that has it) builds no metrics at all: the hot path then pays nothing.
Never logs payloads; never blocks the event loop (the endpoint and the log writer are threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from typing import Final

from consent_core.errors import StartupError

from consent_sidecar.audit.trail import AuditTrail
from consent_sidecar.config import ServeConfig
from consent_sidecar.observe import logs
from consent_sidecar.observe.audit_head import AuditHeadCollector
from consent_sidecar.observe.decision_log import DecisionLog
from consent_sidecar.observe.endpoint import MetricsServer, serve_metrics
from consent_sidecar.observe.metrics import (
    MULTIPROC_ENV,
    Metrics,
    Recorder,
    RunDirectory,
    enable_multiprocess,
    multiprocess_registry,
)
from consent_sidecar.store.policy import PolicyStore, Snapshot

__all__ = ["FLUSH_INTERVAL", "Observability", "ObservabilityError"]

FLUSH_INTERVAL: Final = 1.0  # seconds between moves of the hot path's tallies into the metrics

_log = logs.get_logger(__name__)


class ObservabilityError(StartupError):
    """The metrics endpoint or the decision log cannot be opened; the message names the flag."""


@dataclass
class Observability:
    """Metrics and decision log of one process; `recorder` and `decision_log` go to DecisionService."""

    metrics: Metrics | None = None
    recorder: Recorder | None = None
    decision_log: DecisionLog | None = None
    endpoint: MetricsServer | None = None
    multiproc_dir: str | None = None  # the per-run directory, in multiprocess mode
    _run_dir: RunDirectory | None = None  # the parent's: created here, removed at close
    _env_before: str | None = None  # PROMETHEUS_MULTIPROC_DIR as it was before the run's replaced it
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _store: PolicyStore | None = None
    _seen_reloads: int = 0
    _seen_failed: int = 0
    _synced: dict[int, int] = field(default_factory=dict)  # counter id -> total already added

    @classmethod
    def start(
        cls,
        config: ServeConfig,
        store: PolicyStore,
        *,
        role: str = "single",
        audit: AuditTrail | None = None,
        audit_after: int = 0,
        decision_processes: int = 1,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> Observability:
        """Builds and starts what `config` asks for. Call on the event loop, after the first load.

        role: "single" (one process does everything), "parent" (admin, audit, endpoint; workers
        decide) or "worker" (decides; writes metrics to the parent's directory, no endpoint, no
        reload or audit counters: the parent's store is the audited one). decision_processes:
        how many processes share `--decision-log-rate` (each gets its share). audit_after: audit
        events after this sequence count as written by this run.
        Raises ObservabilityError when the metrics address cannot be bound or the decision log opened.
        """
        obs = cls()
        try:
            obs._start(config, store, role, audit, audit_after, decision_processes, flush_interval)
        except BaseException:
            obs._close_sync()
            raise
        return obs

    def _start(
        self, config: ServeConfig, store: PolicyStore, role: str, audit: AuditTrail | None, audit_after: int,
        decision_processes: int, flush_interval: float,
    ) -> None:
        want_metrics = config.metrics_listen is not None
        if role == "worker":
            directory = os.environ.get(MULTIPROC_ENV)
            want_metrics = directory is not None
            if directory is not None:
                enable_multiprocess(directory)
                self.multiproc_dir = directory
        elif role == "parent" and want_metrics:
            # A directory of this run's own (files of an earlier run would be summed in), inside the
            # operator's PROMETHEUS_MULTIPROC_DIR if one is set: that one is used, never deleted.
            self._env_before = os.environ.get(MULTIPROC_ENV)
            try:
                self._run_dir = RunDirectory(self._env_before)
            except OSError as e:
                where = self._env_before or "the temporary directory"
                raise ObservabilityError(f"cannot create the metrics directory in {where}: {e.strerror or e}") from e
            enable_multiprocess(self._run_dir.path)
            self.multiproc_dir = self._run_dir.path
        if want_metrics:
            metrics = self.metrics = Metrics()
            self.recorder = Recorder(metrics)
            self._store = store
            store.add_listener(self._published)
            snap = store.current
            metrics.policy_published(snap.generation, snap.digest, snap.loaded_at.timestamp())
            if role != "worker":
                self._seen_reloads, self._seen_failed = store.reloads, store.failed_reloads
                if audit is not None:
                    self._tasks.append(asyncio.create_task(self._count_audit(audit, audit_after)))
            if config.metrics_listen is not None and role != "worker":
                registry = multiprocess_registry(self.multiproc_dir) if self.multiproc_dir else metrics.registry
                if audit is not None:  # the trail's head, read at each scrape (observe.audit_head)
                    registry.register(AuditHeadCollector(audit))
                try:
                    self.endpoint = serve_metrics(config.metrics_listen, registry)
                except (OSError, ValueError) as e:
                    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                    where = f"--metrics-listen {config.metrics_listen}"
                    raise ObservabilityError(f"cannot listen on {where}: {reason}") from e
            self._tasks.append(asyncio.create_task(self._flush_loop(flush_interval, role != "worker")))
        if config.decision_log is not None:
            rate = config.decision_log_rate
            byte_rate = config.decision_log_bytes_rate
            try:
                self.decision_log = DecisionLog(
                    config.decision_log,
                    sample=config.decision_log_sample,
                    rate=None if rate is None else rate / max(1, decision_processes),
                    bytes_rate=None if byte_rate is None else byte_rate / max(1, decision_processes),
                    on_error=lambda e: _log.warning("decision log write failed", error=str(e)),
                )
            except OSError as e:
                raise ObservabilityError(
                    f"cannot open --decision-log {config.decision_log}: {e.strerror or e}"
                ) from e

    # -- the loop's side -------------------------------------------------------------------------

    def _published(self, old: Snapshot | None, new: Snapshot) -> None:
        assert self.metrics is not None
        self.metrics.policy_published(new.generation, new.digest, new.loaded_at.timestamp())

    async def _flush_loop(self, interval: float, count_reloads: bool) -> None:
        while True:
            await asyncio.sleep(interval)
            self.flush(count_reloads)

    def flush(self, count_reloads: bool = True) -> None:
        """Moves the hot path's tallies (and reload counts, decision-log drops) into the metrics."""
        metrics, recorder = self.metrics, self.recorder
        if metrics is None or recorder is None:
            return
        recorder.flush()
        store = self._store
        if count_reloads and store is not None:
            reloads, failed = store.reloads, store.failed_reloads
            if reloads > self._seen_reloads:
                metrics.reloads.inc(reloads - self._seen_reloads)
            if failed > self._seen_failed:
                metrics.failed_reloads.inc(failed - self._seen_failed)
            self._seen_reloads, self._seen_failed = reloads, failed
        dlog = self.decision_log
        if dlog is not None:
            self._sync_counter(metrics.decision_log_dropped.labels("rate_limit"), dlog.dropped_rate)
            self._sync_counter(metrics.decision_log_dropped.labels("bytes"), dlog.dropped_bytes)
            self._sync_counter(metrics.decision_log_dropped.labels("queue_full"), dlog.dropped_full)
            self._sync_counter(metrics.decision_log_written, dlog.written)

    def _sync_counter(self, counter: object, total: int) -> None:
        key = id(counter)
        seen = self._synced.get(key, 0)
        if total > seen:
            counter.inc(total - seen)  # type: ignore[attr-defined]
            self._synced[key] = total

    async def _count_audit(self, audit: AuditTrail, after: int) -> None:
        """Counts every audit event appended after sequence `after`, as the trail records them."""
        assert self.metrics is not None
        counter = self.metrics.audit_events
        try:
            async for _ in audit.watch(after, buffer=100_000):
                counter.inc()
        except Exception as e:  # the log closing (shutdown) or cutting a slow watcher off
            _log.debug("audit event counting stopped", error=str(e))

    # -- shutdown ---------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stops the loops, flushes the last tallies, closes the decision log and the endpoint."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self.flush()
        await asyncio.to_thread(self._close_sync)

    def _close_sync(self) -> None:
        if self.decision_log is not None:
            self.decision_log.close()
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        if self._run_dir is not None:
            self._run_dir.remove()
            self._run_dir = None
            if self._env_before is None:  # as it was: a later run in this process starts afresh
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = self._env_before
