"""Reading the mapping file: YAML text -> validated `ConsentMapping`, every problem located.

Owns the file format's shapes and types (docs/reference.md, "Mapping file") and the
`file:line:column: path: message` location of every problem. The semantic rules live in
`consent_core.model` (`mapping_problems`) and are only called here, never restated. Never
writes, decides, watches, logs or audits anything.

Problems are located on ruamel.yaml's round-trip node tree (`consent_core.documents`, the
reader every hand-edited document shares): every node carries its start and end mark, and
a node tree keeps every duplicate key (the constructor would stop at the first one), so all
of them are reported with positions.

When ruamel.yaml.clib is importable, `parse_mapping` first composes with libyaml (the C
composer of `YAML(typ="safe", pure=False)`: parsing is about 6-7x faster end to end, so
far less time holding the GIL) and keeps the result only when the document is valid: a
`ConsentMapping` carries no positions, and the C nodes resolve tags with the same YAML 1.2
resolver, so it is the same `ConsentMapping`. Anything else -- a syntax error, any problem, a `%`
directive (the C path ignores `%YAML 1.1`), a tab, NEL/LS/PS or a BOM past the start
(libyaml scans those differently), nesting that could overflow libyaml's composer or no
clib -- is read again by the round-trip composer, so every message, line and column is
exactly the pure path's (libyaml words syntax errors differently and marks implicit nulls
elsewhere). `parse_with_nodes` (what the editor uses) always takes the round-trip composer:
its splices need the pure nodes' marks, styles and anchors (the C nodes carry no anchors).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from dataclasses import dataclass
from typing import Final

import ruamel.yaml.main
from ruamel.yaml import YAML
from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from consent_core.documents import compose_yaml, read_utf8
from consent_core.errors import MappingError, Problem
from consent_core.mapping_file.nodes import (
    BOOL,
    CATEGORY_KEYS,
    DESTINATION_KEYS,
    INT,
    NULL,
    SETTINGS_KEYS,
    STR,
    TOP_KEYS,
    is_empty,
    kind,
    style_of,
    tag_of,
)
from consent_core.model import (
    Category,
    ConsentMapping,
    DestinationSettings,
    Resolution,
    Settings,
    UnknownDestinations,
    mapping_problems,
)

__all__ = ["DEFAULT_MAX_MAPPING_BYTES", "LoadedMapping", "load_mapping", "parse_mapping", "parse_with_nodes"]

DEFAULT_MAX_MAPPING_BYTES: Final = 16 << 20  # 16 MiB: `serve`/`check --max-mapping-bytes`

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


def load_mapping(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_MAPPING_BYTES) -> LoadedMapping:
    """Read and validate a mapping file; any problem (reading included) raises one `MappingError`.

    A file over `max_bytes` (or not a regular file) is refused before it is parsed, holding at
    most `max_bytes + 1` bytes in memory.
    """
    source = os.fspath(path)
    raw, text, st = read_utf8(source, "the mapping file", MappingError, max_bytes=max_bytes,
                              limit_name="--max-mapping-bytes")  # fmt: skip
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
    return parse_with_nodes(text, source)[0]


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


# libyaml's composer (in ruamel.yaml.clib) recurses on the C stack once per nesting level and
# kills the process (SIGSEGV) somewhere past 10,000 levels, which 20 KB of `[` can reach. A
# valid mapping nests 4 deep, so text that might nest deeper than _C_MAX_DEPTH never reaches
# it. Nesting needs `[`/`{` (flow) or columns (block: a level is at least as far right as its
# parent), so few of those prove the text shallow for free; otherwise libyaml's parser, which
# keeps its own stack, measures it (about a tenth of the C composer's time).
_C_MAX_DEPTH = 64
_FEW_OPENERS = 500
_LONG_LINE = re.compile(r"^[^\n]{500}", re.MULTILINE)  # anchored: one pass, not one per column


def _shallow(text: str) -> bool:
    """True when libyaml's composer can take the text: it nests well below the depth that overflows it."""
    if text.count("[") + text.count("{") < _FEW_OPENERS and _LONG_LINE.search(text) is None:
        return True  # depth <= openers + widest column + 2 < 1,002
    depth = 0
    for event in YAML(typ="safe", pure=False).parse(text):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > _C_MAX_DEPTH:
                return False
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
    return True


def _compose_c(text: str) -> Node | None:
    node: Node | None = YAML(typ="safe", pure=False).compose(text)
    return node


def _valid_mapping_by_c_composer(text: str) -> ConsentMapping | None:
    """The document's `ConsentMapping` when it is valid, else None (the round-trip composer then reports it)."""
    try:
        if not _shallow(text):
            return None
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
    """The round-trip composer (the shared document reader): the only way to the pure path's nodes."""
    return compose_yaml(text, source, MappingError)


def parse_with_nodes(text: str, source: str) -> tuple[ConsentMapping, MappingNode]:
    """The validated mapping and its round-trip node tree (what the editor splices into).

    Always the round-trip composer; raises `MappingError` exactly as `parse_mapping` does.
    """
    root = _compose(text, source)
    if root is None:
        raise MappingError(
            [Problem("", "the file is empty: expected a mapping with `version: 1` and `categories:`")], source
        )
    walker = _Walker()
    if not isinstance(root, MappingNode):
        walker.problem("", root, f"the document must be a mapping with version and categories, not {kind(root)}")
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
        mark = key.start_mark if key is not None and is_empty(node) else node.start_mark
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
            if not (isinstance(key, ScalarNode) and tag_of(key) == STR):
                what = "a destination id" if allowed is None else "a key"
                label = str(key.value) if isinstance(key, ScalarNode) else "?"
                self.problem(_child(path, label), key, f"{what} must be a string, not {kind(key)}")
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
        if isinstance(value, ScalarNode) and tag_of(value) == STR:
            return str(value.value)
        if isinstance(value, ScalarNode) and not is_empty(value) and tag_of(value) != NULL:
            self.problem(path, value, f'must be a string (quote it: "{value.value}")', key)
        else:
            self.problem(path, value, f"must be a string, not {kind(value)}", key)
        return None

    def boolean(self, path: str, value: Node, key: Node) -> bool | None:
        if isinstance(value, ScalarNode) and tag_of(value) == BOOL:
            return str(value.value).lower() in _TRUE_WORDS
        if tag_of(value) == STR and not style_of(value) and str(value.value).lower() in _YAML11_BOOLS:
            hint = f" ({value.value!r} is a string in YAML 1.2)"
        else:
            hint = (
                f", not {kind(value)} ({_snippet(value)})"
                if isinstance(value, ScalarNode)
                else f", not {kind(value)}"
            )
        self.problem(path, value, f"must be true or false{hint}", key)
        return None

    def choice(self, path: str, value: Node, key: Node, choices: tuple[str, ...]) -> str | None:
        if isinstance(value, ScalarNode) and tag_of(value) == STR and value.value in choices:
            return str(value.value)
        got = repr(value.value) if isinstance(value, ScalarNode) and not is_empty(value) else kind(value)
        self.problem(path, value, f"must be one of: {', '.join(choices)} (got {got})", key)
        return None

    def missing(self, path: str, node: Node, key: str) -> None:
        self.problem(path, node, f"missing required key {key!r}", silence=_child(path, key))

    # -- the document

    def document(self, root: MappingNode) -> ConsentMapping:
        top = self.fields(root, "", TOP_KEYS)
        version = 1
        if "version" not in top:
            self.missing("", root, "version")
        else:
            key, value = top["version"]
            parsed = _int_value(value)
            if parsed is None:
                self.problem("version", value, f"must be the integer 1, not {kind(value)}", key)
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
            elif tag_of(value) != NULL:  # `categories:` with everything commented out is an empty list
                self.problem("categories", value, f"must be a list of categories, not {kind(value)}", key)
        destinations = self.destinations(*top["destinations"]) if "destinations" in top else {}
        return ConsentMapping(
            categories=tuple(categories), destinations=destinations, settings=settings, version=version
        )

    def settings(self, key: Node, value: Node) -> Settings:
        if tag_of(value) == NULL:
            return Settings()
        if not isinstance(value, MappingNode):
            self.problem("settings", value, f"must be a mapping, not {kind(value)}", key)
            return Settings()
        entries = self.fields(value, "settings", SETTINGS_KEYS)
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
            self.problem(path, node, f"must be a mapping with id, name and destinations, not {kind(node)}")
            return Category(id=placeholder, name=placeholder, destinations=(placeholder,))
        entries = self.fields(node, path, CATEGORY_KEYS)
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
        if tag_of(value) == NULL:
            return ()  # reported by the model: "must list at least one destination"
        if not isinstance(value, SequenceNode):
            self.problem(dpath, value, f"must be a list of destination ids, not {kind(value)}", key)
            return ()
        out: list[str] = []
        for j, item in enumerate(value.value):
            ipath = f"{dpath}[{j}]"
            self.record(ipath, item)
            text = self.string(ipath, item, key)
            out.append(f"\0{ipath}" if text is None else text)
        return tuple(out)

    def destinations(self, key: Node, value: Node) -> dict[str, DestinationSettings]:
        if tag_of(value) == NULL:
            return {}
        if not isinstance(value, MappingNode):
            self.problem(
                "destinations", value, f"must be a mapping of destination id to settings, not {kind(value)}", key
            )
            return {}
        out: dict[str, DestinationSettings] = {}
        for dest, (dkey, dvalue) in self.fields(value, "destinations", None).items():
            path = f"destinations.{dest}"
            self.record(path, dkey)  # a bad id is reported at the key
            out[dest] = self.destination(path, dkey, dvalue)
        return out

    def destination(self, path: str, key: Node, value: Node) -> DestinationSettings:
        if tag_of(value) == NULL:
            return DestinationSettings()
        if not isinstance(value, MappingNode):
            self.problem(path, value, f"must be a mapping such as {{enforce: false}}, not {kind(value)}", key)
            return DestinationSettings()
        entries = self.fields(value, path, DESTINATION_KEYS)
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
    if not (isinstance(node, ScalarNode) and tag_of(node) == INT):
        return None
    digits = str(node.value).replace("_", "")
    for base in (0, 10):
        try:
            return int(digits, base)
        except ValueError:
            continue
    return None


def _snippet(node: Node) -> str:
    return repr(node.value) if isinstance(node, ScalarNode) else kind(node)
