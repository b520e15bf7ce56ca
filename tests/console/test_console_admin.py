"""How the console reads the AdminService's refusals: HTTP status by code, each problem beside its form field."""

from __future__ import annotations

import grpc
import pytest

from consent_sidecar.console.admin import AdminError, valid_token

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("category.id: must not start with a digit", {"id": "must not start with a digit"}),
        ("category.name: category 'C0002' already has the name 'A; B'",
         {"name": "category 'C0002' already has the name 'A; B'"}),
        ("category.destinations[0]: must not contain whitespace; category.destinations[1]: must not be empty",
         {"destinations": "destinations[0]: must not contain whitespace; destinations[1]: must not be empty"}),
        ("category.id: must not be empty; category.name: must not be empty",
         {"id": "must not be empty", "name": "must not be empty"}),
        ("confirm_name: to disable category 'C0002', confirm_name must equal its name 'P' exactly (got '')",
         {"confirm_name": "to disable category 'C0002', confirm_name must equal its name 'P' exactly (got '')"}),
        ("etag: category 'C0002' changed since it was read (stale etag)",
         {"": "etag: category 'C0002' changed since it was read (stale etag)"}),
        ("mappings.yaml: 2 problems; category.id: must not start with a digit",
         {"": "mappings.yaml: 2 problems", "id": "must not start with a digit"}),
    ],
)  # fmt: skip
def test_each_problem_lands_beside_its_field(message: str, fields: dict[str, str]) -> None:
    assert AdminError(Code.INVALID_ARGUMENT, message).field_messages() == fields


@pytest.mark.parametrize(
    ("code", "status"),
    [(Code.INVALID_ARGUMENT, 400), (Code.FAILED_PRECONDITION, 400), (Code.UNAUTHENTICATED, 401),
     (Code.PERMISSION_DENIED, 403), (Code.NOT_FOUND, 404), (Code.ALREADY_EXISTS, 409), (Code.ABORTED, 409),
     (Code.RESOURCE_EXHAUSTED, 429), (Code.UNAVAILABLE, 503), (Code.DEADLINE_EXCEEDED, 504), (Code.INTERNAL, 502),
     (Code.UNKNOWN, 502)],
)  # fmt: skip
def test_status_codes_become_http_statuses(code: grpc.StatusCode, status: int) -> None:
    assert AdminError(code, "why").http_status == status


@pytest.mark.parametrize(
    ("token", "ok"),
    [("abc-DEF_123.~+/=", True), ("x" * 4096, True), ("", False), ("x" * 4097, False), ("two words", False),
     ("tab\there", False), ("new\nline", False), ("caf\u00e9", False), ("\u200bzero-width", False)],
)  # fmt: skip
def test_only_a_token_that_can_travel_as_a_bearer_header_is_sent(token: str, ok: bool) -> None:
    assert valid_token(token) is ok
