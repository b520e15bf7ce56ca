"""A typed etcd v3 client for the fleet store: endpoints with failover, TLS, user/password, one error type.

Owns the connection to an etcd cluster, built on the etcd3aio library's generated stubs over
grpc.aio: one channel per `--etcd-endpoints` URL (so DNS names such as a Kubernetes Service
work, and a member that stops answering is left for the next one), a deadline on every call,
re-authentication when a user token expires, and the translation of every failure to
`EtcdUnavailable` (a `consent_core.errors.Unavailable`: UNAVAILABLE at the API). What it
offers is what the fleet store needs and nothing more: get and range reads, conditional
transactions, leases, and watches that report compaction instead of skipping over it.
Must never retry a transaction on its own after it may have reached etcd (the caller resolves
an ambiguous commit by reading), log values, or know the key layout (`keys`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import grpc
import grpc.aio
from consent_core.errors import Unavailable
from etcd3aio import _protobuf as pb

from consent_sidecar.etcd.settings import DEFAULT_PREFIX, EtcdSettings, parse_endpoint

__all__ = [
    "DEFAULT_PREFIX",
    "Compacted",
    "EtcdClient",
    "EtcdSettings",
    "EtcdUnavailable",
    "KeyValue",
    "TxnResult",
    "WatchBatch",
    "parse_endpoint",
    "prefix_end",
]

_RETRY_CODES: Final = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_MAX_MESSAGE: Final = 64 * 1024 * 1024
# etcd rejects pings more often than --grpc-keepalive-min-time (5 s by default) with GOAWAY.
_CHANNEL_OPTIONS: Final = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)
# Makes a member without a leader end our watches at once instead of going quiet (etcd's WithRequireLeader).
_REQUIRE_LEADER: Final = ("hasleader", "true")

_T = TypeVar("_T")


class EtcdUnavailable(Unavailable):
    """etcd cannot be reached, has no quorum, or refused us; `ambiguous` = a write may or may not have landed."""

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


class Compacted(Exception):  # a condition, not a failure: the caller re-reads
    """A watch asked for revisions etcd has compacted away: re-read the current state."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"revisions before {revision} were compacted")
        self.revision = revision


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with `prefix`."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\x00"


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store revision after the transaction (the new one when it wrote)
    ranges: list[list[KeyValue]]  # the key-values of each range op of the branch that ran, in order


@dataclass(frozen=True, slots=True)
class WatchBatch:
    revision: int  # the store revision this batch brings the watcher up to
    events: list[tuple[bool, KeyValue]]  # (deleted, key-value) in revision order


def _kv(m: Any) -> KeyValue:
    return KeyValue(bytes(m.key), bytes(m.value), int(m.mod_revision), int(m.create_revision), int(m.lease))


def _read_file(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


class _Endpoint:
    __slots__ = ("channel", "kv", "lease", "target", "watch")

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None) -> None:
        self.target = target
        options = list(_CHANNEL_OPTIONS)
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self.channel = grpc.aio.secure_channel(target, credentials, options=options)
        self.kv = pb.KVStub(self.channel)
        self.lease = pb.LeaseStub(self.channel)
        self.watch = pb.WatchStub(self.channel)


class EtcdClient:
    """One connection to an etcd cluster; use from one event loop. `close()` when done.

    Unary calls go to the current endpoint and move to the next on UNAVAILABLE or a missed
    deadline (each endpoint tried once per call). TLS files are read once, here: OSError
    for an unreadable one.
    """

    def __init__(self, settings: EtcdSettings) -> None:
        problems = settings.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.settings = settings
        targets = [parse_endpoint(u) for u in settings.endpoints]
        tls = settings.ca is not None or any(secure for _, secure in targets)
        credentials = None
        if tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read_file(settings.ca),
                private_key=_read_file(settings.key),
                certificate_chain=_read_file(settings.cert),
            )
        self._endpoints = [_Endpoint(t, credentials) for t, _ in targets]
        self._current = 0
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()
        self._closed = False

    @property
    def endpoint(self) -> str:
        """The endpoint calls currently go to (host:port)."""
        return self._endpoints[self._current].target

    def _rotate(self, failed: _Endpoint) -> None:
        if self._endpoints[self._current] is failed:
            self._current = (self._current + 1) % len(self._endpoints)

    def _metadata(self, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        token = (("token", self._token),) if self._token else ()
        return (*token, *extra)

    async def _authenticate(self, ep: _Endpoint, stale: str | None) -> None:
        s = self.settings
        if s.user is None:
            return
        async with self._auth_lock:
            if self._token is not None and self._token != stale:
                return  # another call re-authenticated already
            stub = pb.AuthStub(ep.channel)
            response = await stub.Authenticate(
                pb.AuthenticateRequest(name=s.user, password=s.password or ""), timeout=s.timeout
            )
            self._token = str(response.token)

    async def _call(self, what: str, call: Callable[[_Endpoint], Awaitable[_T]], *, write: bool = False) -> _T:
        """Runs `call` on the current endpoint, moving on to the next one on UNAVAILABLE / a missed deadline."""
        if self._closed:
            raise EtcdUnavailable(f"etcd {what}: the client is closed")
        last: grpc.aio.AioRpcError | None = None
        sent = False  # a write that reached an endpoint may have committed even though it failed
        reauthenticated = False
        attempts = len(self._endpoints)
        i = 0
        while i < attempts:
            ep = self._endpoints[self._current]
            try:
                if self.settings.user is not None and self._token is None:
                    await self._authenticate(ep, None)
                return await call(ep)
            except grpc.aio.AioRpcError as e:
                code = e.code()
                if code == grpc.StatusCode.UNAUTHENTICATED and self.settings.user is not None and not reauthenticated:
                    reauthenticated = True  # the token expired (or the member restarted): once more with a new one
                    stale, self._token = self._token, None
                    try:
                        await self._authenticate(ep, stale)
                    except grpc.aio.AioRpcError as auth_error:
                        last = auth_error
                        break
                    continue
                if code not in _RETRY_CODES:
                    raise EtcdUnavailable(f"etcd {what} refused by {ep.target}: {code.name}: {e.details()}") from None
                last = e
                sent = sent or (write and code == grpc.StatusCode.DEADLINE_EXCEEDED)
                self._rotate(ep)
                i += 1
        detail = f"{last.code().name}: {last.details()}" if last is not None else "no endpoint answered"
        raise EtcdUnavailable(
            f"etcd {what} failed on every endpoint ({', '.join(e.target for e in self._endpoints)}): {detail}",
            ambiguous=sent,
        )

    # ------------------------------------------------------------------ reads

    async def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """The key (None when absent) and the store revision of the read (linearizable)."""
        kvs, _, revision = await self.range(key)
        return (kvs[0] if kvs else None), revision

    async def range(
        self, key: bytes, range_end: bytes = b"", *, limit: int = 0, revision: int = 0, keys_only: bool = False,
        descending: bool = False,
    ) -> tuple[list[KeyValue], bool, int]:
        """Key-values in [key, range_end) in key order (or reversed): (kvs, more, store revision); linearizable."""
        request = pb.RangeRequest(key=key, range_end=range_end, limit=limit, revision=revision, keys_only=keys_only)
        if descending:
            request.sort_order = pb.RangeRequest.DESCEND
            request.sort_target = pb.RangeRequest.KEY

        async def call(ep: _Endpoint) -> Any:
            return await ep.kv.Range(request, metadata=self._metadata(), timeout=self.settings.timeout)

        response = await self._call("read", call)
        return [_kv(m) for m in response.kvs], bool(response.more), int(response.header.revision)

    # ------------------------------------------------------------------ transactions

    @staticmethod
    def compare_mod(key: bytes, mod_revision: int) -> Any:
        """Holds when `key`'s last write was at `mod_revision` (0: the key does not exist)."""
        return pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.MOD, key=key, mod_revision=mod_revision)

    @staticmethod
    def put(key: bytes, value: bytes, *, lease: int = 0) -> Any:
        return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, lease=lease))

    @staticmethod
    def read(key: bytes, range_end: bytes = b"", *, limit: int = 0) -> Any:
        return pb.RequestOp(request_range=pb.RangeRequest(key=key, range_end=range_end, limit=limit))

    async def txn(self, compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = ()) -> TxnResult:
        """One etcd transaction. EtcdUnavailable(ambiguous=True) when it may have committed anyway."""
        request = pb.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))

        async def call(ep: _Endpoint) -> Any:
            return await ep.kv.Txn(request, metadata=self._metadata(), timeout=self.settings.timeout)

        response = await self._call("transaction", call, write=True)
        ranges = [
            [_kv(m) for m in r.response_range.kvs]
            for r in response.responses
            if r.WhichOneof("response") == "response_range"
        ]
        return TxnResult(bool(response.succeeded), int(response.header.revision), ranges)

    async def put_value(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """A plain put (member records); returns the new store revision."""
        result = await self.txn([], [self.put(key, value, lease=lease)])
        return result.revision

    # ------------------------------------------------------------------ leases

    async def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; its id."""

        async def call(ep: _Endpoint) -> Any:
            return await ep.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl), metadata=self._metadata(),
                                             timeout=self.settings.timeout)  # fmt: skip

        response = await self._call("lease grant", call)
        return int(response.ID)

    async def keepalive(self, lease: int) -> int:
        """Renews `lease` once; its new TTL in seconds, 0 when it has expired."""

        async def call(ep: _Endpoint) -> Any:
            async def one() -> AsyncIterator[Any]:
                yield pb.LeaseKeepAliveRequest(ID=lease)

            stream = ep.lease.LeaseKeepAlive(one(), metadata=self._metadata(), timeout=self.settings.timeout)
            try:
                async for response in stream:
                    return response
                return None
            finally:
                stream.cancel()

        response = await self._call("lease keepalive", call)
        return 0 if response is None else max(0, int(response.TTL))

    async def revoke(self, lease: int) -> None:
        async def call(ep: _Endpoint) -> Any:
            return await ep.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease), metadata=self._metadata(),
                                              timeout=self.settings.timeout)  # fmt: skip

        await self._call("lease revoke", call)

    # ------------------------------------------------------------------ watching

    async def watch(self, key: bytes, range_end: bytes = b"", *, start_revision: int) -> AsyncIterator[WatchBatch]:
        """Every change of [key, range_end) from `start_revision` on, batch by batch, until cancelled.

        Raises Compacted when etcd no longer has `start_revision`, EtcdUnavailable when the
        stream breaks (the endpoint is left for the next one): re-read, then watch again.
        """
        ep = self._endpoints[self._current]
        if self.settings.user is not None and self._token is None:
            await self._call("authenticate", lambda _ep: asyncio.sleep(0))
        create = pb.WatchCreateRequest(
            key=key, range_end=range_end, start_revision=start_revision, progress_notify=True
        )
        stop = asyncio.Event()

        async def requests() -> AsyncIterator[Any]:
            yield pb.WatchRequest(create_request=create)
            await stop.wait()  # the stream stays open until we leave

        call = ep.watch.Watch(requests(), metadata=self._metadata(_REQUIRE_LEADER))
        try:
            async for response in call:
                if response.compact_revision:
                    raise Compacted(int(response.compact_revision))
                if response.canceled:
                    self._rotate(ep)
                    reason = response.cancel_reason or "no reason"
                    raise EtcdUnavailable(f"etcd watch cancelled by {ep.target}: {reason}")
                yield WatchBatch(int(response.header.revision), [(e.type == 1, _kv(e.kv)) for e in response.events])
        except grpc.aio.AioRpcError as e:
            self._rotate(ep)
            raise EtcdUnavailable(f"etcd watch on {ep.target} broke: {e.code().name}: {e.details()}") from None
        finally:
            stop.set()
            call.cancel()
        self._rotate(ep)
        raise EtcdUnavailable(f"etcd watch on {ep.target} ended")

    # ------------------------------------------------------------------ maintenance

    async def compact(self, revision: int) -> None:
        """Compacts the store's history up to `revision` (tests and operators)."""

        async def call(ep: _Endpoint) -> Any:
            return await ep.kv.Compact(pb.CompactionRequest(revision=revision, physical=True),
                                       metadata=self._metadata(), timeout=self.settings.timeout)  # fmt: skip

        await self._call("compaction", call)

    async def close(self) -> None:
        self._closed = True
        for ep in self._endpoints:
            with contextlib.suppress(Exception):
                await ep.channel.close()
