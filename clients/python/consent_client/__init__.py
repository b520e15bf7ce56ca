"""consent_client: decide, from a pipeline, which destinations may receive an event given the user's consent.

`ConsentClient` / `AsyncConsentClient` talk to the consent sidecar over gRPC (deadlines,
retries, an explicit failure policy); `EmbeddedDecider` decides in-process with the sidecar's
own compiled index; `preference_updated_event` builds Segment's "Consent Preference Updated"
event. CMP adapters live in `consent_client.adapters`.
"""

from consent_client.client import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    AsyncConsentClient,
    AsyncDecisionStream,
    ConsentClient,
    FailurePolicy,
    RequestLike,
    RetryPolicy,
)
from consent_client.embedded import EmbeddedDecider
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
