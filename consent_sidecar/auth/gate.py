"""Who is calling the AdminService: bearer token -> Principal, role checks, denied writes audited.

Owns the per-RPC authentication of the admin API (docs/reference.md) and the hot reload of the
principals file. `Authenticator.principal(context, rpc, write=...)` is the one gate every
AdminService RPC passes first: no or unknown token ends the RPC with UNAUTHENTICATED, a
member calling a write ends it with PERMISSION_DENIED after recording an
AUDIT_ACTION_PERMISSION_DENIED event (actor = principal id, detail = the RPC name; a burst
of them is counted into one event, `denials`). A call already running (a WatchAuditEvents
stream) is re-checked at every principals reload: `subscribe` + `still_valid` let the
service end the streams of a principal removed (or demoted) there.

`PrincipalsFile` keeps the last good principals file: it watches the file's directory like
the mapping watcher does (so editor renames and ConfigMap `..data` swaps are seen, and an
edit within the mtime granularity is found by the content check), and a broken or missing
file logs its `file:line:column` problems and keeps the previous principals serving. Never
logs or stores a token; only sha256 hashes are held (consent_sidecar.auth.principals).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from consent_core.errors import PermissionDenied, PrincipalsError, SidecarError, StartupError, Unauthenticated

from consent_sidecar.audit.trail import AuditTrail
from consent_sidecar.auth.denials import DenialRecorder
from consent_sidecar.auth.principals import (
    MAX_PRINCIPALS_BYTES,
    Principal,
    Principals,
    bearer_token,
    load_principals,
)
from consent_sidecar.config import ServeConfig
from consent_sidecar.observe import logs
from consent_sidecar.process.pem import CERTIFICATE, PRIVATE_KEY, read_pem
from consent_sidecar.services.status import abort
from consent_sidecar.store.file_state import stat_key
from consent_sidecar.store.watch import CHECK_MS, DirectoryWatch

__all__ = ["Authenticator", "PrincipalsFile", "TLSConfigError", "admin_credentials"]

_log = logs.get_logger(__name__)

_Context = grpc.aio.ServicerContext[Any, Any]

class PrincipalsFile(DirectoryWatch):
    """The principals file as last loaded successfully; `run` keeps it current until stopped.

    `current` is one attribute read (atomic): a request sees the old or the new principals,
    never a mix. Tunables are in milliseconds, as in `consent_sidecar.store.watch.MappingWatcher`.
    """

    def __init__(
        self,
        path: str,
        principals: Principals,
        *,
        debounce_ms: int = 100,
        step_ms: int = 20,
        settle_ms: int = 20,
        retry_ms: int = 100,
        max_retries: int = 3,
        force_polling: bool | None = None,
        check_ms: int = CHECK_MS,
    ) -> None:
        super().__init__(
            path, debounce_ms=debounce_ms, step_ms=step_ms, settle_ms=settle_ms, retry_ms=retry_ms,
            max_retries=max_retries, force_polling=force_polling, what="principals",
            max_bytes=MAX_PRINCIPALS_BYTES, check_ms=check_ms,
        )  # fmt: skip
        self.path = path
        self._current = principals
        self.reloads = 0  # loads that replaced the principals
        self.failed_reloads = 0
        self.last_error: str | None = None  # the last rejected file's problems; cleared by a good load
        self.reloaded = asyncio.Condition()  # notified after every reload attempt (tests wait on it)
        self._listeners: list[Callable[[Principals], None]] = []

    def add_listener(self, listener: Callable[[Principals], None]) -> None:
        """Called with the new principals after every successful reload, on the reloading thread."""
        self._listeners.append(listener)

    @classmethod
    def load(cls, path: str, **tunables: Any) -> PrincipalsFile:
        """Loads the file once; raises PrincipalsError (every problem, `file:line:column`) if it is unusable."""
        return cls(path, load_principals(path), **tunables)

    @property
    def current(self) -> Principals:
        return self._current

    def reload(self) -> bool:
        """Re-reads the file (blocking); True if it was good and is now current, False if the last good stays."""
        return self._commit(self._read())

    def _read(self) -> Principals | PrincipalsError:
        try:
            return load_principals(self.path)
        except PrincipalsError as e:
            return e

    def _commit(self, loaded: Principals | PrincipalsError) -> bool:
        if isinstance(loaded, PrincipalsError):
            self.failed_reloads += 1
            self.last_error = loaded.format()
            _log.error(
                "principals file rejected; the previous principals stay in force",
                source=self.path, problems=loaded.format().splitlines(),
            )
            return False
        self._current = loaded
        self.reloads += 1
        self.last_error = None
        _log.info("principals reloaded", source=self.path, principals=len(loaded.principals))
        for listener in self._listeners:
            try:
                listener(loaded)
            except Exception:  # one listener's bug must not keep the others from revoking
                _log.exception("principals listener failed")
        return True

    def reload_failed(self, error: str) -> None:
        self.failed_reloads += 1
        self.last_error = error

    async def reload_settled(self) -> bool:
        """One reload of a settled file; a file that fails to load while still changing is retried first."""
        attempt = 0
        try:
            while True:
                before = await self._wait_settled(self._settle)
                loaded = await asyncio.to_thread(self._read)
                if stat_key(self.path) != before:
                    continue  # written to while we read it: what we read may be torn
                if isinstance(loaded, PrincipalsError) and attempt < self._max_retries:
                    attempt += 1
                    await asyncio.sleep(self._retry)
                    if stat_key(self.path) != before or self._dirty.is_set():
                        self._dirty.clear()
                        continue  # it was mid-write: the finished file decides
                return self._commit(loaded)
        finally:
            async with self.reloaded:
                self.reloaded.notify_all()


class Authenticator:
    """The gate of every AdminService RPC: who calls, and may they write.

    Denied writes are recorded in `audit` (when given) through a `DenialRecorder`; `aclose`
    writes the counts still open (call it at shutdown, before the log closes).
    """

    def __init__(self, principals: PrincipalsFile, audit: AuditTrail | None) -> None:
        self._principals = principals
        self._denials = DenialRecorder(audit) if audit is not None else None

    def authenticate(self, metadata: Any) -> Principal:
        """The principal whose token `metadata` carries; Unauthenticated otherwise."""
        return self._principals.current.authenticate(bearer_token(metadata or ()))

    async def principal(self, context: _Context, rpc: str, *, write: bool) -> Principal:
        """The calling principal; ends the RPC with UNAUTHENTICATED or PERMISSION_DENIED when it may not.

        `rpc` is the method name (e.g. "CreateCategory"); it is the denial's audit detail.
        """
        try:
            principal = self.authenticate(context.invocation_metadata())
        except Unauthenticated as e:
            _log.info("admin call unauthenticated", rpc=rpc, error=str(e), peer=context.peer())
            await abort(context, e)
        if write:
            try:
                Principals.authorize_write(principal, rpc)
            except PermissionDenied as e:
                if self._denials is not None:
                    await self._denials.refused(principal.id, rpc)
                _log.warning("admin write denied", rpc=rpc, principal=principal.id, role=principal.role.value)
                await abort(context, e)
        return principal

    def still_valid(self, principal: Principal, *, write: bool) -> SidecarError | None:
        """Why `principal` (as authenticated earlier) may no longer hold its call open; None if it may.

        Unauthenticated when its token no longer names it (removed, or its token rotated away);
        PermissionDenied when `write` and it is no longer an owner.
        """
        now = self._principals.current.find(principal.token_sha256)
        if now is None or now.id != principal.id:
            return Unauthenticated(
                f"principal {principal.id!r} was removed from the principals file, or its token revoked"
            )
        if write and not now.can_write:
            return PermissionDenied(f"principal {principal.id!r} is no longer an owner")
        return None

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Calls `callback()` after every principals reload (on the reloading thread)."""
        self._principals.add_listener(lambda _principals: callback())

    async def aclose(self) -> None:
        """Shutdown: writes the refusal counts of windows still open."""
        if self._denials is not None:
            await self._denials.aclose()


class TLSConfigError(StartupError):
    """The admin listener's TLS flags are inconsistent or name unusable files; the message says which."""


def admin_credentials(config: ServeConfig) -> grpc.ServerCredentials | None:
    """TLS credentials for `--admin-listen` (mTLS when a client CA is given), or None for plaintext.

    With `admin_client_ca`, clients must present a certificate signed by it (the bearer token
    is still required: the certificate secures the channel, the token names the principal).
    Raises TLSConfigError naming the flag for a missing partner flag or an unusable file.
    """
    cert, key, ca = config.admin_tls_cert, config.admin_tls_key, config.admin_client_ca
    if cert is None and key is None:
        if ca is not None:
            raise TLSConfigError("--admin-client-ca needs --admin-tls-cert and --admin-tls-key (mTLS is TLS first)")
        return None
    if cert is None or key is None:
        raise TLSConfigError("--admin-tls-cert and --admin-tls-key must be given together")
    if config.admin_listen is None:
        raise TLSConfigError("--admin-tls-cert/--admin-tls-key are for --admin-listen, which is not set")
    chain = read_pem("--admin-tls-cert", cert, CERTIFICATE, TLSConfigError)
    private = read_pem("--admin-tls-key", key, PRIVATE_KEY, TLSConfigError)
    roots = read_pem("--admin-client-ca", ca, CERTIFICATE, TLSConfigError) if ca is not None else None
    return grpc.ssl_server_credentials(
        [(private, chain)], root_certificates=roots, require_client_auth=roots is not None
    )
