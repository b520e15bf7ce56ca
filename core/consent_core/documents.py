"""What every hand-edited document (mapping, principals, test cases) shares: reading it, locating its nodes.

Reading turns every OS and encoding failure into one `DocumentError` problem naming the file
as given; locating turns ruamel's 0-based marks into the 1-based line and column that
`file:line:column: path: message` reports. Never interprets a document's content.
"""

from __future__ import annotations

import os
from typing import Any

from consent_core.errors import DocumentError, Problem

__all__ = ["node_position", "os_reason", "read_utf8"]


def os_reason(e: OSError) -> str:
    """A short, lower-case reason an OSError gives, e.g. "no such file"."""
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "it is a directory"
    return e.strerror or str(e)


def read_utf8(source: str, what: str, error: type[DocumentError]) -> tuple[bytes, str, os.stat_result]:
    """(raw bytes, text, stat of the file read) of `source`; raises `error` naming `what` ("the mapping file")."""
    try:
        with open(source, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except OSError as e:
        raise error([Problem("", f"cannot read {what}: {os_reason(e)}")], source) from e
    try:
        return raw, raw.decode("utf-8"), st
    except UnicodeDecodeError as e:
        raise error([Problem("", f"{what} is not valid UTF-8 (byte offset {e.start})")], source) from e


def node_position(node: Any, key: object = None, *, value: bool = False) -> tuple[int | None, int | None]:
    """1-based (line, column) of a round-trip node, of one of its keys (or, with value, that key's
    value), or of a list item (an int key on a list); (None, None) where ruamel kept no mark."""
    lc = getattr(node, "lc", None)
    if lc is None:
        return None, None
    try:
        if key is None:
            line, col = lc.line, lc.col
        elif isinstance(key, int) and isinstance(node, list):
            line, col = lc.item(key)
        elif value:
            line, col = lc.value(key)
        else:
            line, col = lc.key(key)
    except (AttributeError, KeyError, IndexError, TypeError):
        return None, None
    if line is None or col is None:
        return None, None
    return int(line) + 1, int(col) + 1
