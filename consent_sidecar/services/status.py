"""The one translation of core exceptions (consent_core.errors) into gRPC status codes.

Servicers catch `SidecarError` and hand it here; nothing else in the code base picks a status
code for a core error. Must never leak internals into a status message: the message is the
exception's own text, which the core writes for clients (it names the offending field).
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

import grpc
import grpc.aio
from consent_core import errors

from consent_sidecar.audit import AuditError

__all__ = ["abort", "status_code", "status_of"]

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


def status_of(exc: errors.SidecarError) -> tuple[grpc.StatusCode, str]:
    """(code, message) for `exc`; the message is never empty."""
    message = str(exc) or type(exc).__name__
    return status_code(exc), message


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: errors.SidecarError) -> NoReturn:
    """Ends the RPC with the status for `exc` (raises, as `context.abort` does)."""
    code, message = status_of(exc)
    await context.abort(code, message)
