"""The one reader of every hand-edited document (mapping, cases, principals): bytes, text, YAML with positions.

Reading turns every OS and encoding failure, and composing every YAML failure, into one
problem of the document's own error type (`MappingError`, `CasesError`, `PrincipalsError`)
naming the file as given and, where YAML knows it, the 1-based line and column that
`file:line:column: path: message` reports. Composition is ruamel.yaml's round-trip one, so
every node (or loaded `CommentedMap`/`CommentedSeq`) keeps its marks; `node_position`
turns those 0-based marks into 1-based positions. Never interprets a document's content:
each document's own module judges its shapes and rules.

Reading never blocks and never holds more than a bound: the file is opened with O_NONBLOCK
and must be a regular file (a FIFO, device, socket or directory is a problem at once, before
any read: a FIFO would otherwise block `open()` until a writer appears), and with `max_bytes`
a file larger than that is a problem naming the limit, found from `fstat` and by reading at
most `max_bytes + 1` bytes (a file growing while read is caught too).
"""

from __future__ import annotations

import os
import stat
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import Node
from ruamel.yaml.reader import ReaderError

from consent_core.errors import DocumentError, Problem

__all__ = ["compose_yaml", "file_kind", "load_yaml", "node_position", "os_reason", "read_utf8"]


def os_reason(e: OSError) -> str:
    """A short, lower-case reason an OSError gives, e.g. "no such file"."""
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "it is a directory"
    return e.strerror or str(e)


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: "a FIFO", "a directory", ..."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_CHUNK = 1 << 20


def read_utf8(
    source: str,
    what: str,
    error: type[DocumentError],
    *,
    max_bytes: int | None = None,
    limit_name: str = "",
) -> tuple[bytes, str, os.stat_result]:
    """(raw bytes, text, stat of the file read) of `source`; raises `error` naming `what` ("the mapping file").

    Never blocks on a FIFO or device (see the module docstring); with `max_bytes`, a larger
    file is an error naming the limit (`limit_name`, e.g. the flag that sets it).
    """
    try:
        fd = os.open(source, _OPEN_FLAGS)
    except OSError as e:
        raise error([Problem("", f"cannot read {what}: {os_reason(e)}")], source) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = file_kind(st.st_mode)
            why = "it is a directory" if stat.S_ISDIR(st.st_mode) else f"it is {kind}, not a regular file"
            raise error([Problem("", f"cannot read {what}: {why}")], source)
        if max_bytes is not None and st.st_size > max_bytes:
            raise error([_too_large(what, st.st_size, max_bytes, limit_name)], source)
        raw = _read_at_most(fd, None if max_bytes is None else max_bytes + 1)
    except OSError as e:
        raise error([Problem("", f"cannot read {what}: {os_reason(e)}")], source) from e
    finally:
        os.close(fd)
    if max_bytes is not None and len(raw) > max_bytes:
        raise error([_too_large(what, len(raw), max_bytes, limit_name, growing=True)], source)
    try:
        return raw, raw.decode("utf-8"), st
    except UnicodeDecodeError as e:
        raise error([Problem("", f"{what} is not valid UTF-8 (byte offset {e.start})")], source) from e


def _read_at_most(fd: int, limit: int | None) -> bytes:
    """Up to `limit` bytes (None: to the end), in 1 MiB reads."""
    parts: list[bytes] = []
    got = 0
    while limit is None or got < limit:
        chunk = os.read(fd, _CHUNK if limit is None else min(_CHUNK, limit - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _too_large(what: str, size: int, limit: int, limit_name: str, *, growing: bool = False) -> Problem:
    named = f" ({limit_name})" if limit_name else ""
    how = f"grew past {limit:,} bytes while it was read" if growing else f"is {size:,} bytes"
    return Problem("", f"{what} {how}: over the limit of {limit:,} bytes{named}")


def compose_yaml(text: str, source: str | None, error: type[DocumentError]) -> Node | None:
    """The round-trip node tree of a one-document YAML text (None when it holds no document).

    Every node keeps its start and end marks, and a node tree keeps every duplicate key
    (for the caller to report). Any YAML failure raises `error` with one located problem.
    """
    node: Node | None = _parse(text, source, error, construct=False)
    return node


def load_yaml(text: str, source: str | None, error: type[DocumentError]) -> Any:
    """The round-trip data of a one-document YAML text: `CommentedMap`/`CommentedSeq` carry `lc` marks
    for `node_position`; None for no document. Any YAML failure (a duplicate key, a value its tag
    cannot hold such as `!!int abc`) raises `error` with one located problem."""
    return _parse(text, source, error, construct=True)


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


# --------------------------------------------------------------------------------------------


class _Constructor(RoundTripConstructor):
    """The round-trip constructor, but a value its tag cannot hold is a located YAML error, not a crash."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except YAMLError:
            raise
        except (ArithmeticError, LookupError, TypeError, ValueError) as e:  # e.g. `!!int abc`, `2023-13-45`
            tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
            raise ConstructorError(
                problem=f"cannot read {node.value!r} as {tag} ({e})", problem_mark=node.start_mark
            ) from e


def _parse(text: str, source: str | None, error: type[DocumentError], *, construct: bool) -> Any:
    yaml = YAML(typ="rt")
    try:
        if not construct:
            return yaml.compose(text)
        yaml.Constructor = _Constructor
        return yaml.load(text)
    except YAMLError as e:
        raise error([_yaml_problem(e, text)], source) from e
    except RecursionError as e:  # ruamel recurses once per nesting level: `[[[[...` is an error, not a crash
        raise error([Problem("", "invalid YAML: nested too deeply")], source) from e


# The parser's context when it gives up inside a bracket or quote that was opened earlier, and the
# character that closes it.
_OPENED = {
    "while parsing a flow sequence": "]",
    "while parsing a flow mapping": "}",
    "while scanning a quoted scalar": None,  # closed by the quote that opened it
}


def _unclosed(e: MarkedYAMLError, text: str) -> Problem | None:
    """`this '[' is never closed`, at the '[' itself, when the parser gave up on a later line.

    ruamel reports where it gave up ("expected ',' or ']', but got ':'", often lines later, at
    the next key); the mistake is the opening bracket or quote, which it gives as the context.
    """
    opened, gave_up = e.context_mark, e.problem_mark
    if e.context not in _OPENED or opened is None or gave_up is None or gave_up.line <= opened.line:
        return None
    lines = text.splitlines()
    if opened.line >= len(lines) or opened.column >= len(lines[opened.line]):
        return None
    char = lines[opened.line][opened.column]
    closer = _OPENED[e.context] or char
    if char not in "[{'\"":
        return None
    where = "the end of the file" if gave_up.line >= len(lines) else f"line {gave_up.line + 1}"
    return Problem("", f"invalid YAML: this {char!r} is never closed "
                       f"(no {closer!r} before {where}, where the parser gave up)", opened.line + 1, opened.column + 1)


def _yaml_problem(e: YAMLError, text: str) -> Problem:
    """One `invalid YAML: ...` problem, at the mark ruamel gives (or the offset of a forbidden character)."""
    if isinstance(e, MarkedYAMLError):
        unclosed = _unclosed(e, text)
        if unclosed is not None:
            return unclosed
        mark = e.problem_mark or e.context_mark
        what = e.problem or e.context or "malformed document"
        if e.context and e.problem:
            what = f"{e.problem} ({e.context})"
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        return Problem("", f"invalid YAML: {what}", line, column)
    if isinstance(e, ReaderError):  # a character YAML does not allow: located by its offset
        pos = int(e.position)
        line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        what = f"character U+{e.character:04X} is not allowed" if isinstance(e.character, int) else str(e.reason)
        return Problem("", f"invalid YAML: {what}", line, column)
    return Problem("", "invalid YAML: " + " ".join(str(e).split()))
