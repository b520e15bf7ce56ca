"""The listeners of one sidecar process around one loaded PolicyStore: what each address serves.

DecisionService is served only on the `--listen` addresses, AdminService only on
`--admin-listen` (behind the bearer-token gate, optionally over TLS/mTLS); every listener also
serves health and reflection (built by `grpc_server`). `Sidecar.start` binds everything or
nothing; `Sidecar.stop` is the listeners' part of the shutdown order: health NOT_SERVING ->
end WatchAuditEvents streams -> stop accepting -> drain -> remove sockets.
Must never load the policy, open the audit log or install signal handlers (`server` does).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

import grpc
import grpc.aio

from consent_sidecar.audit.trail import AuditTrail
from consent_sidecar.auth import gate as auth_gate
from consent_sidecar.config import ServeConfig
from consent_sidecar.observe.decision_log import DecisionLog
from consent_sidecar.observe.metrics import Recorder
from consent_sidecar.process.grpc_server import GrpcServer, ListenError, ServiceAdder, listen_address
from consent_sidecar.services import admin, decision
from consent_sidecar.store.policy import PolicyStore
from consent_sidecar.store.ports import PolicyWriterPort, StoreInfo

__all__ = ["Sidecar", "admin_credentials", "admin_services", "decision_services"]


def admin_credentials(config: ServeConfig) -> grpc.ServerCredentials | None:
    """`auth.gate.admin_credentials`, and the certificate and key checked to be a pair before any bind.

    gRPC takes a mismatched pair without a word and then fails to bind ("could not bind"),
    which sends operators after ports; this names both files. Raises TLSConfigError.
    """
    credentials = auth_gate.admin_credentials(config)
    cert, key = config.admin_tls_cert, config.admin_tls_key
    if credentials is not None and cert is not None and key is not None:
        _check_key_pair(cert, key)
    return credentials


def _check_key_pair(cert: str, key: str) -> None:
    def no_password() -> str:
        raise auth_gate.TLSConfigError(f"--admin-tls-key {key} is encrypted: give it unencrypted (a mounted secret)")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=no_password)
    except ssl.SSLError as e:
        why = "they do not match" if "KEY_VALUES_MISMATCH" in str(e) else (e.reason or str(e)).lower().replace("_", " ")
        raise auth_gate.TLSConfigError(
            f"--admin-tls-key {key} is not the private key of --admin-tls-cert {cert}: {why}"
        ) from None
    except OSError as e:
        raise auth_gate.TLSConfigError(f"--admin-tls-cert {cert} / --admin-tls-key {key}: {e.strerror or e}") from None


def decision_services(
    store: PolicyStore,
    config: ServeConfig,
    *,
    recorder: Recorder | None = None,
    decision_log: DecisionLog | None = None,
) -> list[ServiceAdder]:
    """What the `--listen` addresses serve (besides health and reflection), in this process or a worker."""

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
        return admin.add_to_server(servicer, server)  # WatchAuditEvents as pre-encoded bytes

    return [add_admin]


class Sidecar:
    """The listeners around one loaded PolicyStore. `start` binds everything or nothing.

    An admin listener (config.admin_listen) serves AdminService over `audit` (required then),
    with `writer` for writes, `gate` for authentication, `watch_buffer` live audit events per
    WatchAuditEvents client, history replayed at `config.audit_replay_rate`. The caller owns
    the audit log, the writer and the watcher.
    DecisionService feeds `recorder` (metrics) and `decision_log`; it listens on
    `decision_listen` (default: every `--listen` address; with workers, the unix: ones only,
    possibly none).
    """

    def __init__(
        self,
        config: ServeConfig,
        store: PolicyStore,
        *,
        audit: AuditTrail | None = None,
        writer: PolicyWriterPort | None = None,
        gate: admin.Gate | None = None,
        watch_buffer: int = admin.DEFAULT_WATCH_BUFFER,
        recorder: Recorder | None = None,
        decision_log: DecisionLog | None = None,
        decision_listen: Sequence[str] | None = None,
        fleet: StoreInfo | None = None,
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
            self.admin = admin.AdminService(
                store, audit, writer=writer, gate=gate, watch_buffer=watch_buffer,
                replay_rate=config.audit_replay_rate, fleet=fleet,
            )
        self._listeners: list[GrpcServer] = []
        self._decision: GrpcServer | None = None
        self._admin: GrpcServer | None = None

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
        # Every address and TLS file is checked before any server is built: a bad one builds nothing.
        decision_addresses = [listen_address(a) for a in self.decision_listen]
        credentials = None
        admin_addresses = []
        if config.admin_listen:
            try:
                credentials = admin_credentials(config)
            except auth_gate.TLSConfigError as e:
                raise ListenError(f"--admin-listen {config.admin_listen}: TLS configuration error: {e}") from None
            admin_addresses.append(listen_address(config.admin_listen))
        listeners = []
        if decision_addresses:
            services = decision_services(self.store, config, recorder=self.recorder, decision_log=self.decision_log)
            self._decision = GrpcServer("decision", decision_addresses, services, config)
            listeners.append(self._decision)
        if admin_addresses:
            services = admin_services(self.admin)
            self._admin = GrpcServer("admin", admin_addresses, services, config, credentials=credentials)
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

    async def set_health(self, name: str, serving: bool) -> None:
        """Reports health `name` on every listener of this process (e.g. the workers' state, from the parent)."""
        for listener in self._listeners:
            await listener.set_health(name, serving)

    async def stop(self, grace: float | None) -> None:
        """Health NOT_SERVING everywhere, end audit watch streams, then stop accepting and drain.

        The drain waits up to `grace` seconds; calling it again with a smaller grace (or None)
        cuts it short. WatchAuditEvents streams end cleanly first: they never finish by themselves.
        """
        for listener in self._listeners:
            await listener.enter_graceful_shutdown()
        if self.admin is not None:
            self.admin.end_watches()
        await asyncio.gather(*(listener.stop(grace) for listener in self._listeners))
