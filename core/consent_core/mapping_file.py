"""The mapping file on disk: YAML text <-> `ConsentMapping`, with positions, comment-preserving edits and atomic saves.

Owns the file format's shapes and types (API.md §3), the `file:line:column: path: message`
locations of every problem, the text edits behind admin writes and the durable replace of
the file. The semantic rules live in `consent_core.model` (`mapping_problems`) and are only
called here, never restated. Never decides anything, never watches, logs or audits, and
never leaves a half-written mapping file behind.

Parsing uses ruamel.yaml's round-trip parser down to its node tree (`YAML().compose`):
every node carries both its start and its end mark, which gives problem positions and
the exact text spans that edits replace, and a node tree keeps every duplicate key (the
constructor would stop at the first one), so all of them are reported with positions.
Edits are splices into the original text, so every byte outside the changed spans --
comments, blank lines, key order, quoting, indentation -- stays exactly as it was.

When ruamel.yaml.clib is importable, `parse_mapping` first composes with libyaml (the C
composer of `YAML(typ="safe", pure=False)`: parsing is about 6-7x faster end to end, so
far less time holding the GIL) and keeps the result only when the document is valid: a
`ConsentMapping` carries no positions, and the C nodes resolve tags with the same YAML 1.2
resolver, so it is the same `ConsentMapping`. Anything else -- a syntax error, any problem, a `%`
directive (the C path ignores `%YAML 1.1`), a tab, NEL/LS/PS or a BOM past the start
(libyaml scans those differently) or no clib -- is read again by the round-trip composer,
so every message, line and column is exactly the pure path's (libyaml words syntax errors
differently and marks implicit nulls elsewhere). `MappingDocument` always uses the
round-trip composer: its splices need the pure nodes' marks, styles and anchors (the C
nodes carry no anchors).
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import functools
import hashlib
import importlib
import os
import re
import stat
import tempfile
from collections import abc
from dataclasses import dataclass

import ruamel.yaml.main
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from consent_core.documents import read_utf8
from consent_core.errors import FailedPrecondition, MappingError, Problem
from consent_core.model import (
    Category,
    ConsentMapping,
    DestinationSettings,
    Resolution,
    Settings,
    UnknownDestinations,
    mapping_problems,
)

__all__ = [
    "LoadedMapping",
    "MappingDocument",
    "atomic_write",
    "load_mapping",
    "parse_mapping",
]

_TOP_KEYS = ("version", "settings", "categories", "destinations")
_SETTINGS_KEYS = ("unknown_destinations",)
_CATEGORY_KEYS = ("id", "name", "enabled", "shadow", "destinations")
_DESTINATION_KEYS = ("enforce", "resolution")

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _BOOL, _NULL = _TAG + "str", _TAG + "int", _TAG + "bool", _TAG + "null"
_TRUE_WORDS = frozenset({"true", "yes", "on", "y"})  # `yes`/`on` only resolve to bool under %YAML 1.1
_YAML11_BOOLS = frozenset({"yes", "no", "on", "off", "y", "n"})
_SELF = "\0self"  # `_Walker.problem(silence=...)` default: the problem's own path


# --------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True, slots=True)
class LoadedMapping:
    """A validated mapping as read from disk, with what is needed to notice the file changed."""

    mapping: ConsentMapping
    text: str
    source: str  # the path as given (used verbatim in error messages)
    sha256: str  # hex digest of the raw bytes read
    mtime_ns: int
    size: int
    inode: int

    def stat_matches(self, st: os.stat_result) -> bool:
        """True when `st` (of the same path) still describes the file this was read from."""
        return (st.st_ino, st.st_size, st.st_mtime_ns) == (self.inode, self.size, self.mtime_ns)


def load_mapping(path: str | os.PathLike[str]) -> LoadedMapping:
    """Read and validate a mapping file; any problem (reading included) raises one `MappingError`."""
    source = os.fspath(path)
    raw, text, st = read_utf8(source, "the mapping file", MappingError)
    mapping = parse_mapping(text, source)
    return LoadedMapping(
        mapping=mapping,
        text=text,
        source=source,
        sha256=hashlib.sha256(raw).hexdigest(),
        mtime_ns=st.st_mtime_ns,
        size=st.st_size,
        inode=st.st_ino,
    )


def parse_mapping(text: str, source: str) -> ConsentMapping:
    """Validate mapping-file text and build its `ConsentMapping`; raises `MappingError` listing every problem."""
    if _C_COMPOSER_AVAILABLE and _PURE_ONLY.search(text) is None:
        mapping = _valid_mapping_by_c_composer(text)
        if mapping is not None:
            return mapping
    return _analyse(text, source)[0]


def _c_composer_available() -> bool:
    """True when ruamel.yaml.clib is importable and `YAML(typ="safe", pure=False)` will use its parser."""
    try:
        clib = importlib.import_module("_ruamel_yaml")  # the module ruamel.yaml.clib installs
    except ImportError:
        return False
    parser = getattr(clib, "CParser", None)
    return parser is not None and getattr(ruamel.yaml.main, "CParser", None) is parser


_C_COMPOSER_AVAILABLE = _c_composer_available()
# Text the C path reads differently, so it never takes it: a directive line (`%YAML 1.1`,
# `%TAG`: libyaml's path ignores the version when resolving), NEL, LS, PS (line breaks to
# libyaml, not to the round-trip scanner), tabs (libyaml takes `key\t: value`, the
# round-trip scanner does not) and a BOM anywhere but first (libyaml skips it).
_PURE_ONLY = re.compile(r"[\t\x85\u2028\u2029]|(?:\A\ufeff?|[\r\n])%|(?<=[\s\S])\ufeff")


def _compose_c(text: str) -> Node | None:
    node: Node | None = YAML(typ="safe", pure=False).compose(text)
    return node


def _valid_mapping_by_c_composer(text: str) -> ConsentMapping | None:
    """The document's `ConsentMapping` when it is valid, else None (the round-trip composer then reports it)."""
    try:
        root = _compose_c(text)
        if not isinstance(root, MappingNode):
            return None
        walker = _Walker()
        mapping = walker.document(root)
        if walker.problems or mapping_problems(mapping):
            return None
    except Exception:  # anything at all: the pure path decides, and reports exactly as it always has
        return None
    return mapping


def _compose(text: str, source: str) -> Node | None:
    try:
        node: Node | None = YAML(typ="rt").compose(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = e.problem or e.context or "malformed document"
        if e.context and e.problem:
            what = f"{e.problem} ({e.context})"
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise MappingError([Problem("", f"invalid YAML: {what}", line, column)], source) from e
    except ReaderError as e:  # a character YAML does not allow: located by its offset
        pos = int(e.position)
        line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        what = f"character U+{e.character:04X} is not allowed" if isinstance(e.character, int) else str(e.reason)
        raise MappingError([Problem("", f"invalid YAML: {what}", line, column)], source) from e
    except YAMLError as e:
        message = " ".join(str(e).split())
        raise MappingError([Problem("", f"invalid YAML: {message}")], source) from e
    return node


def _analyse(text: str, source: str) -> tuple[ConsentMapping, MappingNode]:
    root = _compose(text, source)
    if root is None:
        raise MappingError(
            [Problem("", "the file is empty: expected a mapping with `version: 1` and `categories:`")], source
        )
    walker = _Walker()
    if not isinstance(root, MappingNode):
        walker.problem("", root, f"the document must be a mapping with version and categories, not {_kind(root)}")
        raise MappingError(walker.problems, source)
    mapping = walker.document(root)
    for p in mapping_problems(mapping):
        if not walker.suppressed_by_shape_problem(p.path):
            line, column = walker.position(p.path)
            walker.problems.append(Problem(p.path, p.message, line, column))
    if walker.problems:
        raise MappingError(sorted(walker.problems, key=lambda p: (p.line or 0, p.column or 0)), source)
    return mapping, root


# --------------------------------------------------------------------------------------------
# Shapes and types, with positions


def _tag(node: Node) -> str:
    return str(node.tag)


def _is_empty(node: Node) -> bool:
    """An implicit null (`key:` with nothing after it): its marks point at the next token."""
    return isinstance(node, ScalarNode) and _tag(node) == _NULL and node.value == "" and not node.style


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = _tag(node)
    return {
        _NULL: "empty (null)",
        _BOOL: "a boolean",
        _INT: "an integer",
        _TAG + "float": "a number",
        _TAG + "timestamp": "a date",
        _STR: "a string",
    }.get(tag, f"a {tag} value")


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str | None:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ("" if path else None)


class _Walker:
    """One pass over the node tree: builds the ConsentMapping, records path -> position, collects shape problems.

    Where a value has the wrong shape, a unique placeholder stands in for it so the semantic
    rules still run on everything else; their findings on (or under) a path that already has
    a shape problem are dropped, so each mistake is reported once.
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.positions: dict[str, tuple[int, int]] = {}
        self._suppressed: set[str] = set()

    # -- bookkeeping

    @staticmethod
    def where(node: Node, key: Node | None = None) -> tuple[int, int]:
        mark = key.start_mark if key is not None and _is_empty(node) else node.start_mark
        return mark.line + 1, mark.column + 1

    def record(self, path: str, node: Node, key: Node | None = None) -> None:
        self.positions[path] = self.where(node, key)

    def problem(
        self, path: str, node: Node, message: str, key: Node | None = None, *, silence: str | None = _SELF
    ) -> None:
        """Report a shape problem; the semantic rules then stay silent about `silence` (default: `path`)."""
        line, column = self.where(node, key)
        self.problems.append(Problem(path, message, line, column))
        if silence is not None:
            self._suppressed.add(path if silence is _SELF else silence)

    def suppressed_by_shape_problem(self, path: str) -> bool:
        p: str | None = path
        while p is not None:
            if p in self._suppressed:
                return True
            p = _parent(p)
        return False

    def position(self, path: str) -> tuple[int | None, int | None]:
        p: str | None = path
        while p is not None:
            if p in self.positions:
                return self.positions[p]
            p = _parent(p)
        return None, None

    # -- generic shapes

    def fields(self, node: MappingNode, path: str, allowed: tuple[str, ...] | None) -> dict[str, tuple[Node, Node]]:
        """The mapping's entries by key; reports non-string, unknown and duplicate keys (at the key)."""
        entries: dict[str, tuple[Node, Node]] = {}
        seen: dict[str, Node] = {}
        for key, value in node.value:
            if not (isinstance(key, ScalarNode) and _tag(key) == _STR):
                what = "a destination id" if allowed is None else "a key"
                label = str(key.value) if isinstance(key, ScalarNode) else "?"
                self.problem(_child(path, label), key, f"{what} must be a string, not {_kind(key)}")
                continue
            name = str(key.value)
            child = _child(path, name)
            if name in seen:  # the first one counts; the semantic rules still judge it
                first = seen[name].start_mark.line + 1
                self.problem(child, key, f"duplicate key {name!r} (first at line {first})", silence=None)
                continue
            seen[name] = key
            if allowed is not None and name not in allowed:
                self.problem(child, key, f"unknown key {name!r} (expected one of: {', '.join(allowed)})")
                continue
            entries[name] = (key, value)
            self.record(child, value, key)
        return entries

    def string(self, path: str, value: Node, key: Node) -> str | None:
        if isinstance(value, ScalarNode) and _tag(value) == _STR:
            return str(value.value)
        if isinstance(value, ScalarNode) and not _is_empty(value) and _tag(value) != _NULL:
            self.problem(path, value, f'must be a string (quote it: "{value.value}")', key)
        else:
            self.problem(path, value, f"must be a string, not {_kind(value)}", key)
        return None

    def boolean(self, path: str, value: Node, key: Node) -> bool | None:
        if isinstance(value, ScalarNode) and _tag(value) == _BOOL:
            return str(value.value).lower() in _TRUE_WORDS
        if _tag(value) == _STR and not _style(value) and str(value.value).lower() in _YAML11_BOOLS:
            hint = f" ({value.value!r} is a string in YAML 1.2)"
        else:
            hint = (
                f", not {_kind(value)} ({_snippet(value)})"
                if isinstance(value, ScalarNode)
                else f", not {_kind(value)}"
            )
        self.problem(path, value, f"must be true or false{hint}", key)
        return None

    def choice(self, path: str, value: Node, key: Node, choices: tuple[str, ...]) -> str | None:
        if isinstance(value, ScalarNode) and _tag(value) == _STR and value.value in choices:
            return str(value.value)
        got = repr(value.value) if isinstance(value, ScalarNode) and not _is_empty(value) else _kind(value)
        self.problem(path, value, f"must be one of: {', '.join(choices)} (got {got})", key)
        return None

    def missing(self, path: str, node: Node, key: str) -> None:
        self.problem(path, node, f"missing required key {key!r}", silence=_child(path, key))

    # -- the document

    def document(self, root: MappingNode) -> ConsentMapping:
        top = self.fields(root, "", _TOP_KEYS)
        version = 1
        if "version" not in top:
            self.missing("", root, "version")
        else:
            key, value = top["version"]
            parsed = _int_value(value)
            if parsed is None:
                self.problem("version", value, f"must be the integer 1, not {_kind(value)}", key)
            else:
                version = parsed
        settings = self.settings(*top["settings"]) if "settings" in top else Settings()
        categories: list[Category] = []
        if "categories" not in top:
            self.missing("", root, "categories")
        else:
            key, value = top["categories"]
            if isinstance(value, SequenceNode):
                categories = [self.category(item, i) for i, item in enumerate(value.value)]
            elif _tag(value) != _NULL:  # `categories:` with everything commented out is an empty list
                self.problem("categories", value, f"must be a list of categories, not {_kind(value)}", key)
        destinations = self.destinations(*top["destinations"]) if "destinations" in top else {}
        return ConsentMapping(
            categories=tuple(categories), destinations=destinations, settings=settings, version=version
        )

    def settings(self, key: Node, value: Node) -> Settings:
        if _tag(value) == _NULL:
            return Settings()
        if not isinstance(value, MappingNode):
            self.problem("settings", value, f"must be a mapping, not {_kind(value)}", key)
            return Settings()
        entries = self.fields(value, "settings", _SETTINGS_KEYS)
        if "unknown_destinations" in entries:
            k, v = entries["unknown_destinations"]
            choices = tuple(u.value for u in UnknownDestinations)
            if (chosen := self.choice("settings.unknown_destinations", v, k, choices)) is not None:
                return Settings(unknown_destinations=UnknownDestinations(chosen))
        return Settings()

    def category(self, node: Node, i: int) -> Category:
        path = f"categories[{i}]"
        self.record(path, node)
        placeholder = f"\0{path}"
        if not isinstance(node, MappingNode):
            self.problem(path, node, f"must be a mapping with id, name and destinations, not {_kind(node)}")
            return Category(id=placeholder, name=placeholder, destinations=(placeholder,))
        entries = self.fields(node, path, _CATEGORY_KEYS)
        values: dict[str, str] = {}
        for field in ("id", "name"):
            text: str | None = None
            if field not in entries:
                self.missing(path, node, field)
            else:
                text = self.string(f"{path}.{field}", entries[field][1], entries[field][0])
            values[field] = f"\0{path}.{field}" if text is None else text
        flags = {"enabled": True, "shadow": False}
        for field in flags:
            if field in entries:
                flag = self.boolean(f"{path}.{field}", entries[field][1], entries[field][0])
                if flag is not None:
                    flags[field] = flag
        return Category(
            id=values["id"],
            name=values["name"],
            destinations=self.category_destinations(path, node, entries),
            enabled=flags["enabled"],
            shadow=flags["shadow"],
        )

    def category_destinations(
        self, path: str, node: MappingNode, entries: dict[str, tuple[Node, Node]]
    ) -> tuple[str, ...]:
        dpath = f"{path}.destinations"
        if "destinations" not in entries:
            self.missing(path, node, "destinations")
            return ()
        key, value = entries["destinations"]
        if _tag(value) == _NULL:
            return ()  # reported by the model: "must list at least one destination"
        if not isinstance(value, SequenceNode):
            self.problem(dpath, value, f"must be a list of destination ids, not {_kind(value)}", key)
            return ()
        out: list[str] = []
        for j, item in enumerate(value.value):
            ipath = f"{dpath}[{j}]"
            self.record(ipath, item)
            text = self.string(ipath, item, key)
            out.append(f"\0{ipath}" if text is None else text)
        return tuple(out)

    def destinations(self, key: Node, value: Node) -> dict[str, DestinationSettings]:
        if _tag(value) == _NULL:
            return {}
        if not isinstance(value, MappingNode):
            self.problem(
                "destinations", value, f"must be a mapping of destination id to settings, not {_kind(value)}", key
            )
            return {}
        out: dict[str, DestinationSettings] = {}
        for dest, (dkey, dvalue) in self.fields(value, "destinations", None).items():
            path = f"destinations.{dest}"
            self.record(path, dkey)  # a bad id is reported at the key
            out[dest] = self.destination(path, dkey, dvalue)
        return out

    def destination(self, path: str, key: Node, value: Node) -> DestinationSettings:
        if _tag(value) == _NULL:
            return DestinationSettings()
        if not isinstance(value, MappingNode):
            self.problem(path, value, f"must be a mapping such as {{enforce: false}}, not {_kind(value)}", key)
            return DestinationSettings()
        entries = self.fields(value, path, _DESTINATION_KEYS)
        enforce, resolution = True, Resolution.ALL
        if "enforce" in entries:
            k, v = entries["enforce"]
            if (flag := self.boolean(f"{path}.enforce", v, k)) is not None:
                enforce = flag
        if "resolution" in entries:
            k, v = entries["resolution"]
            choices = tuple(r.value for r in Resolution)
            if (chosen := self.choice(f"{path}.resolution", v, k, choices)) is not None:
                resolution = Resolution(chosen)
        return DestinationSettings(enforce=enforce, resolution=resolution)


def _int_value(node: Node) -> int | None:
    if not (isinstance(node, ScalarNode) and _tag(node) == _INT):
        return None
    digits = str(node.value).replace("_", "")
    for base in (0, 10):
        try:
            return int(digits, base)
        except ValueError:
            continue
    return None


def _style(node: Node) -> str | None:
    """A scalar's quoting: None (plain), "'", '"', "|" or ">"."""
    return node.style if isinstance(node, ScalarNode) else None


def _snippet(node: Node) -> str:
    return repr(node.value) if isinstance(node, ScalarNode) else _kind(node)


# --------------------------------------------------------------------------------------------
# Comment-preserving edits


class MappingDocument:
    """A validated mapping file kept as its text and node tree, to re-render edits of it.

    `with_mapping(new)` returns the file's text changed only where `new` differs: untouched
    bytes (comments, blank lines, key order, quoting, indentation) are kept exactly.
    """

    __slots__ = ("_mapping", "_root", "_source", "_text")

    def __init__(self, text: str, source: str, mapping: ConsentMapping, root: MappingNode) -> None:
        self._text = text
        self._source = source
        self._mapping = mapping
        self._root = root

    @classmethod
    def parse(cls, text: str, source: str) -> MappingDocument:
        """Parse and validate; raises `MappingError` exactly as `parse_mapping` does."""
        mapping, root = _analyse(text, source)
        return cls(text, source, mapping, root)

    @property
    def mapping(self) -> ConsentMapping:
        return self._mapping

    @property
    def text(self) -> str:
        return self._text

    @property
    def source(self) -> str:
        return self._source

    def with_mapping(self, new: ConsentMapping, renamed: abc.Mapping[str, str] | None = None) -> str:
        """The file's text edited to describe `new`.

        Categories are matched by id; `renamed` ({old id: new id}) matches a category whose
        id changed, and an unmatched category left at the same position as an unmatched old
        one is taken as renamed too. Matched categories are edited in place (their comments
        stay); new ones are appended in the style of the file's last category; a deleted
        category goes with the comment lines directly above it (no blank line between,
        indented at least as deep as its `-`). `enabled`/`shadow` are written only when not
        the default or already present. Raises `MappingError` when `new` breaks a rule,
        `ValueError` for a `renamed` entry naming an unknown id, `FailedPrecondition` when
        the file uses YAML anchors/aliases, and `RuntimeError` (a bug) if the edited text
        would not re-read as exactly `new`.
        """
        problems = mapping_problems(new)
        if problems:
            raise MappingError(problems, self._source)
        renames = dict(renamed or {})
        for old_id, new_id in renames.items():
            if self._mapping.category(old_id) is None:
                raise ValueError(f"renamed: the current mapping has no category {old_id!r}")
            if new.category(new_id) is None:
                raise ValueError(f"renamed: the new mapping has no category {new_id!r}")
        if new == self._mapping:
            return self._text
        if _has_anchors(self._root):
            raise FailedPrecondition(
                f"{self._source} uses YAML anchors/aliases (&name, *name), which an edit cannot keep apart; "
                "expand them by hand first"
            )
        out = _Editor(self._text, self._root, self._mapping).render(new, renames)
        try:
            reread: ConsentMapping | None = parse_mapping(out, self._source)
        except MappingError:
            reread = None
        if reread != new:  # an editing bug must never reach the disk
            raise RuntimeError(f"{self._source}: the edited text does not re-read as the intended mapping")
        return out


def _has_anchors(node: Node) -> bool:
    if node.anchor is not None:
        return True
    if isinstance(node, MappingNode):
        return any(_has_anchors(k) or _has_anchors(v) for k, v in node.value)
    if isinstance(node, SequenceNode):
        return any(_has_anchors(item) for item in node.value)
    return False


@dataclass(frozen=True, slots=True, order=True)
class _Edit:
    """Replace text[start:end] by `text`; `seq` keeps insertions at one point in the order made."""

    start: int
    end: int
    seq: int
    text: str


def _apply(text: str, edits: list[_Edit], base: int = 0) -> str:
    out: list[str] = []
    pos = base
    for e in sorted(edits):
        if e.start < pos:
            raise RuntimeError(f"overlapping edits at offset {e.start}")  # a bug in _Editor, never input
        out.append(text[pos : e.start])
        out.append(e.text)
        pos = e.end
    out.append(text[pos:])
    return "".join(out)


def _lis(values: list[int]) -> set[int]:
    """A longest strictly increasing subsequence of `values` (as a set of the values)."""
    tails: list[int] = []  # tails[k]: index (into values) of the smallest tail of an increasing run of k+1
    tail_values: list[int] = []
    parent: list[int] = [-1] * len(values)
    for i, v in enumerate(values):
        k = bisect.bisect_left(tail_values, v)
        if k > 0:
            parent[i] = tails[k - 1]
        if k == len(tails):
            tails.append(i)
            tail_values.append(v)
        else:
            tails[k] = i
            tail_values[k] = v
    out: set[int] = set()
    i = tails[-1] if tails else -1
    while i >= 0:
        out.add(values[i])
        i = parent[i]
    return out


@functools.lru_cache(maxsize=4096)
def _is_plain_safe(value: str) -> bool:
    """True when `value` reads back as the same string written plain, in block and in flow context."""
    if not value or value != value.strip() or not value.isprintable():
        return False
    if any(ch in value for ch in ",[]{}#") or value.startswith(("---", "...")):  # no markers, even mid-line
        return False
    try:
        flow = YAML(typ="rt").compose(f"[{value}]")
        block = YAML(typ="rt").compose(f"- {value}\n")  # e.g. `-` is fine in flow, not in block
    except YAMLError:
        return False
    for node in (flow, block):
        if not (isinstance(node, SequenceNode) and len(node.value) == 1):
            return False
        item = node.value[0]
        if not (isinstance(item, ScalarNode) and _tag(item) == _STR and item.value == value):
            return False
    return True


_DOUBLE_QUOTED_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _double_quoted(value: str) -> str:
    """A YAML double-quoted scalar; escapes what YAML may not carry raw or would fold (C0/C1, DEL, breaks, ...)."""
    out = ['"']
    for ch in value:
        o = ord(ch)
        if ch in _DOUBLE_QUOTED_ESCAPES:
            out.append(_DOUBLE_QUOTED_ESCAPES[ch])
        elif o < 0x20 or 0x7F <= o <= 0x9F or o in (0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF) or 0xD800 <= o <= 0xDFFF:
            out.append(f"\\x{o:02x}" if o <= 0xFF else f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _render_str(value: str, style: str | None = None) -> str:
    """`value` as a YAML scalar: in its old quoting `style` when that can hold it, else plain when safe."""
    single_ok = value.isprintable()  # Python's printable is narrower than YAML's: safe between single quotes
    if style == '"':
        return _double_quoted(value)
    if style == "'" and single_ok:
        return "'" + value.replace("'", "''") + "'"
    if _is_plain_safe(value):
        return value
    if single_ok:
        return "'" + value.replace("'", "''") + "'"
    return _double_quoted(value)


def _render_bool(value: bool) -> str:
    return "true" if value else "false"


def _render_flow_list(values: abc.Iterable[str]) -> str:
    return "[" + ", ".join(_render_str(v) for v in values) + "]"


def _render_destination(settings: DestinationSettings) -> str:
    parts = []
    if not settings.enforce:
        parts.append("enforce: false")
    if settings.resolution is not Resolution.ALL:
        parts.append(f"resolution: {settings.resolution.value}")
    return "{" + ", ".join(parts) + "}"


@dataclass(slots=True)
class _CategoryStyle:
    """How the file writes a category, taken from its last one (or defaults for an empty list)."""

    dash: str = "  - "  # the text before the first key on the item's line
    key_indent: str = "    "
    flow_item: bool = False  # `- {id: ..., ...}`
    flow_destinations: bool = True
    destination_dash: str = "  - "  # relative to key_indent, for block destination lists
    key_order: tuple[str, ...] = _CATEGORY_KEYS
    blank_line_between: bool = False


class _Editor:
    """Computes the text edits that turn the document into a new ConsentMapping (valid document assumed)."""

    def __init__(self, text: str, root: MappingNode, old: ConsentMapping) -> None:
        self.text = text
        self.root = root
        self.old = old
        self.nl = "\r\n" if "\r\n" in text else "\n"
        self.edits: list[_Edit] = []
        self.top: dict[str, tuple[Node, Node]] = {}
        for key, value in root.value:
            self.top.setdefault(str(key.value), (key, value))

    # -- text geometry

    def edit(self, start: int, end: int, text: str) -> None:
        self.edits.append(_Edit(start, end, len(self.edits), text))

    def insert_lines(self, at: int, lines: str) -> None:
        """Insert whole lines at a line start (`at` may be the end of a file lacking its last newline)."""
        if at > 0 and self.text[at - 1] != "\n":
            lines = self.nl + lines
        self.edit(at, at, lines)

    def line_start(self, i: int) -> int:
        return self.text.rfind("\n", 0, i) + 1

    def line_end(self, i: int) -> int:
        """The index after the newline ending the line that holds text[i]."""
        j = self.text.find("\n", i)
        return len(self.text) if j < 0 else j + 1

    def end(self, node: Node) -> int:
        """Where the node's own text ends (trailing blanks, newlines and comments excluded); -1 if empty."""
        if isinstance(node, ScalarNode):
            if _is_empty(node):
                return -1
            s, e = int(node.start_mark.index), int(node.end_mark.index)
            return s + len(self.text[s:e].rstrip())
        assert isinstance(node, (MappingNode, SequenceNode))
        if node.flow_style:
            return int(node.end_mark.index)
        ends = [-1]
        for child in node.value:
            if isinstance(child, tuple):
                ends.extend(self.end(c) for c in child)
            else:
                ends.append(self.end(child))
        return max(ends)

    def span(self, node: Node) -> tuple[int, int]:
        return int(node.start_mark.index), self.end(node)

    def lines_end(self, *nodes: Node) -> int:
        """The end of the last line holding any of `nodes` (its end-of-line comment included)."""
        return self.line_end(max(self.end(n) for n in nodes) - 1)

    def dash(self, item: Node) -> int:
        """The index of the `-` that introduces a block sequence item."""
        i = int(item.start_mark.index) - 1
        while i >= 0 and self.text[i] in " \t":
            i -= 1
        if i >= 0 and self.text[i] == "-":
            return i
        ls = self.line_start(item.start_mark.index)
        while ls > 0:  # `-` alone on an earlier line, maybe with comment lines between
            ls = self.line_start(ls - 1)
            line = self.text[ls : self.line_end(ls)]
            stripped = line.strip()
            if stripped.startswith("-"):
                return ls + line.index("-")
            if stripped and not stripped.startswith("#"):
                break
        return int(item.start_mark.index)

    def attached_comments(self, start: int, floor: int, column: int) -> int:
        """Extend a line start upwards over the comment lines directly above it (not above `floor`)."""
        while start > floor:
            prev = self.line_start(start - 1)
            line = self.text[prev:start]
            body = line.lstrip(" \t")
            if not body.startswith("#") or len(line) - len(body) < column:
                break
            start = prev
        return start

    def is_blank_line(self, ls: int) -> bool:
        return ls < len(self.text) and not self.text[ls : self.line_end(ls)].strip()

    def colon_after(self, key: Node) -> int:
        return self.text.index(":", self.end(key))

    def indent_unit(self) -> int:
        for name in ("destinations", "settings"):
            if name in self.top:
                key, value = self.top[name]
                if isinstance(value, MappingNode) and not value.flow_style and value.value:
                    return max(1, int(value.start_mark.column) - int(key.start_mark.column))
        return 2

    # -- scalars and small maps

    def replace_scalar(self, node: Node, rendered: str) -> _Edit:
        s, e = self.span(node)
        return _Edit(s, e, 0, rendered)

    def set_map_fields(self, key: Node, value: Node, fields: list[tuple[str, str]]) -> list[_Edit]:
        """Set `fields` ((name, rendered value)) in the map `value` (or null) held by `key`."""
        edits: list[_Edit] = []
        if not isinstance(value, MappingNode):  # null: write a flow map where it was
            rendered = "{" + ", ".join(f"{k}: {v}" for k, v in fields) + "}"
            if _is_empty(value):
                at = self.colon_after(key) + 1
                edits.append(_Edit(at, at, 0, " " + rendered))
            else:
                edits.append(self.replace_scalar(value, rendered))
            return edits
        present = {str(k.value): (k, v) for k, v in value.value}
        missing = []
        for name, rendered in fields:
            if name in present:
                edits.append(self.replace_scalar(present[name][1], rendered))
            else:
                missing.append(f"{name}: {rendered}")
        if not missing:
            return edits
        if value.flow_style:
            if value.value:
                at = max(self.end(value.value[-1][0]), self.end(value.value[-1][1]))
                edits.append(_Edit(at, at, 0, "".join(f", {m}" for m in missing)))
            else:
                edits.append(_Edit(value.start_mark.index, value.end_mark.index, 0, "{" + ", ".join(missing) + "}"))
        else:
            indent = " " * value.start_mark.column
            at = self.lines_end(value)
            edits.append(_Edit(at, at, 0, "".join(f"{indent}{m}{self.nl}" for m in missing)))
        return edits

    # -- the whole document

    def render(self, new: ConsentMapping, renamed: dict[str, str]) -> str:
        self.settings(new.settings)
        self.categories(new, renamed)
        self.destinations(new.destinations)
        return _apply(self.text, self.edits)

    def settings(self, new: Settings) -> None:
        if new == self.old.settings:
            return
        value_text = _render_str(new.unknown_destinations.value)
        if "settings" in self.top:
            key, value = self.top["settings"]
            for e in self.set_map_fields(key, value, [("unknown_destinations", value_text)]):
                self.edit(e.start, e.end, e.text)
            return
        vkey, vvalue = self.top["version"]
        col = " " * self.root.start_mark.column
        unit = " " * self.indent_unit()
        self.insert_lines(
            self.lines_end(vkey, vvalue),
            f"{col}settings:{self.nl}{col}{unit}unknown_destinations: {value_text}{self.nl}",
        )

    def destinations(self, new: abc.Mapping[str, DestinationSettings]) -> None:
        old = self.old.destinations
        if dict(new) == dict(old):
            return
        col = " " * self.root.start_mark.column
        unit = " " * self.indent_unit()
        added = [d for d in new if d not in old]
        if "destinations" not in self.top:
            lines = "".join(f"{col}{unit}{_render_str(d)}: {_render_destination(new[d])}{self.nl}" for d in added)
            last_key, last_value = self.root.value[-1]
            self.insert_lines(self.lines_end(last_key, last_value), f"{col}destinations:{self.nl}{lines}")
            return
        key, value = self.top["destinations"]
        if not isinstance(value, MappingNode) or (value.flow_style and not value.value):
            rendered = ", ".join(f"{_render_str(d)}: {_render_destination(new[d])}" for d in added)
            if _is_empty(value):
                indent = " " * key.start_mark.column + unit
                lines = "".join(f"{indent}{_render_str(d)}: {_render_destination(new[d])}{self.nl}" for d in added)
                self.insert_lines(self.line_end(self.colon_after(key)), lines)
            else:
                self.edit(value.start_mark.index, value.end_mark.index, "{" + rendered + "}")
            return
        entries = [(str(k.value), k, v) for k, v in value.value]
        kept = [e for e in entries if e[0] in new]
        if value.flow_style:
            parts = []
            for dest, k, v in kept:
                if new[dest] == old[dest]:
                    parts.append(self.text[k.start_mark.index : max(self.end(k), self.end(v))])
                else:
                    parts.append(f"{self.text[k.start_mark.index : self.end(k)]}: {_render_destination(new[dest])}")
            parts.extend(f"{_render_str(d)}: {_render_destination(new[d])}" for d in added)
            self.edit(value.start_mark.index, value.end_mark.index, "{" + ", ".join(parts) + "}")
            return
        floor = self.line_end(self.colon_after(key))
        for dest, k, v in entries:
            if dest not in new:
                start = self.attached_comments(self.line_start(k.start_mark.index), floor, k.start_mark.column)
                self.edit(start, self.lines_end(k, v), "")
            elif new[dest] != old[dest]:
                fields = []
                if new[dest].enforce != old[dest].enforce:
                    fields.append(("enforce", _render_bool(new[dest].enforce)))
                if new[dest].resolution != old[dest].resolution:
                    fields.append(("resolution", new[dest].resolution.value))
                for e in self.set_map_fields(k, v, fields):
                    self.edit(e.start, e.end, e.text)
            floor = self.lines_end(k, v)
        if added:
            indent = " " * value.start_mark.column
            lines = "".join(f"{indent}{_render_str(d)}: {_render_destination(new[d])}{self.nl}" for d in added)
            self.insert_lines(self.lines_end(value), lines)
        elif not new:
            colon = self.colon_after(key)
            self.edit(colon + 1, colon + 1, " {}")

    # -- categories

    def match(self, new: ConsentMapping, renamed: dict[str, str]) -> list[int | None]:
        """For each new category, the index of the old category it continues (None: a new one)."""
        old_ids = {c.id: i for i, c in enumerate(self.old.categories)}
        new_ids = {c.id for c in new.categories}
        by_new_id = {new_id: old_ids[old_id] for old_id, new_id in renamed.items()}
        renamed_away = {old_id for old_id, new_id in renamed.items() if old_id != new_id}
        used: set[int] = set()
        match: list[int | None] = []
        for c in new.categories:
            i = by_new_id.get(c.id)
            if i is None and c.id in old_ids and c.id not in renamed_away:
                i = old_ids[c.id]
            if i is not None and i in used:
                i = None
            if i is not None:
                used.add(i)
            match.append(i)
        for j in range(len(new.categories)):  # same position, both unmatched: a rename
            if (
                match[j] is None
                and j < len(self.old.categories)
                and j not in used
                and self.old.categories[j].id not in new_ids
            ):
                match[j] = j
                used.add(j)
        return match

    def categories(self, new: ConsentMapping, renamed: dict[str, str]) -> None:
        match = self.match(new, renamed)
        key, value = self.top["categories"]
        if not isinstance(value, SequenceNode) or not value.value:
            self.categories_from_empty(key, value, new.categories)
            return
        if value.flow_style:
            self.flow_categories(value, new.categories, match)
            return
        items: list[MappingNode] = list(value.value)
        style = self.category_style(key, items)
        floor = self.line_end(self.colon_after(key))
        blocks: list[tuple[int, int]] = []  # (start with attached comments, end of last line)
        for item in items:
            dash = self.dash(item)
            column = dash - self.line_start(dash)
            start = self.attached_comments(self.line_start(dash), floor, column)
            end = self.lines_end(item)
            blocks.append((start, end))
            floor = end
        matched = [i for i in match if i is not None]
        staying = _lis(matched)
        removed: list[tuple[int, int]] = []
        for i, (start, end) in enumerate(blocks):
            if i in staying:
                continue
            if style.blank_line_between:  # take one separating blank line along
                before = self.line_start(start - 1) if start > 0 else -1
                if i + 1 < len(blocks) and self.is_blank_line(end):
                    end = self.line_end(end)
                elif before >= max((e for _, e in removed), default=0) and self.is_blank_line(before):
                    start = before
            removed.append((start, end))
            self.edit(start, end, "")
        moved_text: dict[int, str] = {}
        for j, old_i in enumerate(match):
            if old_i is None:
                continue
            inner = self.category_edits(items[old_i], self.old.categories[old_i], new.categories[j])
            if old_i in staying:
                for e in inner:
                    self.edit(e.start, e.end, e.text)
            else:
                start, end = blocks[old_i]
                moved_text[old_i] = _apply(self.text[:end], inner, base=start)
        staying_in_order = [i for i in match if i is not None and i in staying]
        at = blocks[staying_in_order[0]][0] if staying_in_order else max(e for _, e in removed)
        before_first = bool(staying_in_order)
        sep = self.nl if style.blank_line_between else ""
        for j, old_i in enumerate(match):
            if old_i is not None and old_i in staying:
                at, before_first = blocks[old_i][1], False
                continue
            block = moved_text[old_i] if old_i is not None else self.render_category(new.categories[j], style)
            self.insert_lines(at, block + sep if before_first else sep + block)
        if not new.categories:
            colon = self.colon_after(key)
            self.edit(colon + 1, colon + 1, " []")

    def categories_from_empty(self, key: Node, value: Node, new: tuple[Category, ...]) -> None:
        """`categories:` (null) or `categories: []` getting its first categories: block style."""
        if not new:
            return
        col = key.start_mark.column
        style = _CategoryStyle(dash=" " * (col + 2) + "- ", key_indent=" " * (col + 4))
        if isinstance(value, SequenceNode):  # `[]`: drop it (and the space before it)
            start = value.start_mark.index
            while start > 0 and self.text[start - 1] in " \t":
                start -= 1
            self.edit(start, value.end_mark.index, "")
        self.insert_lines(self.line_end(self.colon_after(key)), "".join(self.render_category(c, style) for c in new))

    def flow_categories(self, value: SequenceNode, new: tuple[Category, ...], match: list[int | None]) -> None:
        parts = []
        for j, i in enumerate(match):
            if i is None:
                parts.append(self.render_flow_category(new[j]))
            else:
                item = value.value[i]
                inner = self.category_edits(item, self.old.categories[i], new[j])
                parts.append(_apply(self.text[: self.end(item)], inner, base=item.start_mark.index))
        self.edit(value.start_mark.index, value.end_mark.index, "[" + ", ".join(parts) + "]")

    def category_style(self, key: Node, items: list[MappingNode]) -> _CategoryStyle:
        ref = items[-1]
        style = _CategoryStyle()
        dash = self.dash(ref)
        first_line = self.text[self.line_start(dash) : ref.start_mark.index]
        if "\n" not in first_line and first_line.strip() == "-":
            style.dash = first_line
        else:  # `-` on a line of its own: put the first key where the others are
            dash_column = dash - self.line_start(dash)
            style.dash = " " * dash_column + "-" + " " * max(1, ref.start_mark.column - dash_column - 1)
        style.key_indent = " " * ref.start_mark.column
        style.flow_item = bool(ref.flow_style)
        style.key_order = tuple(str(k.value) for k, _ in ref.value)
        for k, v in ref.value:
            if k.value == "destinations" and isinstance(v, SequenceNode):
                style.flow_destinations = bool(v.flow_style) or not v.value
                if not style.flow_destinations:
                    first = v.value[0]
                    prefix = self.text[self.line_start(first.start_mark.index) : first.start_mark.index]
                    if prefix.startswith(style.key_indent) and prefix.strip() == "-":
                        style.destination_dash = prefix[len(style.key_indent) :]
        if len(items) > 1:
            gap = self.text[self.lines_end(items[-2]) : self.line_start(self.dash(items[-1]))]
            style.blank_line_between = any(not line.strip() for line in gap.splitlines())
        return style

    def category_edits(self, item: MappingNode, old: Category, new: Category) -> list[_Edit]:
        """The edits inside one matched category's own text."""
        if old == new:
            return []
        entries = {str(k.value): (k, v) for k, v in item.value}
        edits: list[_Edit] = []
        for field in ("id", "name"):
            before, after = getattr(old, field), getattr(new, field)
            if before != after:
                node = entries[field][1]
                edits.append(self.replace_scalar(node, _render_str(after, _style(node))))
        for field in ("enabled", "shadow"):
            before, after = getattr(old, field), getattr(new, field)
            if before == after:
                continue
            if field in entries:
                edits.append(self.replace_scalar(entries[field][1], _render_bool(after)))
            else:
                edits.append(self.add_category_field(item, entries, field, _render_bool(after)))
        if old.destinations != new.destinations:
            node = entries["destinations"][1]
            assert isinstance(node, SequenceNode)  # a valid document lists at least one
            edits.extend(self.list_edits(node, list(old.destinations), list(new.destinations)))
        return [_Edit(e.start, e.end, n, e.text) for n, e in enumerate(edits)]

    def add_category_field(
        self, item: MappingNode, entries: dict[str, tuple[Node, Node]], field: str, rendered: str
    ) -> _Edit:
        """A new `field: value` after the key that precedes it in the usual order (id, name, enabled, shadow)."""
        order = _CATEGORY_KEYS[: _CATEGORY_KEYS.index(field)]
        anchor = next((entries[k] for k in reversed(order) if k in entries), item.value[0])
        if item.flow_style:
            at = max(self.end(anchor[0]), self.end(anchor[1]))
            return _Edit(at, at, 0, f", {field}: {rendered}")
        at = self.lines_end(*anchor)
        prefix = self.nl if at > 0 and self.text[at - 1] != "\n" else ""
        return _Edit(at, at, 0, f"{prefix}{' ' * item.start_mark.column}{field}: {rendered}{self.nl}")

    def list_edits(self, seq: SequenceNode, old: list[str], new: list[str]) -> list[_Edit]:
        """Edits turning a destinations list `old` into `new`, keeping its flow or block style."""
        items: list[Node] = list(seq.value)
        ops = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
        if seq.flow_style:
            if not items:
                return [_Edit(seq.start_mark.index, seq.end_mark.index, 0, _render_flow_list(new))]
            opening = self.text[seq.start_mark.index : items[0].start_mark.index]
            closing = self.text[self.end(items[-1]) : seq.end_mark.index]
            sep = ", "
            if len(items) > 1:
                between = self.text[self.end(items[0]) : items[1].start_mark.index]
                if "\n" not in between and "#" not in between:
                    sep = between
            parts: list[str] = []
            for tag, i1, i2, j1, j2 in ops:
                if tag == "equal":
                    parts.extend(self.text[items[i].start_mark.index : self.end(items[i])] for i in range(i1, i2))
                elif tag != "delete":
                    parts.extend(_render_str(v) for v in new[j1:j2])
            if "\n" in opening or "\n" in closing or "#" in closing:
                opening, closing = "[", "]"
            return [_Edit(seq.start_mark.index, seq.end_mark.index, 0, opening + sep.join(parts) + closing)]
        first = items[0]
        prefix = self.text[self.line_start(first.start_mark.index) : first.start_mark.index]
        if prefix.strip() != "-":
            dash = self.dash(first)
            prefix = " " * (dash - self.line_start(dash)) + "- "
        edits: list[_Edit] = []

        def lines(values: list[str]) -> str:
            return "".join(f"{prefix}{_render_str(v)}{self.nl}" for v in values)

        def delete(i1: int, i2: int) -> None:
            edits.append(_Edit(self.line_start(self.dash(items[i1])), self.lines_end(items[i2 - 1]), 0, ""))

        def insert_after(i: int, values: list[str]) -> None:
            if i < 0:
                at = self.line_start(self.dash(items[0]))
                edits.append(_Edit(at, at, 0, lines(values)))
            else:
                at = self.lines_end(items[i])
                gap = self.nl if at > 0 and self.text[at - 1] != "\n" else ""
                edits.append(_Edit(at, at, 0, gap + lines(values)))

        for tag, i1, i2, j1, j2 in ops:
            if tag == "equal":
                continue
            n = min(i2 - i1, j2 - j1)
            for k in range(n):  # replaced in place: the item's end-of-line comment stays
                node = items[i1 + k]
                edits.append(self.replace_scalar(node, _render_str(new[j1 + k], _style(node))))
            if i2 - i1 > n:
                delete(i1 + n, i2)
            if j2 - j1 > n:
                insert_after(i1 + n - 1, new[j1 + n : j2])
        return edits

    def render_category(self, c: Category, style: _CategoryStyle) -> str:
        if style.flow_item:
            return f"{style.dash}{self.render_flow_category(c)}{self.nl}"
        fields = self.category_fields(c, style.key_order)
        lines: list[str] = []
        for name, rendered in fields:
            lead = style.dash if not lines else style.key_indent
            if name == "destinations" and not style.flow_destinations:
                lines.append(f"{lead}destinations:{self.nl}")
                lines.extend(
                    f"{style.key_indent}{style.destination_dash}{_render_str(d)}{self.nl}" for d in c.destinations
                )
            else:
                lines.append(f"{lead}{name}: {rendered}{self.nl}")
        return "".join(lines)

    def render_flow_category(self, c: Category) -> str:
        return "{" + ", ".join(f"{k}: {v}" for k, v in self.category_fields(c, _CATEGORY_KEYS)) + "}"

    @staticmethod
    def category_fields(c: Category, key_order: tuple[str, ...]) -> list[tuple[str, str]]:
        values: dict[str, str] = {"id": _render_str(c.id), "name": _render_str(c.name)}
        if not c.enabled:
            values["enabled"] = "false"
        if c.shadow:
            values["shadow"] = "true"
        values["destinations"] = _render_flow_list(c.destinations)
        order = [k for k in key_order if k in _CATEGORY_KEYS]
        for k in _CATEGORY_KEYS:  # the usual place for a key the reference category lacks
            if k not in order:
                earlier = _CATEGORY_KEYS[: _CATEGORY_KEYS.index(k)]
                pos = max((order.index(e) + 1 for e in earlier if e in order), default=0)
                order.insert(pos, k)
        return [(k, values[k]) for k in order if k in values]


# --------------------------------------------------------------------------------------------
# Saving


def atomic_write(path: str | os.PathLike[str], text: str) -> None:
    """Replace the file at `path` with `text` (UTF-8) atomically and durably, or raise OSError changing nothing.

    Temp file in the same directory, write, flush, fsync, `os.replace`, fsync the directory.
    Keeps the old file's permission bits (and owner, where allowed). Refuses anything but a
    regular file (a symlink is not followed: mounted ConfigMaps are read-only anyway).
    """
    target = os.fspath(path)
    try:
        st: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise OSError(f"{target}: refusing to replace it: {what} (write to the real file instead)")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise OSError(f"{target}: text cannot be encoded as UTF-8: {e}") from e
    directory = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else 0o644)
            if st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(PermissionError):  # not ours to give away; the mode is kept anyway
                    os.fchown(fd, st.st_uid, st.st_gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
