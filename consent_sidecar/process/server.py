"""The process around the core: load the policy, open the audit trail and the listeners, watch, serve, drain.

Owns listener addresses (TCP `host:port`, `[v6]:port`, `unix:/path`), the grpc.aio servers,
health (grpc.health.v1) and reflection on each, message-size limits, the wiring of the one
write path (PolicyWriter, fed by the MappingWatcher and SIGHUP) and the shutdown order:
health NOT_SERVING -> end WatchAuditEvents streams -> stop accepting -> drain in-flight RPCs
for the grace period -> remove sockets -> stop the watcher -> finish audit appends -> close
the audit log. DecisionService is served only on the `--listen` addresses, AdminService only
on `--admin-listen`, behind bearer tokens from the hot-reloaded `--principals` file and
optionally TLS/mTLS (`--admin-tls-cert/--admin-tls-key/--admin-client-ca`). The audit
database is `--audit-db`, by default `<directory of the mapping file>/consent-sidecar-audit.db`.
Must never start listening before the first policy has loaded and its start event is
audited, never serve the admin API without principals, and never log mapping content or
request payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TextIO

import grpc
import grpc.aio
from consent.v1 import admin_pb2_grpc
from consent_core.errors import MappingError, PrincipalsError, SidecarError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from consent_sidecar.audit import AuditError, AuditLog
from consent_sidecar.auth import gate as auth_gate
from consent_sidecar.config import ServeConfig
from consent_sidecar.observe import logs
from consent_sidecar.observe.decision_log import DecisionLog
from consent_sidecar.observe.metrics import Recorder
from consent_sidecar.observe.observability import Observability, ObservabilityError
from consent_sidecar.process.workers import WorkerError, WorkerPool
from consent_sidecar.services import admin, decision
from consent_sidecar.store.policy import PolicyStore, Snapshot
from consent_sidecar.store.watch import MappingWatcher
from consent_sidecar.store.writer import PolicyWriter

__all__ = [
    "AUDIT_DB_NAME",
    "EXIT_AUDIT",
    "EXIT_LISTEN",
    "EXIT_MAPPING",
    "EXIT_OK",
    "EXIT_WORKER",
    "Address",
    "ListenError",
    "Sidecar",
    "audit_db_path",
    "parse_address",
    "run",
    "serve",
]

EXIT_OK: Final = 0
EXIT_LISTEN: Final = 1  # a listener could not be opened
EXIT_MAPPING: Final = 2  # the first policy load failed
EXIT_AUDIT: Final = 3  # the audit database could not be opened or written
EXIT_WORKER: Final = 4  # a --workers process exited on its own (the others were drained)

AUDIT_DB_NAME: Final = "consent-sidecar-audit.db"  # the default --audit-db, next to the mapping file

_log = logs.get_logger(__name__)


class ListenError(Exception):
    """A listener address is malformed or cannot be bound; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed listener address; `target` is what gRPC binds."""

    raw: str  # as configured
    target: str  # "host:port" or "unix:/abs/or/relative/path"
    unix_path: str | None = None  # the socket file, for unix: addresses

    def bound(self, port: int) -> str:
        """The address with the real port (after binding port 0)."""
        if self.unix_path is not None:
            return self.target
        host, _, _ = self.target.rpartition(":")
        return f"{host}:{port}"


def parse_address(raw: str) -> Address:
    """Parses `host:port`, `[v6]:port` or `unix:/path`; raises ListenError naming the address."""
    if raw.startswith("unix:"):
        path = raw[len("unix:") :]
        if path.startswith("//"):  # unix:///abs/path, the URI form
            path = path[2:]
        if not path:
            raise ListenError(f"listen address {raw!r}: unix socket path is empty")
        return Address(raw, f"unix:{path}", path)
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ListenError(f"listen address {raw!r}: expected host:port, [ipv6]:port or unix:/path")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ListenError(f"listen address {raw!r}: an IPv6 host must be in brackets, e.g. [::1]:{port}")
    return Address(raw, raw)


def _prepare_unix_socket(address: Address) -> None:
    """Removes a stale socket file left by a crashed run; refuses a live socket or a non-socket."""
    path = address.unix_path
    assert path is not None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"listen address {address.raw!r}: {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody answers: stale
            return
    raise ListenError(f"listen address {address.raw!r}: {path} is in use by a running process")


def _why_bind_failed(address: Address) -> str:
    """gRPC says only "failed to bind"; re-trying the bind ourselves recovers the OS reason."""
    try:
        if address.unix_path is not None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.bind(address.unix_path)
            os.unlink(address.unix_path)
        else:
            host, _, port = address.target.rpartition(":")
            host = host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.create_server((host, int(port)), family=family):
                pass
    except OSError as e:
        return e.strerror or str(e)
    return "gRPC could not bind it (set GRPC_VERBOSITY=debug for details)"


# A service registration: adds a servicer to a server and returns the service's full name.
ServiceAdder = Callable[[grpc.aio.Server], str]


def decision_services(
    store: PolicyStore,
    config: ServeConfig,
    *,
    recorder: Recorder | None = None,
    decision_log: DecisionLog | None = None,
) -> list[ServiceAdder]:
    """What the `--listen` addresses serve (besides health and reflection)."""

    def add_decision(server: grpc.aio.Server) -> str:
        # The bytes handlers: memoised pre-encoded responses, no protobuf (de)serializers per call.
        servicer = decision.DecisionService(store, config.limits, recorder=recorder, decision_log=decision_log)
        return decision.add_to_server(servicer, server)

    return [add_decision]


def admin_services(servicer: admin.AdminService | None) -> list[ServiceAdder]:
    """What `--admin-listen` serves (besides health and reflection): AdminService."""
    if servicer is None:
        return []

    def add_admin(server: grpc.aio.Server) -> str:
        admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        return admin.SERVICE_NAME

    return [add_admin]


def audit_db_path(config: ServeConfig) -> str:
    """`--audit-db`, or `consent-sidecar-audit.db` in the mapping file's directory."""
    if config.audit_db:
        return config.audit_db
    return os.path.join(os.path.dirname(config.mappings), AUDIT_DB_NAME)


class _Listener:
    """One grpc.aio server with its health servicer; the services are known before it starts."""

    def __init__(
        self,
        name: str,
        addresses: Sequence[Address],
        services: Sequence[ServiceAdder],
        config: ServeConfig,
        credentials: grpc.ServerCredentials | None = None,
    ):
        limit = config.limits.max_message_bytes
        self.name = name
        self.addresses = tuple(addresses)
        self.credentials = credentials  # None: plaintext; else TLS (mTLS when it requires client certificates)
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # gRPC sets SO_REUSEPORT by default: a second sidecar would then "bind" a taken port.
                ("grpc.so_reuseport", 0),
            ]
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = tuple(add(self.server) for add in services)
        reflection.enable_server_reflection(
            (*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.bound: list[str] = []
        self._sockets: list[str] = []

    def bind(self) -> None:
        for address in self.addresses:
            if address.unix_path is not None:
                _prepare_unix_socket(address)
            try:
                if self.credentials is None:
                    port = self.server.add_insecure_port(address.target)
                else:
                    port = self.server.add_secure_port(address.target, self.credentials)
            except RuntimeError:
                port = 0
            if port == 0 and address.unix_path is None:
                raise ListenError(f"cannot listen on {address.raw} ({self.name}): {_why_bind_failed(address)}")
            if address.unix_path is not None:
                if not os.path.exists(address.unix_path):
                    raise ListenError(f"cannot listen on {address.raw} ({self.name}): {_why_bind_failed(address)}")
                self._sockets.append(address.unix_path)
            self.bound.append(address.bound(port))

    async def start(self) -> None:
        await self.server.start()
        # The policy is loaded before any listener starts, so everything is SERVING from the first check.
        for name in (health.OVERALL_HEALTH, *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None) -> None:
        await self.server.stop(grace)
        self.remove_sockets()

    def remove_sockets(self) -> None:
        for path in self._sockets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._sockets.clear()


class Sidecar:
    """The listeners around one loaded PolicyStore. `start` binds everything or nothing.

    An admin listener (config.admin_listen) serves AdminService over `audit` (required then),
    with `writer` for writes, `gate` for authentication, `watch_buffer` live audit events per
    WatchAuditEvents client. The caller owns the audit log, the writer and the watcher.
    DecisionService feeds `recorder` (metrics) and `decision_log`; it listens on
    `decision_listen` (default: every `--listen` address; with workers, the unix: ones only,
    possibly none).
    """

    def __init__(
        self,
        config: ServeConfig,
        store: PolicyStore,
        *,
        audit: AuditLog | None = None,
        writer: PolicyWriter | None = None,
        gate: admin.Gate | None = None,
        watch_buffer: int = admin.DEFAULT_WATCH_BUFFER,
        recorder: Recorder | None = None,
        decision_log: DecisionLog | None = None,
        decision_listen: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.recorder = recorder
        self.decision_log = decision_log
        self.decision_listen = tuple(config.listen if decision_listen is None else decision_listen)
        self.admin: admin.AdminService | None = None
        if config.admin_listen:
            if audit is None:
                raise ValueError("an admin listener needs the audit log (AdminService reads the audit trail)")
            self.admin = admin.AdminService(store, audit, writer=writer, gate=gate, watch_buffer=watch_buffer)
        self._listeners: list[_Listener] = []
        self._decision: _Listener | None = None
        self._admin: _Listener | None = None

    @property
    def addresses(self) -> tuple[str, ...]:
        """The bound decision addresses of this process, real ports filled in (after `start`)."""
        return tuple(self._decision.bound) if self._decision is not None else ()

    @property
    def admin_address(self) -> str | None:
        """The bound `--admin-listen` address, or None when there is no admin listener."""
        return self._admin.bound[0] if self._admin is not None else None

    async def start(self) -> None:
        """Binds every listener, then starts them. Raises ListenError (nothing left listening)."""
        config = self.config
        if not config.listen:
            raise ListenError("no --listen address given")
        listeners = []
        if self.decision_listen:
            services = decision_services(self.store, config, recorder=self.recorder, decision_log=self.decision_log)
            self._decision = _Listener("decision", [parse_address(a) for a in self.decision_listen], services, config)
            listeners.append(self._decision)
        if config.admin_listen:
            try:
                credentials = auth_gate.admin_credentials(config)
            except auth_gate.TLSConfigError as e:
                raise ListenError(f"cannot listen on {config.admin_listen} (admin): {e}") from None
            self._admin = _Listener(
                "admin", [parse_address(config.admin_listen)], admin_services(self.admin), config, credentials
            )
            listeners.append(self._admin)
        try:
            for listener in listeners:
                listener.bind()
        except BaseException:
            for listener in listeners:
                listener.remove_sockets()
                await listener.server.stop(None)
            self._decision = self._admin = None
            raise
        for listener in listeners:
            await listener.start()
        self._listeners = listeners

    async def stop(self, grace: float | None) -> None:
        """Health NOT_SERVING everywhere, end audit watch streams, then stop accepting and drain.

        The drain waits up to `grace` seconds; calling it again with a smaller grace (or None)
        cuts it short. WatchAuditEvents streams end cleanly first: they never finish by themselves.
        """
        for listener in self._listeners:
            await listener.health.enter_graceful_shutdown()
        if self.admin is not None:
            self.admin.end_watches()
        await asyncio.gather(*(listener.stop(grace) for listener in self._listeners))


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
) -> int:
    """Loads the policy, serves until `stop` is set (or SIGTERM/SIGINT when `stop` is None), drains.

    Returns the exit code: 0 after a clean drain, 2 when the mapping does not load (its errors
    printed to stderr, nothing opened), 3 when the audit database cannot be opened or written
    (the message names the file and --audit-db), 1 when a listener cannot be opened or the
    admin listener cannot be secured (no --principals, a broken principals file, unusable
    --admin-tls-* flags: checked before anything loads). `ready`
    is set once every listener is up and healthy. With signals of its own (`stop` None),
    SIGHUP forces a reload of the mapping file (and of the principals file).
    """
    err = stderr if stderr is not None else sys.stderr
    try:
        principals = _load_principals(config)
    except ListenError as e:
        print(f"error: {e}", file=err)
        _log.error("cannot start the admin listener", error=str(e))
        return EXIT_LISTEN
    store = PolicyStore()
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
        rt = _Runtime(config, store, snap, audit, writer, principals, ready, stop, err)
        return await _serve_loaded(rt, audit_after)
    finally:
        await asyncio.to_thread(audit.close)  # ends any WatchAuditEvents stream still open


def _load_principals(config: ServeConfig) -> auth_gate.PrincipalsFile | None:
    """The principals file for `--admin-listen` (None without one); ListenError if the admin API cannot be secured.

    Checked before anything loads or listens: an admin listener without principals would
    serve writes to anyone, so it refuses to start; a broken principals file or bad TLS
    flags are reported with their positions / the flag concerned.
    """
    if not config.admin_listen:
        if config.principals or config.admin_tls_cert or config.admin_tls_key or config.admin_client_ca:
            _log.warning("--principals and --admin-tls-* are ignored without --admin-listen")
        return None
    if not config.principals:
        raise ListenError(
            f"--admin-listen {config.admin_listen} needs --principals FILE (or CONSENT_SIDECAR_PRINCIPALS): "
            "the admin API never runs unauthenticated; list owner and member token hashes there "
            "(consent-sidecar token hash), or drop --admin-listen to serve no admin API"
        )
    try:
        auth_gate.admin_credentials(config)
    except auth_gate.TLSConfigError as e:
        raise ListenError(f"cannot listen on {config.admin_listen} (admin): {e}") from None
    try:
        return auth_gate.PrincipalsFile.load(config.principals)
    except PrincipalsError as e:
        raise ListenError(f"--principals: the principals file is invalid:\n{e.format()}") from None


def _audit_failed(err: TextIO, db: str, message: str) -> None:
    print(f"error: {message}", file=err)
    print(f"error: choose a writable audit database with --audit-db FILE (or CONSENT_SIDECAR_AUDIT_DB); "
          f"the default is {AUDIT_DB_NAME} next to the mapping file, here {db}", file=err)
    _log.error("cannot use the audit database", audit_db=db, error=message)


@dataclass(frozen=True, slots=True)
class _Runtime:
    """What `serve()` has loaded and opened, handed as one down _serve_loaded -> _serve_observed -> _run_started."""

    config: ServeConfig
    store: PolicyStore
    snap: Snapshot
    audit: AuditLog
    writer: PolicyWriter
    principals: auth_gate.PrincipalsFile | None
    ready: asyncio.Event | None
    stop: asyncio.Event | None
    err: TextIO


async def _serve_loaded(rt: _Runtime, audit_after: int = 0) -> int:
    config, err = rt.config, rt.err
    workers = config.workers > 1
    unix = tuple(a for a in config.listen if a.startswith("unix:"))
    tcp = tuple(parse_address(a).target for a in config.listen if not a.startswith("unix:"))
    # With workers, TCP listeners are theirs (SO_REUSEPORT); unix: ones stay here, served by this process.
    decision_processes = (config.workers if tcp else 0) + (1 if unix else 0) if workers else 1
    try:
        obs = Observability.start(
            config, rt.store, role="parent" if workers else "single", audit=rt.audit, audit_after=audit_after,
            decision_processes=decision_processes,
        )
    except ObservabilityError as e:
        print(f"error: {e}", file=err)
        _log.error("cannot start metrics or the decision log", error=str(e))
        return EXIT_LISTEN
    try:
        return await _serve_observed(rt, obs, unix if workers else None, tcp, decision_processes)
    finally:
        await obs.aclose()


async def _serve_observed(
    rt: _Runtime,
    obs: Observability,
    decision_listen: tuple[str, ...] | None,
    tcp: tuple[str, ...],
    decision_processes: int,
) -> int:
    config, store, err = rt.config, rt.store, rt.err
    gate = auth_gate.Authenticator(rt.principals, rt.audit) if rt.principals is not None else None
    sidecar = Sidecar(
        config, store, audit=rt.audit, writer=rt.writer, gate=gate, recorder=obs.recorder,
        decision_log=obs.decision_log, decision_listen=decision_listen,
    )
    pool: WorkerPool | None = None
    if decision_listen is not None and tcp:  # workers: check and hold their ports before anything listens
        pool = WorkerPool(config, store, tcp, config.workers)
        try:
            pool.reserve()
        except OSError as e:
            message = f"cannot listen on {', '.join(tcp)} (decision workers): {e.strerror or e}"
            print(f"error: {message}", file=err)
            _log.error("cannot listen", error=message)
            return EXIT_LISTEN
    try:
        await sidecar.start()
    except ListenError as e:
        if pool is not None:
            await pool.stop(None)
        print(f"error: {e}", file=err)
        _log.error("cannot listen", error=str(e))
        return EXIT_LISTEN
    if pool is not None:
        try:
            await pool.start(decision_processes)
        except WorkerError as e:
            await sidecar.stop(None)
            print(f"error: {e}", file=err)
            _log.error("cannot start the decision workers", error=str(e))
            return EXIT_LISTEN
    return await _run_started(rt, sidecar, pool)


async def _run_started(rt: _Runtime, sidecar: Sidecar, pool: WorkerPool | None) -> int:
    config, snap, audit, writer, principals, ready = rt.config, rt.snap, rt.audit, rt.writer, rt.principals, rt.ready
    stop = rt.stop
    watcher = MappingWatcher(writer, config.mappings)
    watch_stop = asyncio.Event()
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
            source=config.mappings,
            audit_db=str(audit.path),
        )
        if ready is not None:
            ready.set()
        stopped = asyncio.ensure_future(stop.wait())
        ending = [stopped] if pool is None else [stopped, asyncio.ensure_future(pool.failed.wait())]
        await asyncio.wait(ending, return_when=asyncio.FIRST_COMPLETED)
        for f in ending:
            f.cancel()
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
        await writer.aclose()
    if pool is not None and pool.failed.is_set():
        _log.error("stopped: a decision worker exited on its own")
        return EXIT_WORKER
    _log.info("stopped")
    return EXIT_OK


def run(config: ServeConfig) -> int:
    """Runs the sidecar until SIGTERM/SIGINT; blocking. Returns the process exit code."""
    try:
        logs.configure(config.log_level, config.log_format)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_LISTEN
    try:
        return asyncio.run(serve(config))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed (during the first load)
        return 130
