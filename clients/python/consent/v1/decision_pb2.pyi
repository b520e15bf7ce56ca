from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    REASON_NO_CONSENT: _ClassVar[Reason]
    REASON_UNMAPPED: _ClassVar[Reason]
    REASON_GRANTED: _ClassVar[Reason]
    REASON_DENIED: _ClassVar[Reason]
    REASON_EXEMPT: _ClassVar[Reason]
    REASON_UNKNOWN_DESTINATION: _ClassVar[Reason]
    REASON_DISABLED_BY_EVENT: _ClassVar[Reason]
    REASON_PREFERENCE_EVENT: _ClassVar[Reason]
REASON_UNSPECIFIED: Reason
REASON_NO_CONSENT: Reason
REASON_UNMAPPED: Reason
REASON_GRANTED: Reason
REASON_DENIED: Reason
REASON_EXEMPT: Reason
REASON_UNKNOWN_DESTINATION: Reason
REASON_DISABLED_BY_EVENT: Reason
REASON_PREFERENCE_EVENT: Reason

class Consent(_message.Message):
    __slots__ = ("category_preferences",)
    class CategoryPreferencesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    CATEGORY_PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    category_preferences: _containers.ScalarMap[str, bool]
    def __init__(self, category_preferences: _Optional[_Mapping[str, bool]] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("consent", "segment_event", "destinations", "explain")
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_EVENT_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    consent: Consent
    segment_event: bytes
    destinations: _containers.RepeatedScalarFieldContainer[str]
    explain: bool
    def __init__(self, consent: _Optional[_Union[Consent, _Mapping]] = ..., segment_event: _Optional[bytes] = ..., destinations: _Optional[_Iterable[str]] = ..., explain: _Optional[bool] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("allowed", "blocked", "decisions", "policy", "error")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    allowed: _containers.RepeatedScalarFieldContainer[str]
    blocked: _containers.RepeatedScalarFieldContainer[str]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    policy: PolicyVersion
    error: str
    def __init__(self, allowed: _Optional[_Iterable[str]] = ..., blocked: _Optional[_Iterable[str]] = ..., decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., policy: _Optional[_Union[PolicyVersion, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("destination", "allowed", "reason", "required_categories", "missing_categories", "shadow_missing_categories")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    MISSING_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MISSING_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    destination: str
    allowed: bool
    reason: Reason
    required_categories: _containers.RepeatedScalarFieldContainer[str]
    missing_categories: _containers.RepeatedScalarFieldContainer[str]
    shadow_missing_categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, destination: _Optional[str] = ..., allowed: _Optional[bool] = ..., reason: _Optional[_Union[Reason, str]] = ..., required_categories: _Optional[_Iterable[str]] = ..., missing_categories: _Optional[_Iterable[str]] = ..., shadow_missing_categories: _Optional[_Iterable[str]] = ...) -> None: ...

class PolicyVersion(_message.Message):
    __slots__ = ("generation", "digest")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    generation: int
    digest: str
    def __init__(self, generation: _Optional[int] = ..., digest: _Optional[str] = ...) -> None: ...

class DecideBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[DecideRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[DecideRequest, _Mapping]]] = ...) -> None: ...

class DecideBatchResponse(_message.Message):
    __slots__ = ("responses", "policy")
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[DecideResponse]
    policy: PolicyVersion
    def __init__(self, responses: _Optional[_Iterable[_Union[DecideResponse, _Mapping]]] = ..., policy: _Optional[_Union[PolicyVersion, _Mapping]] = ...) -> None: ...
