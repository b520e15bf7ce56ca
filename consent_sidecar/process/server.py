"""The sidecar process: load the policy, open the audit trail and the listeners, watch, serve, drain.

Owns the start sequence and its exit codes, the wiring of the one write path (PolicyWriter,
fed by the MappingWatcher and SIGHUP), signals, and the shutdown order: health NOT_SERVING ->
end WatchAuditEvents streams -> refuse new calls -> drain in-flight RPCs for the grace period
-> remove sockets -> flush the decision log -> stop the watcher -> finish audit appends ->
close the audit log; `run()` ends the process anyway `--grace-period` + 2 s after SIGTERM
(`deadline`), whatever is stuck. What each
address serves is `listeners` (built by `grpc_server`); `--workers` processes are `workers`.
The admin API sits behind bearer tokens from the hot-reloaded `--principals` file and
optionally TLS/mTLS (`--admin-tls-cert/--admin-tls-key/--admin-client-ca`). The audit
database is `--audit-db`, by default `<directory of the mapping file>/consent-sidecar-audit.db`.
Every failure to start is a StartupError, reported once by `serve` (exit 1).
Must never start listening before the first policy has loaded and its start event is
audited, never serve the admin API without principals, and never log mapping content or
request payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, TextIO

from consent_core.errors import MappingError, PrincipalsError, SidecarError, StartupError

from consent_sidecar.audit import AuditError, AuditLog
from consent_sidecar.audit.trail import AuditTrail
from consent_sidecar.auth import gate as auth_gate
from consent_sidecar.config import ServeConfig
from consent_sidecar.observe import logs
from consent_sidecar.observe.observability import Observability, ObservabilityError
from consent_sidecar.process.deadline import EXIT_MARGIN, ExitDeadline
from consent_sidecar.process.grpc_server import ListenError, listen_address
from consent_sidecar.process.listeners import Sidecar, admin_credentials
from consent_sidecar.process.workers import WORKERS_HEALTH, WorkerError, WorkerPool
from consent_sidecar.store.policy import PolicyStore, Snapshot
from consent_sidecar.store.ports import PolicyWriterPort, StoreInfo
from consent_sidecar.store.watch import MappingWatcher
from consent_sidecar.store.writer import PolicyWriter

__all__ = [
    "AUDIT_DB_NAME",
    "EXIT_AUDIT",
    "EXIT_LISTEN",
    "EXIT_MAPPING",
    "EXIT_OK",
    "EXIT_WORKER",
    "AdminListenerError",
    "ListenError",
    "Sidecar",  # re-exported: embedders and tests run one around a store of their own
    "audit_db_path",
    "run",
    "serve",
]

EXIT_OK: Final = 0
EXIT_LISTEN: Final = 1  # the sidecar could not start: a listener, TLS file, metrics endpoint or worker (StartupError)
EXIT_MAPPING: Final = 2  # the first policy load failed
EXIT_AUDIT: Final = 3  # the audit database could not be opened or written
EXIT_WORKER: Final = 4  # a --workers process exited on its own (the others were drained)

AUDIT_DB_NAME: Final = "consent-sidecar-audit.db"  # the default --audit-db, next to the mapping file

_log = logs.get_logger(__name__)


class AdminListenerError(ListenError):
    """The admin API cannot be secured: no --principals, a broken principals file or unusable TLS flags."""


def _startup_event(e: StartupError) -> str:
    """The log event of a failure to start (operators alert on these names)."""
    if isinstance(e, AdminListenerError):
        return "cannot start the admin listener"
    if isinstance(e, ObservabilityError):
        return "cannot start metrics or the decision log"
    if isinstance(e, WorkerError):
        return "cannot start the decision workers"
    return "cannot listen"


def audit_db_path(config: ServeConfig) -> str:
    """`--audit-db`, or `consent-sidecar-audit.db` in the mapping file's directory."""
    if config.audit_db:
        return config.audit_db
    return os.path.join(os.path.dirname(config.mappings), AUDIT_DB_NAME)


def _on_publish(old: Snapshot | None, new: Snapshot) -> None:
    _log.info(
        "policy published",
        policy_generation=new.generation,
        policy_digest=new.digest,
        previous_generation=None if old is None else old.generation,
    )


async def serve(
    config: ServeConfig,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    stderr: TextIO | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> int:
    """Loads the policy, serves until `stop` is set (or SIGTERM/SIGINT when `stop` is None), drains.

    Returns the exit code: 0 after a clean drain, 2 when the mapping does not load (its errors
    printed to stderr, nothing opened), 3 when the audit database cannot be opened or written
    (the message names the file and --audit-db), 1 on any StartupError: a listener, the
    metrics endpoint, the decision log or a worker cannot be opened, or the admin listener
    cannot be secured (no --principals, a broken principals file, unusable --admin-tls-*
    flags: checked before anything loads). `ready` is set once every listener is up and
    healthy. With signals of its own (`stop` None), SIGHUP forces a reload of the mapping file
    (and of the principals file). `on_shutdown` is called when the shutdown begins (`run` arms
    the exit deadline there).
    """
    err = stderr if stderr is not None else sys.stderr
    try:
        return await _serve(config, ready, stop, err, on_shutdown)
    except StartupError as e:  # the listeners, workers and endpoints opened so far are closed again
        print(f"error: {e}", file=err)
        _log.error(_startup_event(e), error=str(e))
        return EXIT_LISTEN


async def _serve(
    config: ServeConfig, ready: asyncio.Event | None, stop: asyncio.Event | None, err: TextIO,
    on_shutdown: Callable[[], None] | None,
) -> int:
    principals = _load_principals(config)
    if config.etcd is not None:  # the policy source is the fleet store: its own start (process.fleet)
        from consent_sidecar.process.fleet import serve_fleet

        return await serve_fleet(config, principals, ready, stop, err)
    store = PolicyStore(
        max_mapping_bytes=config.max_mapping_bytes, mapping_limits=config.mapping_limits, memo_bytes=config.memo_bytes
    )
    try:
        # Compile off the loop: nothing else runs yet, but a caller's loop (tests) may be busy.
        snap = await asyncio.to_thread(store.load_initial, config.mappings)
    except MappingError as e:
        print(e.format(), file=err)
        return EXIT_MAPPING
    except OSError as e:
        print(f"{config.mappings}: cannot read: {e.strerror or e}", file=err)
        return EXIT_MAPPING
    store.add_listener(_on_publish)

    db = audit_db_path(config)
    try:
        audit = await asyncio.to_thread(AuditLog.open, db)
    except AuditError as e:
        _audit_failed(err, db, f"cannot open the audit database: {e}")
        return EXIT_AUDIT
    try:
        writer = PolicyWriter(store, audit)
        try:
            # The trail starts with POLICY_RELOADED by `system`, before anything serves.
            started = await writer.start()
        except (SidecarError, ValueError) as e:
            _audit_failed(err, db, f"cannot write the start event to the audit database: {e}")
            return EXIT_AUDIT
        audit_after = started[0].sequence - 1 if started else 0  # metrics count this run's events from here
        rt = _Runtime(config, store, snap, audit, writer, principals, ready, stop, on_shutdown)
        return await _serve_loaded(rt, audit_after)
    finally:
        await asyncio.to_thread(audit.close)  # ends any WatchAuditEvents stream still open


def _load_principals(config: ServeConfig) -> auth_gate.PrincipalsFile | None:
    """The principals file for `--admin-listen` (None without one); AdminListenerError if it cannot be secured.

    Checked before anything loads or listens: an admin listener without principals would
    serve writes to anyone, so it refuses to start; a broken principals file or bad TLS
    flags are reported with their positions / the flag concerned.
    """
    if not config.admin_listen:
        if config.principals or config.admin_tls_cert or config.admin_tls_key or config.admin_client_ca:
            _log.warning("--principals and --admin-tls-* are ignored without --admin-listen")
        return None
    if not config.principals:
        raise AdminListenerError(
            f"--admin-listen {config.admin_listen} needs --principals FILE (or CONSENT_SIDECAR_PRINCIPALS): "
            "the admin API never runs unauthenticated; list owner and member token hashes there "
            "(consent-sidecar token hash), or drop --admin-listen to serve no admin API"
        )
    try:
        admin_credentials(config)  # the files, and that the certificate and key are a pair
    except auth_gate.TLSConfigError as e:
        raise AdminListenerError(f"--admin-listen {config.admin_listen}: TLS configuration error: {e}") from None
    try:
        return auth_gate.PrincipalsFile.load(config.principals)
    except PrincipalsError as e:
        raise AdminListenerError(f"--principals: the principals file is invalid:\n{e.format()}") from None


def _audit_failed(err: TextIO, db: str, message: str) -> None:
    print(f"error: {message}", file=err)
    print(f"error: choose a writable audit database with --audit-db FILE (or CONSENT_SIDECAR_AUDIT_DB); "
          f"the default is {AUDIT_DB_NAME} next to the mapping file, here {db}", file=err)
    _log.error("cannot use the audit database", audit_db=db, error=message)


@dataclass(frozen=True, slots=True)
class _Runtime:
    """What `serve()` has loaded and opened, handed as one down _serve_loaded -> _open_listeners -> _run_started."""

    config: ServeConfig
    store: PolicyStore
    snap: Snapshot
    audit: AuditTrail
    writer: PolicyWriterPort
    principals: auth_gate.PrincipalsFile | None
    ready: asyncio.Event | None
    stop: asyncio.Event | None
    on_shutdown: Callable[[], None] | None = None
    # The etcd source: follows the store until its event is set (None: the MappingWatcher follows the file).
    follow: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None = None
    fleet: StoreInfo | None = None
    observe: Callable[[Observability], None] | None = None  # the etcd source's metrics, once they exist


async def _serve_loaded(rt: _Runtime, audit_after: int = 0) -> int:
    config = rt.config
    workers = config.workers > 1
    addresses = [listen_address(a) for a in config.listen]
    unix = tuple(a.raw for a in addresses if a.is_unix)
    tcp = tuple(a.target for a in addresses if not a.is_unix)
    # With workers, TCP listeners are theirs (SO_REUSEPORT); unix: ones stay here, served by this process.
    decision_processes = (config.workers if tcp else 0) + (1 if unix else 0) if workers else 1
    obs = Observability.start(
        config, rt.store, role="parent" if workers else "single", audit=rt.audit, audit_after=audit_after,
        decision_processes=decision_processes,
    )
    if rt.observe is not None:
        rt.observe(obs)
    try:
        sidecar, pool = await _open_listeners(rt, obs, unix if workers else None, tcp, decision_processes)
        try:
            return await _run_started(rt, sidecar, pool, obs)
        finally:
            if pool is not None:  # leaving by an exception must not leave the workers behind either
                await pool.stop(None)
    finally:
        await obs.aclose()


async def _open_listeners(
    rt: _Runtime,
    obs: Observability,
    decision_listen: tuple[str, ...] | None,
    tcp: tuple[str, ...],
    decision_processes: int,
) -> tuple[Sidecar, WorkerPool | None]:
    """This process's listeners and (`decision_listen` not None) the workers; all started, or a StartupError."""
    config, store = rt.config, rt.store
    gate = auth_gate.Authenticator(rt.principals, rt.audit) if rt.principals is not None else None
    sidecar = Sidecar(
        config, store, audit=rt.audit, writer=rt.writer, gate=gate, recorder=obs.recorder,
        decision_log=obs.decision_log, decision_listen=decision_listen, fleet=rt.fleet,
    )
    pool: WorkerPool | None = None
    if decision_listen is not None and tcp:  # workers: check and hold their ports before anything listens
        metrics = obs.metrics

        async def workers_changed(serving: int, wanted: int) -> None:
            # Every TCP connection lands on some live worker; what is down shows here, not in "".
            await sidecar.set_health(WORKERS_HEALTH, serving == wanted)
            if metrics is not None:
                metrics.workers_serving.set(serving)

        def worker_restarted(reason: str) -> None:
            if metrics is not None:
                metrics.worker_restarts.labels(reason).inc()

        pool = WorkerPool(config, store, tcp, config.workers, on_change=workers_changed, on_restart=worker_restarted)
        try:
            pool.reserve()
        except OSError as e:
            raise ListenError(f"cannot listen on {', '.join(tcp)} (decision workers): {e.strerror or e}") from None
    try:
        await sidecar.start()
    except BaseException:
        if pool is not None:
            await pool.stop(None)
        raise
    if pool is not None:
        try:
            await pool.start(decision_processes)
        except BaseException:
            await sidecar.stop(None)
            raise
        await workers_changed(config.workers, config.workers)
    return sidecar, pool


async def _run_started(rt: _Runtime, sidecar: Sidecar, pool: WorkerPool | None, obs: Observability) -> int:
    config, snap, audit, writer, principals, ready = rt.config, rt.snap, rt.audit, rt.writer, rt.principals, rt.ready
    stop = rt.stop
    watch_stop = asyncio.Event()
    watcher: MappingWatcher | None = None
    watching: list[asyncio.Task[None]]
    if rt.follow is not None:
        watching = [asyncio.create_task(rt.follow(watch_stop))]
    else:
        assert isinstance(writer, PolicyWriter)
        watcher = MappingWatcher(writer, config.mappings)
        watching = [asyncio.create_task(watcher.run(watch_stop))]
    if principals is not None:  # hot-reloaded like the mapping; a broken edit keeps the last good
        watching.append(asyncio.create_task(principals.run(watch_stop)))

    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    force = asyncio.Event()
    own_signals = stop is None
    if stop is None:
        stop = asyncio.Event()
        stop_event = stop

        def on_signal() -> None:
            # First signal: drain. A second one: stop draining now.
            (force if stop_event.is_set() else stop_event).set()

        def on_hangup() -> None:
            _log.info("SIGHUP: reloading the mapping file", source=config.mappings)
            if watcher is not None:
                watcher.request_reload()
            if principals is not None:
                principals.request_reload()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal)
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        index = snap.index
        _log.info(
            "sidecar started",
            listen=[*(pool.addresses if pool is not None else ()), *sidecar.addresses],
            workers=[] if pool is None else list(pool.pids),
            admin_listen=sidecar.admin_address,
            policy_generation=snap.generation,
            policy_digest=snap.digest,
            categories=len(index.mapping.categories),
            destinations=len(index.known_destinations),
            source=snap.source,
            audit_db=str(getattr(audit, "path", "")),
        )
        if ready is not None:
            ready.set()
        stopped = asyncio.ensure_future(stop.wait())
        ending = [stopped] if pool is None else [stopped, asyncio.ensure_future(pool.failed.wait())]
        await asyncio.wait(ending, return_when=asyncio.FIRST_COMPLETED)
        for f in ending:
            f.cancel()
        if rt.on_shutdown is not None:
            rt.on_shutdown()
        _log.info("shutting down", grace_period=config.grace_period)

        async def drain(grace: float | None) -> None:
            if pool is None:
                await sidecar.stop(grace)
            else:  # every worker drains at the same time as this process
                await asyncio.gather(sidecar.stop(grace), pool.stop(grace))

        draining = asyncio.ensure_future(drain(config.grace_period))
        forced = asyncio.ensure_future(force.wait())
        await asyncio.wait((draining, forced), return_when=asyncio.FIRST_COMPLETED)
        if not draining.done():
            _log.warning("second signal: aborting in-flight RPCs")
            await drain(None)
            await draining
        forced.cancel()
        if obs.decision_log is not None:  # no decision comes after the drain: its lines go out now
            await asyncio.to_thread(obs.decision_log.flush)
    finally:
        if own_signals:
            for sig in (*signals, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        # After the drain: stop watching, let audit appends already started finish; the caller
        # then closes the audit log.
        watch_stop.set()
        for task in watching:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if sidecar.admin is not None:
            await sidecar.admin.aclose()  # counted refusals still open go to the trail
        await writer.aclose()
    if pool is not None and pool.failed.is_set():
        _log.error("stopped: a decision worker exited on its own")
        return EXIT_WORKER
    _log.info("stopped")
    return EXIT_OK


def run(config: ServeConfig) -> int:
    """Runs the sidecar until SIGTERM/SIGINT; blocking. Returns the process exit code.

    From the first signal on, the process has `--grace-period` + 2 s to exit; past that it
    ends itself (`ExitDeadline`), even if a stuck thread would hold asyncio.run() or the
    interpreter's exit for ever.
    """
    try:
        logs.configure(config.log_level, config.log_format)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_LISTEN
    deadline = ExitDeadline(config.grace_period + EXIT_MARGIN)
    try:
        code = asyncio.run(serve(config, on_shutdown=deadline.arm))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed (during the first load)
        code = 130
    deadline.code = code  # the interpreter's exit may still wait for a stuck thread: leave with this
    return code
