"""consent_client: decide, from a pipeline, which destinations may receive an event given the user's consent.

`ConsentClient` / `AsyncConsentClient` talk to the consent sidecar over gRPC (deadlines,
retries, an explicit failure policy); `EmbeddedDecider` decides in-process with the sidecar's
own compiled index; `preference_updated_event` builds Segment's "Consent Preference Updated"
event. CMP adapters live in `consent_client.adapters`.

Importing this package needs only grpcio and protobuf: `EmbeddedDecider` (and with it
consent-core, the `[embedded]` extra) is imported on first use, never before.
"""

from typing import TYPE_CHECKING, Any

from consent_client._policy import DEFAULT_TARGET, DEFAULT_TIMEOUT, FailurePolicy
from consent_client._retry import RetryPolicy
from consent_client._wire import RequestLike
from consent_client.aio import AsyncConsentClient, AsyncDecisionStream
from consent_client.client import ConsentClient
from consent_client.errors import (
    ClientClosedError,
    ClientError,
    ConsentError,
    DeadlineExceeded,
    InvalidArgument,
    MappingFileError,
    ResourceExhausted,
    ServerError,
    Unavailable,
)
from consent_client.events import PREFERENCE_UPDATED_EVENT, preference_updated_event
from consent_client.results import DecideResult, Decision, PolicyVersion, Reason, Request

if TYPE_CHECKING:
    from consent_client.embedded import EmbeddedDecider

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "PREFERENCE_UPDATED_EVENT",
    "AsyncConsentClient",
    "AsyncDecisionStream",
    "ClientClosedError",
    "ClientError",
    "ConsentClient",
    "ConsentError",
    "DeadlineExceeded",
    "DecideResult",
    "Decision",
    "EmbeddedDecider",
    "FailurePolicy",
    "InvalidArgument",
    "MappingFileError",
    "PolicyVersion",
    "Reason",
    "Request",
    "RequestLike",
    "ResourceExhausted",
    "RetryPolicy",
    "ServerError",
    "Unavailable",
    "preference_updated_event",
]


def __getattr__(name: str) -> Any:
    # PEP 562: the embedded mode (consent-core, the YAML stack) loads only when asked for.
    if name == "EmbeddedDecider":
        from consent_client._optional import core_required

        with core_required("EmbeddedDecider"):
            from consent_client.embedded import EmbeddedDecider
        globals()[name] = EmbeddedDecider  # later lookups skip this function
        return EmbeddedDecider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
