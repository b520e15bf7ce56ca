"""Admin identities: the principals file, bearer-token authentication and role checks.

Tokens exist only as sha256 hex at rest and in memory; a presented token is hashed and
compared against every known hash in constant time. Never logs or stores a token.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from consent_core.documents import load_yaml, read_utf8
from consent_core.documents import node_position as _pos
from consent_core.errors import PermissionDenied, PrincipalsError, Problem, Unauthenticated

__all__ = [
    "MAX_PRINCIPALS_BYTES",
    "Principal",
    "Principals",
    "Role",
    "bearer_token",
    "hash_token",
    "load_principals",
    "parse_principals",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_PRINCIPALS_BYTES: Final = 1 << 20  # 1 MiB: some 8,000 principals; a larger file is refused unread


class Role(enum.Enum):
    OWNER = "owner"  # read and write
    MEMBER = "member"  # read only


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    role: Role
    token_sha256: str

    @property
    def can_write(self) -> bool:
        return self.role is Role.OWNER


def hash_token(token: str) -> str:
    """The sha256 hex stored in the principals file for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The token of an `authorization: Bearer <token>` header, or None."""
    for key, value in metadata:
        if key.lower() == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class Principals:
    """An immutable set of principals; `authenticate` never short-circuits on a partial match."""

    __slots__ = ("_by_hash", "principals")

    def __init__(self, principals: Sequence[Principal]) -> None:
        self.principals = tuple(principals)
        self._by_hash = [(p.token_sha256.encode(), p) for p in self.principals]

    def authenticate(self, token: str | None) -> Principal:
        """The principal holding `token`; Unauthenticated if none does."""
        if not token:
            raise Unauthenticated("missing bearer token: send 'authorization: Bearer <token>'")
        presented = hash_token(token).encode()
        found: Principal | None = None
        for digest, principal in self._by_hash:  # compare against all, so timing reveals nothing
            if hmac.compare_digest(digest, presented):
                found = principal
        if found is None:
            raise Unauthenticated("invalid bearer token")
        return found

    def find(self, token_sha256: str) -> Principal | None:
        """The principal holding the token with this hash, if any (for re-checking who holds an open stream)."""
        found: Principal | None = None
        for digest, principal in self._by_hash:
            if hmac.compare_digest(digest, token_sha256.encode()):
                found = principal
        return found

    @staticmethod
    def authorize_write(principal: Principal, rpc: str) -> None:
        if not principal.can_write:
            raise PermissionDenied(f"{rpc} requires role owner; principal {principal.id!r} is {principal.role.value}")


def parse_principals(text: str, source: str) -> Principals:
    """Parses and validates a principals file (docs/reference.md, "Principals file"); reports every problem."""
    doc = load_yaml(text, source, PrincipalsError)
    problems: list[Problem] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("principals"), list):
        where = _pos(doc, "principals", value=True) if isinstance(doc, dict) and "principals" in doc else (1, 1)
        raise PrincipalsError([Problem("principals", "must be a list of principals", *where)], source)
    for key in doc:
        if key != "principals":
            problems.append(Problem(str(key), "unknown key", *_pos(doc, key)))
    out: list[Principal] = []
    ids: set[str] = set()
    hashes: set[str] = set()
    for i, item in enumerate(doc["principals"]):
        path = f"principals[{i}]"
        if not isinstance(item, dict):
            problems.append(Problem(path, "must be a mapping", *_pos(doc["principals"], i)))
            continue
        for key in item:
            if key not in ("id", "role", "token_sha256"):
                problems.append(Problem(f"{path}.{key}", "unknown key", *_pos(item, key)))
        pid, role, digest = item.get("id"), item.get("role"), item.get("token_sha256")
        n = len(problems)

        def bad(key: str, message: str, item: Any = item, path: str = path) -> None:
            where = _pos(item, key, value=True) if key in item else _pos(item)
            problems.append(Problem(f"{path}.{key}", message, *where))

        if not isinstance(pid, str) or not pid.strip():
            bad("id", "must be a non-empty string")
        elif pid in ids:
            bad("id", f"duplicate id {pid!r}")
        if role not in ("owner", "member"):
            bad("role", "must be owner or member")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            bad("token_sha256", "must be 64 lowercase hex characters (see: consent-sidecar token hash)")
        elif digest in hashes:
            bad("token_sha256", "token shared with another principal")
        if len(problems) == n:
            assert isinstance(pid, str) and isinstance(role, str) and isinstance(digest, str)
            ids.add(pid)
            hashes.add(digest)
            out.append(Principal(pid, Role(role), digest))
    if problems:
        raise PrincipalsError(problems, source)
    return Principals(out)


def load_principals(path: str) -> Principals:
    """Reads and parses the principals file at `path`; raises PrincipalsError naming the path as given.

    Never blocks (a FIFO or device is refused at once) and never reads more than
    MAX_PRINCIPALS_BYTES (a larger file is refused naming the limit).
    """
    _, text, _ = read_utf8(path, "the principals file", PrincipalsError, max_bytes=MAX_PRINCIPALS_BYTES)
    return parse_principals(text, path)
