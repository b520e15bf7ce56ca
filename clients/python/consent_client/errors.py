"""The client's exception hierarchy, keyed by gRPC status code (python-api-core style).

Every `grpc.RpcError` is translated exactly once, at the stub boundary, by `from_rpc_error`,
so callers catch `ConsentError` (or one subclass) and never a raw gRPC error. The embedded
decider raises the same classes, so code written against the sidecar runs unchanged
in-process. This module never talks to the network.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ClientClosedError",
    "ClientError",
    "ConsentError",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "MappingFileError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "exception_for",
    "from_rpc_error",
]

_BY_CODE: dict[grpc.StatusCode, type[ConsentError]] = {}


class ConsentError(Exception):
    """Base of every error the client raises on purpose.

    `code` is the gRPC status (None for errors that never crossed the wire), `message` the
    server's details, `attempts` how many RPC attempts were made before giving up.
    """

    grpc_status_code: ClassVar[grpc.StatusCode | None] = None

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("grpc_status_code")
        if code is not None:
            _BY_CODE[code] = cls

    @property
    def code(self) -> grpc.StatusCode | None:
        return self.grpc_status_code

    def __str__(self) -> str:
        code = self.grpc_status_code
        return f"{code.name}: {self.message}" if code is not None else self.message


class ClientError(ConsentError):
    """The request was wrong (the caller must change something); never retried."""


class ServerError(ConsentError):
    """The sidecar could not answer; UNAVAILABLE is retried, the rest are not."""


class Cancelled(ClientError):
    grpc_status_code = grpc.StatusCode.CANCELLED


class InvalidArgument(ClientError):
    """Malformed input; the message names the offending field."""

    grpc_status_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ClientError):
    grpc_status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ClientError):
    grpc_status_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ClientError):
    grpc_status_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ClientError):
    grpc_status_code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ClientError):
    """A limit was exceeded (message size, too many destinations or batch entries)."""

    grpc_status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ClientError):
    grpc_status_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ClientError):
    grpc_status_code = grpc.StatusCode.ABORTED


class OutOfRange(ClientError):
    grpc_status_code = grpc.StatusCode.OUT_OF_RANGE


class Unknown(ServerError):
    grpc_status_code = grpc.StatusCode.UNKNOWN


class DeadlineExceeded(ServerError):
    """No answer within the call's deadline; not retried (the deadline is the caller's whole budget)."""

    grpc_status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(ServerError):
    grpc_status_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ServerError):
    grpc_status_code = grpc.StatusCode.INTERNAL


class Unavailable(ServerError):
    """The sidecar cannot be reached (or is shutting down); retried with backoff."""

    grpc_status_code = grpc.StatusCode.UNAVAILABLE


class DataLoss(ServerError):
    grpc_status_code = grpc.StatusCode.DATA_LOSS


class ClientClosedError(ConsentError):
    """The client (or stream) was used after `close()`."""


class MappingFileError(ConsentError):
    """The embedded decider could not load its mapping file (the message lists every problem)."""


def exception_for(code: grpc.StatusCode, message: str, *, attempts: int = 1) -> ConsentError:
    """The exception of the class registered for `code` (`ConsentError` itself for OK or unknown codes)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return ConsentError(f"{code.name}: {message}", attempts=attempts)
    return cls(message, attempts=attempts)


def from_rpc_error(error: grpc.RpcError, *, attempts: int = 1) -> ConsentError:
    """Translates a raw gRPC error (sync or aio) into the client hierarchy; the original is kept as `__cause__`."""
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    exc = exception_for(code, str(details) if details else code.name.lower().replace("_", " "), attempts=attempts)
    exc.__cause__ = error
    return exc
