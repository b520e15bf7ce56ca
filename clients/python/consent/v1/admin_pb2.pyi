import datetime

from consent.v1 import decision_pb2 as _decision_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_OWNER: _ClassVar[Role]
    ROLE_MEMBER: _ClassVar[Role]

class AuditAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_ACTION_UNSPECIFIED: _ClassVar[AuditAction]
    AUDIT_ACTION_CATEGORY_CREATED: _ClassVar[AuditAction]
    AUDIT_ACTION_CATEGORY_UPDATED: _ClassVar[AuditAction]
    AUDIT_ACTION_CATEGORY_DISABLED: _ClassVar[AuditAction]
    AUDIT_ACTION_CATEGORY_ENABLED: _ClassVar[AuditAction]
    AUDIT_ACTION_CATEGORY_DELETED: _ClassVar[AuditAction]
    AUDIT_ACTION_MAPPING_CREATED: _ClassVar[AuditAction]
    AUDIT_ACTION_MAPPING_REMOVED: _ClassVar[AuditAction]
    AUDIT_ACTION_POLICY_RELOADED: _ClassVar[AuditAction]
    AUDIT_ACTION_POLICY_RELOAD_FAILED: _ClassVar[AuditAction]
    AUDIT_ACTION_PERMISSION_DENIED: _ClassVar[AuditAction]
ROLE_UNSPECIFIED: Role
ROLE_OWNER: Role
ROLE_MEMBER: Role
AUDIT_ACTION_UNSPECIFIED: AuditAction
AUDIT_ACTION_CATEGORY_CREATED: AuditAction
AUDIT_ACTION_CATEGORY_UPDATED: AuditAction
AUDIT_ACTION_CATEGORY_DISABLED: AuditAction
AUDIT_ACTION_CATEGORY_ENABLED: AuditAction
AUDIT_ACTION_CATEGORY_DELETED: AuditAction
AUDIT_ACTION_MAPPING_CREATED: AuditAction
AUDIT_ACTION_MAPPING_REMOVED: AuditAction
AUDIT_ACTION_POLICY_RELOADED: AuditAction
AUDIT_ACTION_POLICY_RELOAD_FAILED: AuditAction
AUDIT_ACTION_PERMISSION_DENIED: AuditAction

class Category(_message.Message):
    __slots__ = ("id", "name", "destinations", "enabled", "etag", "shadow")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    destinations: _containers.RepeatedScalarFieldContainer[str]
    enabled: bool
    etag: str
    shadow: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., destinations: _Optional[_Iterable[str]] = ..., enabled: _Optional[bool] = ..., etag: _Optional[str] = ..., shadow: _Optional[bool] = ...) -> None: ...

class ListCategoriesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCategoriesResponse(_message.Message):
    __slots__ = ("categories", "policy")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedCompositeFieldContainer[Category]
    policy: _decision_pb2.PolicyVersion
    def __init__(self, categories: _Optional[_Iterable[_Union[Category, _Mapping]]] = ..., policy: _Optional[_Union[_decision_pb2.PolicyVersion, _Mapping]] = ...) -> None: ...

class GetCategoryRequest(_message.Message):
    __slots__ = ("category_id",)
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    category_id: str
    def __init__(self, category_id: _Optional[str] = ...) -> None: ...

class CreateCategoryRequest(_message.Message):
    __slots__ = ("category",)
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    category: Category
    def __init__(self, category: _Optional[_Union[Category, _Mapping]] = ...) -> None: ...

class UpdateCategoryRequest(_message.Message):
    __slots__ = ("category_id", "category", "update_mask", "etag")
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    category_id: str
    category: Category
    update_mask: _field_mask_pb2.FieldMask
    etag: str
    def __init__(self, category_id: _Optional[str] = ..., category: _Optional[_Union[Category, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class DisableCategoryRequest(_message.Message):
    __slots__ = ("category_id", "confirm_name", "etag")
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    category_id: str
    confirm_name: str
    etag: str
    def __init__(self, category_id: _Optional[str] = ..., confirm_name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class EnableCategoryRequest(_message.Message):
    __slots__ = ("category_id", "etag")
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    category_id: str
    etag: str
    def __init__(self, category_id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteCategoryRequest(_message.Message):
    __slots__ = ("category_id", "confirm_name", "etag")
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    category_id: str
    confirm_name: str
    etag: str
    def __init__(self, category_id: _Optional[str] = ..., confirm_name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteCategoryResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: _decision_pb2.PolicyVersion
    def __init__(self, policy: _Optional[_Union[_decision_pb2.PolicyVersion, _Mapping]] = ...) -> None: ...

class GetPolicyStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyStatus(_message.Message):
    __slots__ = ("policy", "source", "loaded_at", "reloads", "failed_reloads", "last_error", "last_error_at", "categories", "destinations", "store", "store_connected", "store_revision", "disconnected_since", "audit_head_sequence", "audit_head_hash")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    RELOADS_FIELD_NUMBER: _ClassVar[int]
    FAILED_RELOADS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_AT_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    STORE_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    STORE_REVISION_FIELD_NUMBER: _ClassVar[int]
    DISCONNECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    policy: _decision_pb2.PolicyVersion
    source: str
    loaded_at: _timestamp_pb2.Timestamp
    reloads: int
    failed_reloads: int
    last_error: str
    last_error_at: _timestamp_pb2.Timestamp
    categories: int
    destinations: int
    store: str
    store_connected: bool
    store_revision: int
    disconnected_since: _timestamp_pb2.Timestamp
    audit_head_sequence: int
    audit_head_hash: str
    def __init__(self, policy: _Optional[_Union[_decision_pb2.PolicyVersion, _Mapping]] = ..., source: _Optional[str] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reloads: _Optional[int] = ..., failed_reloads: _Optional[int] = ..., last_error: _Optional[str] = ..., last_error_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., categories: _Optional[int] = ..., destinations: _Optional[int] = ..., store: _Optional[str] = ..., store_connected: _Optional[bool] = ..., store_revision: _Optional[int] = ..., disconnected_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., audit_head_sequence: _Optional[int] = ..., audit_head_hash: _Optional[str] = ...) -> None: ...

class GetCallerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Caller(_message.Message):
    __slots__ = ("principal_id", "role")
    PRINCIPAL_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    principal_id: str
    role: Role
    def __init__(self, principal_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ...) -> None: ...

class GetFleetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FleetStatus(_message.Message):
    __slots__ = ("store_revision", "store_digest", "members")
    STORE_REVISION_FIELD_NUMBER: _ClassVar[int]
    STORE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    store_revision: int
    store_digest: str
    members: _containers.RepeatedCompositeFieldContainer[FleetMember]
    def __init__(self, store_revision: _Optional[int] = ..., store_digest: _Optional[str] = ..., members: _Optional[_Iterable[_Union[FleetMember, _Mapping]]] = ...) -> None: ...

class FleetMember(_message.Message):
    __slots__ = ("member_id", "address", "policy", "store_revision", "connected", "last_error", "updated_at")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    STORE_REVISION_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    address: str
    policy: _decision_pb2.PolicyVersion
    store_revision: int
    connected: bool
    last_error: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, member_id: _Optional[str] = ..., address: _Optional[str] = ..., policy: _Optional[_Union[_decision_pb2.PolicyVersion, _Mapping]] = ..., store_revision: _Optional[int] = ..., connected: _Optional[bool] = ..., last_error: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("sequence", "time", "actor", "action", "category_id", "destination", "before_json", "after_json", "detail", "prev_hash", "hash")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    BEFORE_JSON_FIELD_NUMBER: _ClassVar[int]
    AFTER_JSON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    actor: str
    action: AuditAction
    category_id: str
    destination: str
    before_json: str
    after_json: str
    detail: str
    prev_hash: str
    hash: str
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[_Union[AuditAction, str]] = ..., category_id: _Optional[str] = ..., destination: _Optional[str] = ..., before_json: _Optional[str] = ..., after_json: _Optional[str] = ..., detail: _Optional[str] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "category_id", "action", "after_sequence")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    category_id: str
    action: AuditAction
    after_sequence: int
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., category_id: _Optional[str] = ..., action: _Optional[_Union[AuditAction, str]] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchAuditEventsRequest(_message.Message):
    __slots__ = ("after_sequence",)
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    def __init__(self, after_sequence: _Optional[int] = ...) -> None: ...
