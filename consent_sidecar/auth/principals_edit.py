"""Adding and removing principals in a principals file, keeping its comments; written atomically and durably.

The file is edited as a ruamel round-trip document (comments, key order and the other entries
kept), checked with the same parser the sidecar uses (`parse_principals`) before it is written,
then replaced in one step: a temp file in the same directory, fsync, mode 0600, rename, fsync
of the directory. A running sidecar's principals watcher picks the new file up. Only the
token's sha256 is ever written; the token itself is made here and returned to the caller once.
Must never write a file that the sidecar would reject, nor leave a partial file behind.
"""

from __future__ import annotations

import io
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from consent_core.documents import read_utf8
from consent_core.errors import DocumentError, PrincipalsError, Problem
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from consent_sidecar.auth.principals import Role, hash_token, parse_principals

__all__ = ["TOKEN_BYTES", "Added", "PrincipalsEditError", "add_principal", "new_token", "remove_principal"]

TOKEN_BYTES: Final = 32  # secrets.token_urlsafe(32): 256 random bits, 43 characters
_NEW_FILE: Final = (
    "# Admin identities: `consent-sidecar principals add|remove` keeps this file's comments.\nprincipals: []\n"
)


class PrincipalsEditError(PrincipalsError):
    """The edit cannot be made (unknown or duplicate id, a broken file); the file is left as it was."""


@dataclass(frozen=True, slots=True)
class Added:
    id: str
    role: Role
    token: str  # shown once, never stored
    created: bool  # the file did not exist and was created


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.indent(mapping=2, sequence=4, offset=2)  # `  - id: alice`, as the docs write the file
    y.preserve_quotes = True
    y.width = 4096
    return y


def _load(path: str) -> tuple[Any, bool]:
    """(round-trip document, whether the file is new); PrincipalsEditError when unreadable or broken."""
    if not os.path.lexists(path):
        text, created = _NEW_FILE, True
    else:
        _, text, _ = read_utf8(path, "the principals file", PrincipalsEditError)
        created = False
    try:
        parse_principals(text, path)  # the sidecar's own checks: never edit a file it would reject
    except DocumentError as e:
        raise PrincipalsEditError(e.problems, path) from None
    try:
        doc = _yaml().load(text)
    except YAMLError as e:  # parse_principals read it: not expected
        raise PrincipalsEditError([Problem("", f"invalid YAML: {e}")], path) from None
    return doc, created


def _write(path: str, doc: Any) -> None:
    buffer = io.StringIO()
    _yaml().dump(doc, buffer)
    text = buffer.getvalue()
    parse_principals(text, path)  # what is written must load
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or Path("."))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fchmod(f.fileno(), 0o600)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent or Path("."), os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def add_principal(path: str, principal_id: str, role: Role) -> Added:
    """Adds `principal_id` with a fresh token; returns the token (only its sha256 is written)."""
    if not principal_id.strip() or principal_id != principal_id.strip():
        raise PrincipalsEditError([Problem("id", f"{principal_id!r}: must be non-empty, without surrounding spaces")],
                                  path)
    doc, created = _load(path)
    items: CommentedSeq = doc["principals"]
    if any(isinstance(p, dict) and p.get("id") == principal_id for p in items):
        raise PrincipalsEditError([Problem("id", f"a principal {principal_id!r} already exists "
                                                 "(remove it first to replace its token)")], path)
    token = new_token()
    entry = CommentedMap()
    entry["id"] = principal_id
    entry["role"] = role.value
    entry["token_sha256"] = hash_token(token)
    if items.fa.flow_style():
        items.fa.set_block_style()  # `principals: []` grows into a block list
    items.append(entry)
    _write(path, doc)
    return Added(principal_id, role, token, created)


def remove_principal(path: str, principal_id: str) -> None:
    """Removes `principal_id`; its token is refused from the sidecar's next reload of the file."""
    if not os.path.lexists(path):
        raise PrincipalsEditError([Problem("", "cannot read the principals file: no such file")], path)
    doc, _ = _load(path)
    items: CommentedSeq = doc["principals"]
    for i, p in enumerate(items):
        if isinstance(p, dict) and p.get("id") == principal_id:
            del items[i]
            _write(path, doc)
            return
    known = ", ".join(str(p.get("id")) for p in items if isinstance(p, dict)) or "none"
    raise PrincipalsEditError([Problem("id", f"no principal {principal_id!r} (known: {known})")], path)
