"""The one reader of every hand-edited document (mapping, cases, principals): bytes, text, YAML with positions.

Reading turns every OS and encoding failure, and composing every YAML failure, into one
problem of the document's own error type (`MappingError`, `CasesError`, `PrincipalsError`)
naming the file as given and, where YAML knows it, the 1-based line and column that
`file:line:column: path: message` reports. Composition is ruamel.yaml's round-trip one, so
every node (or loaded `CommentedMap`/`CommentedSeq`) keeps its marks; `node_position`
turns those 0-based marks into 1-based positions. Never interprets a document's content:
each document's own module judges its shapes and rules.
"""

from __future__ import annotations

import os
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import Node
from ruamel.yaml.reader import ReaderError

from consent_core.errors import DocumentError, Problem

__all__ = ["compose_yaml", "load_yaml", "node_position", "os_reason", "read_utf8"]


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
