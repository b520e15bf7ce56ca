"""AdminService on grpc.aio: categories (reads, owner writes), policy status and the audit trail, as consent.v1.

Reads take the policy snapshot once per RPC; the audit RPCs call `AuditLog` (paging in a
worker thread, watching through its bounded per-watcher fan-out); writes become pure
`consent_core.edits` requests applied by `PolicyWriter.apply_edit`. Every RPC passes one gate
first, `_gate(context, rpc, write=...)`, through the `_read` / `_write` / `_read_stream`
decorators: authentication and role checks plug in there (a `Gate`, in `serve` the
`consent_sidecar.auth.gate.Authenticator`) without touching any method; a write method is
handed the principal id as its audit actor. Core errors reach clients only through
`consent_sidecar.services.status`. Must never decide policy, write the mapping itself (writes go
through `consent_sidecar.store.writer.PolicyWriter`), log tokens or category bodies, or let a slow
WatchAuditEvents client hold up appends or other watchers.

WatchAuditEvents streams are `audit_watch.WatchStreams`' (at most MAX_WATCH_STREAMS_PER_PRINCIPAL
per principal, revoked ones ended at the principals reload, history replayed within the
process's replay budget, each event encoded once for every stream); register the service with
`add_to_server`, which serves them as bytes. A write is not applied once its caller has gone
(deadline or cancel): the writer asks before the file is written and before the change is
recorded.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar

import grpc
import grpc.aio
from consent.v1 import admin_pb2, admin_pb2_grpc, decision_pb2
from consent_core import edits
from consent_core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SidecarError,
    Unauthenticated,
    Unavailable,
)
from consent_core.model import Category, category_etag

from consent_sidecar.audit.pacing import ReplayPacer
from consent_sidecar.audit.trail import AuditTrail
from consent_sidecar.auth.principals import Principal
from consent_sidecar.config import DEFAULT_AUDIT_REPLAY_RATE
from consent_sidecar.services import audit_watch
from consent_sidecar.services.audit_watch import MAX_WATCH_STREAMS_PER_PRINCIPAL, audit_event
from consent_sidecar.services.audit_watch import timestamp as _timestamp
from consent_sidecar.services.status import abort
from consent_sidecar.store.policy import PolicyStore, Snapshot
from consent_sidecar.store.ports import PolicyWriterPort, StoreInfo

__all__ = [
    "DEFAULT_AUDIT_REPLAY_RATE",
    "DEFAULT_WATCH_BUFFER",
    "MAX_WATCH_STREAMS_PER_PRINCIPAL",
    "SERVICE_NAME",
    "AdminService",
    "Gate",
    "add_to_server",
    "audit_event",
    "category_message",
]

SERVICE_NAME: Final = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
DEFAULT_WATCH_BUFFER: Final = 4096  # live audit events waiting per WatchAuditEvents client before it is cut off
_SQLITE_MAX: Final = (1 << 63) - 1  # uint64 fields beyond this name no stored sequence

_Context = grpc.aio.ServicerContext[Any, Any]
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class Gate(Protocol):
    """Decides who calls an admin RPC; ends the RPC (UNAUTHENTICATED / PERMISSION_DENIED) if they may not."""

    async def principal(self, context: _Context, rpc: str, *, write: bool) -> Principal: ...

    def still_valid(self, principal: Principal, *, write: bool) -> SidecarError | None:
        """Why a call `principal` opened earlier must end now (its principal revoked), or None."""
        ...

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Calls `callback()` whenever the principals change (then `still_valid` may answer otherwise)."""
        ...

    async def aclose(self) -> None:
        """Shutdown: write what the gate still holds (counted refusals)."""
        ...


# ---------------------------------------------------------------------------- translation


def _version(snap: Snapshot) -> decision_pb2.PolicyVersion:
    return decision_pb2.PolicyVersion(generation=snap.generation, digest=snap.digest)


def category_message(c: Category) -> admin_pb2.Category:
    """A model Category as consent.v1.Category, `enabled` always set, with its etag."""
    return admin_pb2.Category(
        id=c.id, name=c.name, destinations=list(c.destinations), enabled=c.enabled, shadow=c.shadow,
        etag=category_etag(c),
    )


def _fields(c: admin_pb2.Category) -> edits.CategoryFields:
    """A request's Category as plain fields; `enabled` None when unset (its etag is never read)."""
    return edits.CategoryFields(
        id=c.id,
        name=c.name,
        destinations=tuple(c.destinations),
        enabled=c.enabled if c.HasField("enabled") else None,
        shadow=c.shadow,
    )


def _sequence(value: int) -> int:
    return min(value, _SQLITE_MAX)


# ---------------------------------------------------------------------------- the gate


_Unary = Callable[["AdminService", _Req, _Context], Awaitable[_Resp]]
_ServerStream = Callable[["AdminService", _Req, _Context], AsyncIterator[_Resp]]


def _unary(*, write: bool) -> Callable[[_Unary[_Req, _Resp]], _Unary[_Req, _Resp]]:
    def wrap(method: _Unary[_Req, _Resp]) -> _Unary[_Req, _Resp]:
        rpc = method.__name__

        @functools.wraps(method)
        async def handler(self: AdminService, request: _Req, context: _Context) -> _Resp:
            await self._gate(context, rpc, write=write)
            try:
                return await method(self, request, context)
            except SidecarError as e:
                await abort(context, e)

        return handler

    return wrap


_read = _unary(write=False)

_WriteMethod = Callable[["AdminService", _Req, _Context, str], Awaitable[_Resp]]


def _write(method: _WriteMethod[_Req, _Resp]) -> _Unary[_Req, _Resp]:
    """A write RPC: the gate must name an owner; the method gets the principal id as its audit actor."""
    rpc = method.__name__

    async def handler(self: AdminService, request: _Req, context: _Context) -> _Resp:
        principal = await self._gate(context, rpc, write=True)
        if principal is None:  # a listener built without a gate serves reads only
            await abort(context, Unauthenticated(f"{rpc}: admin writes need authentication (serve --principals)"))
        try:
            return await method(self, request, context, principal.id)
        except SidecarError as e:
            await abort(context, e)

    functools.update_wrapper(handler, method)
    return handler


_StreamMethod = Callable[["AdminService", _Req, _Context, Principal | None], AsyncIterator[_Resp]]


def _read_stream(method: _StreamMethod[_Req, _Resp]) -> _ServerStream[_Req, _Resp]:
    """A server-streaming read: the method gets the caller (None without a gate), to hold its stream by."""
    rpc = method.__name__

    async def handler(self: AdminService, request: _Req, context: _Context) -> AsyncIterator[_Resp]:
        principal = await self._gate(context, rpc, write=False)
        try:
            async for item in method(self, request, context, principal):
                yield item
        except SidecarError as e:
            await abort(context, e)

    functools.update_wrapper(handler, method)
    return handler


# ---------------------------------------------------------------------------- the service


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    """consent.v1.AdminService over a PolicyStore, its AuditLog and (for writes) the PolicyWriter.

    `gate` None = no authentication: reads are open and writes refused (UNAUTHENTICATED);
    `serve` never builds it so (an admin listener needs --principals).
    `watch_buffer` = live events queued per WatchAuditEvents client before RESOURCE_EXHAUSTED;
    `replay_rate` = history events per second replayed to WatchAuditEvents streams catching
    up, all of them together (None: unpaced).
    """

    def __init__(
        self,
        store: PolicyStore,
        audit: AuditTrail,
        *,
        writer: PolicyWriterPort | None = None,
        gate: Gate | None = None,
        watch_buffer: int = DEFAULT_WATCH_BUFFER,
        replay_rate: float | None = DEFAULT_AUDIT_REPLAY_RATE,
        fleet: StoreInfo | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._writer = writer
        self._gate_impl = gate
        self._fleet = fleet  # None: the policy source is a file
        pacer = ReplayPacer(replay_rate) if replay_rate is not None else None
        self.watches = audit_watch.WatchStreams(audit, buffer=watch_buffer, pacer=pacer)
        if gate is not None:
            gate.subscribe(self._principals_changed)

    async def _gate(self, context: _Context, rpc: str, *, write: bool) -> Principal | None:
        """The caller of `rpc`, or None while there is no authentication; aborts the RPC if refused."""
        if self._gate_impl is None:
            return None
        return await self._gate_impl.principal(context, rpc, write=write)

    def end_watches(self) -> None:
        """Shutdown: every WatchAuditEvents stream ends cleanly (OK) at its next step; new ones end at once.

        Called before the drain, so long-lived streams never hold a shutdown up for the whole grace period.
        """
        self.watches.close()

    async def aclose(self) -> None:
        """Shutdown, after the drain and before the audit log closes: the gate writes what it still holds."""
        if self._gate_impl is not None:
            await self._gate_impl.aclose()

    def _principals_changed(self) -> None:
        """After a principals reload (any thread): end the streams of principals no longer allowed."""
        gate = self._gate_impl
        if gate is not None:
            self.watches.revoke(functools.partial(gate.still_valid, write=False))

    # ------------------------------------------------------------------ categories

    @_read
    async def ListCategories(
        self, request: admin_pb2.ListCategoriesRequest, context: _Context
    ) -> admin_pb2.ListCategoriesResponse:
        snap = self._store.current
        return admin_pb2.ListCategoriesResponse(
            categories=[category_message(c) for c in snap.index.mapping.categories], policy=_version(snap)
        )

    @_read
    async def GetCategory(self, request: admin_pb2.GetCategoryRequest, context: _Context) -> admin_pb2.Category:
        if not request.category_id:
            raise InvalidArgument("category_id", "must not be empty")
        category = self._store.current.index.mapping.category(request.category_id)
        if category is None:
            raise NotFound(f"category_id: no category {request.category_id!r}")
        return category_message(category)

    # ------------------------------------------------------------------ writes
    #
    # Each write is translated into a pure `consent_core.edits` request and handed to the one write
    # path, `PolicyWriter.apply_edit`, which returns once the change is on disk, live and
    # audited (read-your-writes); its errors carry their status (consent_sidecar.services.status).

    async def _apply(self, edit: edits.Edit, actor: str, context: _Context) -> tuple[edits.EditResult, Snapshot]:
        if self._writer is None:
            raise Unavailable("admin writes are not enabled on this listener")

        def alive() -> bool:  # asked by the writer before its point of no return
            if context.done():
                return False
            remaining = context.time_remaining()
            return remaining is None or remaining > 0

        return await self._writer.apply_edit(edit, actor, alive=alive)

    @_write
    async def CreateCategory(
        self, request: admin_pb2.CreateCategoryRequest, context: _Context, actor: str
    ) -> admin_pb2.Category:
        result, _ = await self._apply(edits.Create(_fields(request.category)), actor, context)
        return category_message(result.category)

    @_write
    async def UpdateCategory(
        self, request: admin_pb2.UpdateCategoryRequest, context: _Context, actor: str
    ) -> admin_pb2.Category:
        edit = edits.Update(
            request.category_id, _fields(request.category), tuple(request.update_mask.paths), request.etag
        )
        result, _ = await self._apply(edit, actor, context)
        return category_message(result.category)

    @_write
    async def DisableCategory(
        self, request: admin_pb2.DisableCategoryRequest, context: _Context, actor: str
    ) -> admin_pb2.Category:
        edit = edits.Disable(request.category_id, request.confirm_name, request.etag)
        result, _ = await self._apply(edit, actor, context)
        return category_message(result.category)

    @_write
    async def EnableCategory(
        self, request: admin_pb2.EnableCategoryRequest, context: _Context, actor: str
    ) -> admin_pb2.Category:
        result, _ = await self._apply(edits.Enable(request.category_id, request.etag), actor, context)
        return category_message(result.category)

    @_write
    async def DeleteCategory(
        self, request: admin_pb2.DeleteCategoryRequest, context: _Context, actor: str
    ) -> admin_pb2.DeleteCategoryResponse:
        edit = edits.Delete(request.category_id, request.confirm_name, request.etag)
        _, snap = await self._apply(edit, actor, context)
        return admin_pb2.DeleteCategoryResponse(policy=_version(snap))

    # ------------------------------------------------------------------ status

    @_read
    async def GetPolicyStatus(
        self, request: admin_pb2.GetPolicyStatusRequest, context: _Context
    ) -> admin_pb2.PolicyStatus:
        store = self._store
        snap = store.current
        # Read the error fields as one pair: a reload on another thread replaces both.
        last_error, last_error_at = store.last_error, store.last_error_at
        status = admin_pb2.PolicyStatus(
            policy=_version(snap),
            source=snap.source,
            loaded_at=_timestamp(snap.loaded_at),
            reloads=store.reloads,
            failed_reloads=store.failed_reloads,
            last_error=last_error or "",
            categories=len(snap.index.mapping.categories),
            destinations=len(snap.index.known_destinations),
            store="file",
            store_connected=True,
        )
        head = self._audit.head
        if head is not None:  # compare with a head kept elsewhere: a cut trail shows here
            status.audit_head_sequence = head.sequence
            status.audit_head_hash = head.hash
        if last_error is not None and last_error_at is not None:
            status.last_error_at.CopyFrom(_timestamp(last_error_at))
        if self._fleet is not None:
            st = self._fleet.status()
            status.store, status.store_connected, status.store_revision = st.store, st.connected, st.revision
            if st.disconnected_since is not None:
                status.disconnected_since.CopyFrom(_timestamp(st.disconnected_since))
        return status

    async def GetCaller(self, request: admin_pb2.GetCallerRequest, context: _Context) -> admin_pb2.Caller:
        principal = await self._gate(context, "GetCaller", write=False)
        if principal is None:  # a listener built without a gate has no callers to name
            await abort(context, Unauthenticated("GetCaller: this admin listener has no principals"))
        role = admin_pb2.ROLE_OWNER if principal.can_write else admin_pb2.ROLE_MEMBER
        return admin_pb2.Caller(principal_id=principal.id, role=role)

    @_read
    async def GetFleetStatus(
        self, request: admin_pb2.GetFleetStatusRequest, context: _Context
    ) -> admin_pb2.FleetStatus:
        if self._fleet is None:  # a file-backed sidecar has no fleet store to report on
            raise FailedPrecondition("the policy source is a file: no fleet store (serve --etcd-endpoints)")
        view = await self._fleet.view()
        return admin_pb2.FleetStatus(
            store_revision=view.store_revision,
            store_digest=view.store_digest,
            members=[
                admin_pb2.FleetMember(
                    member_id=m.member_id, address=m.address,
                    policy=decision_pb2.PolicyVersion(generation=m.generation, digest=m.digest),
                    store_revision=m.store_revision, connected=m.connected, last_error=m.last_error,
                    updated_at=_timestamp(m.updated_at),
                )
                for m in view.members
            ],
        )

    # ------------------------------------------------------------------ audit

    @_read
    async def ListAuditEvents(
        self, request: admin_pb2.ListAuditEventsRequest, context: _Context
    ) -> admin_pb2.ListAuditEventsResponse:
        records, token = await asyncio.to_thread(
            self._audit.page,
            page_size=request.page_size,
            page_token=request.page_token,
            category_id=request.category_id,
            action=int(request.action),
            after_sequence=_sequence(request.after_sequence),
        )
        return admin_pb2.ListAuditEventsResponse(events=[audit_event(r) for r in records], next_page_token=token)

    @_read_stream
    def WatchAuditEvents(
        self, request: admin_pb2.WatchAuditEventsRequest, context: _Context, principal: Principal | None
    ) -> AsyncIterator[bytes]:
        # Encoded consent.v1.AuditEvent messages: `add_to_server` registers this method without a serializer.
        return self.watches.stream(_sequence(request.after_sequence), principal)


def add_to_server(servicer: AdminService, server: grpc.aio.Server) -> str:
    """Registers `servicer` (WatchAuditEvents as encoded bytes) and returns the service name."""
    return audit_watch.add_to_server(servicer, server, SERVICE_NAME)
