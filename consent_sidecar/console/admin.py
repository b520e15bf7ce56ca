"""The console's only way to the sidecar: consent.v1.AdminService calls made with a session's token.

`AdminGateway` owns one gRPC channel (plaintext, TLS or mTLS) to the admin listener and turns
each console action into exactly one AdminService call carrying `authorization: Bearer
<token>` of the signed-in session, so the console can never do more than that token may.
Failures come back as `AdminError` (the API's status code and message, verbatim), and
`http_status` / `field_messages` are the one translation of them into HTTP and form fields.
Must never log, store or render a token, and never decide on its own whether a write is
allowed: the AdminService does.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
import grpc.aio
from consent.v1 import admin_pb2, admin_pb2_grpc
from google.protobuf import field_mask_pb2

__all__ = ["AdminError", "AdminGateway", "CategoryFields", "Role", "valid_token"]

Code = grpc.StatusCode

# The API's status -> the console's HTTP status. Everything unlisted is the sidecar's fault (502).
_HTTP: Final[dict[grpc.StatusCode, int]] = {
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,  # confirm_name does not match: the caller's input, nothing changed
    Code.OUT_OF_RANGE: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409,  # stale etag: someone else changed it first
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}

# Error messages name their field first ("category.id: must not start with a digit"); several
# problems are joined with "; ". Field paths -> the console's form fields.
_FIELD_PATH: Final = re.compile(
    r"(?:^|; )(?P<path>category\.(?P<field>id|name|destinations|shadow)(?P<index>\[\d+\])?|confirm_name)(?=: )"
)

_MAX_TOKEN: Final = 4096


class Role(enum.StrEnum):
    """What the signed-in token may do, as the AdminService answered it (pages render accordingly)."""

    OWNER = "owner"
    MEMBER = "member"


def valid_token(token: str) -> bool:
    """True if `token` can travel as a bearer token (visible ASCII, bounded); others never reach the API."""
    return 0 < len(token) <= _MAX_TOKEN and token.isascii() and token.isprintable() and " " not in token


class AdminError(Exception):
    """An AdminService call failed: its status code and the API's own message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP.get(self.code, 502)

    def field_messages(self) -> dict[str, str]:
        """Each problem of the message beside its form field (`id`, `name`, `destinations`, `confirm_name`).

        A field's text is the API's words after its path ("must not start with a digit"); an indexed
        destination keeps its index ("destinations[1]: must not be empty"). Problems naming no form
        field are under "" (the form's summary shows the whole message anyway).
        """
        starts = list(_FIELD_PATH.finditer(self.message))
        if not starts:
            return {"": self.message}
        out: dict[str, list[str]] = {}
        if starts[0].start() > 0:
            out.setdefault("", []).append(self.message[: starts[0].start()])
        for i, m in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(self.message)
            text = self.message[m.start("path") : end]
            field = m.group("field") or m.group("path")
            # An indexed destination keeps its index; a plain field drops its path and ": ".
            text = text.removeprefix("category.") if m.group("index") else text[len(m.group("path")) + 2 :]
            out.setdefault(field, []).append(text)
        return {field: "; ".join(parts) for field, parts in out.items()}


@dataclass(frozen=True, slots=True)
class CategoryFields:
    """What the create and edit forms send: id, name, and destinations in the order typed."""

    id: str
    name: str
    destinations: tuple[str, ...]

    def message(self) -> admin_pb2.Category:
        return admin_pb2.Category(id=self.id, name=self.name, destinations=list(self.destinations))


class AdminGateway:
    """AdminService over one channel, opened on first use in the running event loop.

    `target` is the admin listener (host:port or unix:/path); `credentials` None = plaintext.
    Every method takes the caller's token and makes one call.
    """

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None = None, *, timeout: float = 10.0):
        self.target = target
        self._credentials = credentials
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: admin_pb2_grpc.AdminServiceStub | None = None

    def _service(self) -> admin_pb2_grpc.AdminServiceStub:
        if self._stub is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target)
            else:
                self._channel = grpc.aio.secure_channel(self.target, self._credentials)
            self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._stub = None

    async def _call(self, rpc: str, request: Any, token: str) -> Any:
        method = getattr(self._service(), rpc)
        try:
            return await method(request, metadata=(("authorization", f"Bearer {token}"),), timeout=self._timeout)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            message = e.details() or code.name
            if code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED) and "sidecar" not in message:
                # A transport failure's text is about sockets; say which service did not answer.
                message = f"the sidecar's admin API at {self.target} did not answer ({code.name}: {message})"
            raise AdminError(code, message) from None

    # -- reads (owners and members) ------------------------------------------------------------

    async def policy_status(self, token: str) -> admin_pb2.PolicyStatus:
        status: admin_pb2.PolicyStatus = await self._call("GetPolicyStatus", admin_pb2.GetPolicyStatusRequest(), token)
        return status

    async def fleet_status(self, token: str) -> admin_pb2.FleetStatus | None:
        """The fleet store's members; None when the sidecar's policy source is a file (no fleet)."""
        try:
            status: admin_pb2.FleetStatus = await self._call(
                "GetFleetStatus", admin_pb2.GetFleetStatusRequest(), token
            )
        except AdminError as e:
            if e.code == Code.FAILED_PRECONDITION:
                return None
            raise
        return status

    async def list_categories(self, token: str) -> admin_pb2.ListCategoriesResponse:
        r: admin_pb2.ListCategoriesResponse = await self._call(
            "ListCategories", admin_pb2.ListCategoriesRequest(), token
        )
        return r

    async def get_category(self, token: str, category_id: str) -> admin_pb2.Category:
        c: admin_pb2.Category = await self._call(
            "GetCategory", admin_pb2.GetCategoryRequest(category_id=category_id), token
        )
        return c

    async def audit_page(
        self, token: str, *, category_id: str = "", action: int = 0, after: int = 0, page_size: int = 0,
        page_token: str = "",
    ) -> admin_pb2.ListAuditEventsResponse:
        request = admin_pb2.ListAuditEventsRequest(
            page_size=page_size, page_token=page_token, category_id=category_id, action=action,  # type: ignore[arg-type]
            after_sequence=after,
        )
        r: admin_pb2.ListAuditEventsResponse = await self._call("ListAuditEvents", request, token)
        return r

    async def role(self, token: str) -> Role:
        """What `token` may do, asked of the AdminService (GetCaller: a read, nothing recorded)."""
        caller: admin_pb2.Caller = await self._call("GetCaller", admin_pb2.GetCallerRequest(), token)
        return Role.OWNER if caller.role == admin_pb2.ROLE_OWNER else Role.MEMBER

    # -- writes (owners; the AdminService refuses members) -------------------------------------

    async def create_category(self, token: str, fields: CategoryFields) -> admin_pb2.Category:
        c: admin_pb2.Category = await self._call(
            "CreateCategory", admin_pb2.CreateCategoryRequest(category=fields.message()), token
        )
        return c

    async def update_category(
        self, token: str, category_id: str, fields: CategoryFields, etag: str,
        paths: Sequence[str] = ("id", "name", "destinations"),
    ) -> admin_pb2.Category:
        """UpdateCategory of the form's fields only (shadow is left as it is), conditional on `etag`."""
        request = admin_pb2.UpdateCategoryRequest(
            category_id=category_id, category=fields.message(),
            update_mask=field_mask_pb2.FieldMask(paths=list(paths)), etag=etag,
        )
        c: admin_pb2.Category = await self._call("UpdateCategory", request, token)
        return c

    async def disable_category(self, token: str, category_id: str, confirm_name: str, etag: str) -> admin_pb2.Category:
        request = admin_pb2.DisableCategoryRequest(category_id=category_id, confirm_name=confirm_name, etag=etag)
        c: admin_pb2.Category = await self._call("DisableCategory", request, token)
        return c

    async def enable_category(self, token: str, category_id: str, etag: str) -> admin_pb2.Category:
        request = admin_pb2.EnableCategoryRequest(category_id=category_id, etag=etag)
        c: admin_pb2.Category = await self._call("EnableCategory", request, token)
        return c

    async def delete_category(self, token: str, category_id: str, confirm_name: str, etag: str) -> None:
        request = admin_pb2.DeleteCategoryRequest(category_id=category_id, confirm_name=confirm_name, etag=etag)
        await self._call("DeleteCategory", request, token)
