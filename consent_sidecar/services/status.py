"""The one translation of core exceptions (consent_core.errors) into gRPC status codes.

Servicers catch `SidecarError` and hand it here; nothing else in the code base picks a status
code for a core error. Must never leak internals into a status message: the message is the
exception's own text, which the core writes for clients (it names the offending field).

Every message leaves here printable and valid UTF-8 (`consent_core.errors.printable`): grpc
encodes the details only after the handler returned, and a message it cannot encode (a lone
surrogate) would leave the call unanswered until its deadline. `abort_internal` is the last
resort of a handler hit by an exception nobody expected: INTERNAL with a fixed message.
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

import grpc
import grpc.aio
from consent_core import errors
from consent_core.errors import printable

from consent_sidecar.audit import AuditError

__all__ = ["INTERNAL_MESSAGE", "abort", "abort_internal", "safe_message", "status_code", "status_of"]

INTERNAL_MESSAGE: Final = "internal error: the sidecar could not answer this call (logged); retry or report it"

_CODES: Final[dict[type[errors.SidecarError], grpc.StatusCode]] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    # An edit that would make the mapping invalid is the caller's malformed input.
    errors.MappingError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    # The audit database is closed (shutting down) or unusable: retry against a healthy sidecar.
    AuditError: grpc.StatusCode.UNAVAILABLE,
}


def status_code(exc: errors.SidecarError) -> grpc.StatusCode:
    """The status for `exc`, by the nearest mapped class in its MRO (subclasses inherit); else INTERNAL."""
    for cls in type(exc).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def safe_message(message: str) -> str:
    """`message` as status details: printable, valid UTF-8 (unprintable characters escaped)."""
    return printable(message)


def status_of(exc: errors.SidecarError) -> tuple[grpc.StatusCode, str]:
    """(code, message) for `exc`; the message is never empty, always printable and valid UTF-8."""
    message = str(exc) or type(exc).__name__
    return status_code(exc), safe_message(message)


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: errors.SidecarError) -> NoReturn:
    """Ends the RPC with the status for `exc` (raises, as `context.abort` does)."""
    code, message = status_of(exc)
    await context.abort(code, message)


async def abort_internal(context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
    """Ends the RPC with INTERNAL and a fixed message: nothing of the failure reaches the caller."""
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
