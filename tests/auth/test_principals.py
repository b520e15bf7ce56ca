"""Principals file parsing, token authentication and the owner-only write rule."""

from __future__ import annotations

import pytest
from consent_core.errors import PermissionDenied, PrincipalsError, Unauthenticated

from consent_sidecar.auth.principals import Principals, Role, bearer_token, hash_token, parse_principals

OWNER_HASH = hash_token("owner-token")
MEMBER_HASH = hash_token("member-token")

GOOD = f"""\
principals:
  - id: alice
    role: owner
    token_sha256: {OWNER_HASH}
  - id: bob
    role: member   # read only
    token_sha256: {MEMBER_HASH}
"""


def test_token_hash_is_sha256_hex() -> None:
    assert hash_token("test") == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def test_known_tokens_authenticate_to_their_principal() -> None:
    p = parse_principals(GOOD, "principals.yaml")
    assert p.authenticate("owner-token").id == "alice"
    bob = p.authenticate("member-token")
    assert (bob.id, bob.role) == ("bob", Role.MEMBER)


@pytest.mark.parametrize("token", [None, "", "nope", "owner-token ", OWNER_HASH])
def test_missing_or_unknown_token_is_unauthenticated(token: str | None) -> None:
    with pytest.raises(Unauthenticated):
        parse_principals(GOOD, "p.yaml").authenticate(token)


def test_member_may_not_write_and_owner_may() -> None:
    p = parse_principals(GOOD, "p.yaml")
    Principals.authorize_write(p.authenticate("owner-token"), "CreateCategory")
    with pytest.raises(PermissionDenied, match="CreateCategory requires role owner"):
        Principals.authorize_write(p.authenticate("member-token"), "CreateCategory")


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ([("authorization", "Bearer abc")], "abc"),
        ([("authorization", "bearer abc ")], "abc"),
        ([("Authorization", b"Bearer abc")], "abc"),
        ([("authorization", "Basic abc")], None),
        ([("authorization", "Bearer ")], None),
        ([("x-other", "Bearer abc")], None),
        ([], None),
    ],
)
def test_bearer_token_parsing(metadata: list[tuple[str, str | bytes]], expected: str | None) -> None:
    assert bearer_token(metadata) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("principals: {}\n", "p.yaml:1:13: principals: must be a list of principals"),
        (f"principals:\n  - id: a\n    role: admin\n    token_sha256: {OWNER_HASH}\n",
         "p.yaml:3:11: principals[0].role: must be owner or member"),
        ("principals:\n  - id: a\n    role: owner\n    token_sha256: secret\n",
         "p.yaml:4:19: principals[0].token_sha256: must be 64 lowercase hex characters"),
        (f"principals:\n  - id: a\n    role: owner\n    token_sha256: {OWNER_HASH}\n    token: x\n",
         "p.yaml:5:5: principals[0].token: unknown key"),
        (f"principals:\n  - {{id: a, role: owner, token_sha256: {OWNER_HASH}}}\n"
         f"  - {{id: a, role: member, token_sha256: {MEMBER_HASH}}}\n",
         "p.yaml:3:10: principals[1].id: duplicate id 'a'"),
        ("principals: [\n", "p.yaml:"),
    ],
)
def test_bad_principals_files_are_reported_with_positions(text: str, expected: str) -> None:
    with pytest.raises(PrincipalsError) as e:
        parse_principals(text, "p.yaml")
    assert expected in str(e.value)
