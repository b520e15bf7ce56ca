"""Reading the mapping file: YAML text -> validated `ConsentMapping`, every problem located.

Owns the entry points (`load_mapping`, `parse_mapping`, `parse_with_nodes`): reading the
file (bounded), composing its YAML, and the `file:line:column: path: message` form of every
problem. The shapes and types of the format (docs/reference.md, "Mapping file") are checked
by `walker`, on the node tree; the semantic rules live in `consent_core.model`
(`mapping_problems`) and are only called, never restated. Never writes, decides, watches,
logs or audits anything.

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

Size (`MappingLimits`): `prescan` counts libyaml's parser events first, so a mapping over a
limit is refused at the first id beyond it, before anything is composed (no node tree, no
second reading); the walker counts again on what gets composed (aliases) and stops building
once over a limit. The file's size in bytes is bounded where it is read.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from typing import Final

import ruamel.yaml.main
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node

from consent_core.documents import compose_yaml, read_utf8
from consent_core.errors import MappingError, Problem
from consent_core.limits import MappingLimits
from consent_core.mapping_file.nodes import (
    kind,
)
from consent_core.mapping_file.prescan import prescan, pure_only
from consent_core.mapping_file.walker import Walker
from consent_core.model import (
    ConsentMapping,
    mapping_problems,
)

__all__ = ["DEFAULT_MAX_MAPPING_BYTES", "LoadedMapping", "load_mapping", "parse_mapping", "parse_with_nodes"]

DEFAULT_MAX_MAPPING_BYTES: Final = 16 << 20  # 16 MiB: `serve`/`check --max-mapping-bytes`



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


_DEFAULT_LIMITS = MappingLimits()


def load_mapping(
    path: str | os.PathLike[str], limits: MappingLimits | None = None, *, max_bytes: int = DEFAULT_MAX_MAPPING_BYTES
) -> LoadedMapping:
    """Read and validate a mapping file; any problem (reading included) raises one `MappingError`.

    A file over `max_bytes` (or not a regular file) is refused before it is parsed, holding at
    most `max_bytes + 1` bytes in memory. limits: how large the mapping may be (default: the
    documented limits).
    """
    source = os.fspath(path)
    raw, text, st = read_utf8(source, "the mapping file", MappingError, max_bytes=max_bytes,
                              limit_name="--max-mapping-bytes")  # fmt: skip
    mapping = parse_mapping(text, source, limits)
    return LoadedMapping(
        mapping=mapping,
        text=text,
        source=source,
        sha256=hashlib.sha256(raw).hexdigest(),
        mtime_ns=st.st_mtime_ns,
        size=st.st_size,
        inode=st.st_ino,
    )


def parse_mapping(text: str, source: str, limits: MappingLimits | None = None) -> ConsentMapping:
    """Validate mapping-file text and build its `ConsentMapping`; raises `MappingError` listing every problem.

    limits: how large the mapping may be (default: the documented limits).
    """
    limits = limits or _DEFAULT_LIMITS
    if _C_COMPOSER_AVAILABLE and not pure_only(text):
        shallow, too_large = prescan(text, limits)
        if too_large is not None:
            raise MappingError([too_large], source)
        if shallow:
            mapping = _valid_mapping_by_c_composer(text, source, limits)
            if mapping is not None:
                return mapping
    return parse_with_nodes(text, source, limits)[0]


def _c_composer_available() -> bool:
    """True when ruamel.yaml.clib is importable and `YAML(typ="safe", pure=False)` will use its parser."""
    try:
        clib = importlib.import_module("_ruamel_yaml")  # the module ruamel.yaml.clib installs
    except ImportError:
        return False
    parser = getattr(clib, "CParser", None)
    return parser is not None and getattr(ruamel.yaml.main, "CParser", None) is parser


_C_COMPOSER_AVAILABLE = _c_composer_available()


def _compose_c(text: str) -> Node | None:
    node: Node | None = YAML(typ="safe", pure=False).compose(text)
    return node


def _valid_mapping_by_c_composer(text: str, source: str, limits: MappingLimits) -> ConsentMapping | None:
    """The document's `ConsentMapping` when it is valid, else None (the round-trip composer then reports it).

    Raises `MappingError` for a mapping over `limits` that the prescan could not see (aliases):
    reading it again with the round-trip composer would cost what the limits are there to bound.
    """
    try:
        root = _compose_c(text)
        if not isinstance(root, MappingNode):
            return None
        walker = Walker(limits)
        mapping = walker.document(root)
        problems = mapping_problems(mapping, limits)
        if walker.truncated:
            raise MappingError(walker.located(p for p in problems if p.message in walker.size_messages), source)
        if walker.problems or problems:
            return None
    except MappingError:
        raise
    except Exception:  # anything at all: the pure path decides, and reports exactly as it always has
        return None
    return mapping


def _compose(text: str, source: str) -> Node | None:
    """The round-trip composer (the shared document reader): the only way to the pure path's nodes."""
    return compose_yaml(text, source, MappingError)


def parse_with_nodes(
    text: str, source: str, limits: MappingLimits | None = None
) -> tuple[ConsentMapping, MappingNode]:
    """The validated mapping and its round-trip node tree (what the editor splices into).

    Always the round-trip composer; raises `MappingError` exactly as `parse_mapping` does.
    """
    limits = limits or _DEFAULT_LIMITS
    root = _compose(text, source)
    if root is None:
        raise MappingError(
            [Problem("", "the file is empty: expected a mapping with `version: 1` and `categories:`")], source
        )
    walker = Walker(limits)
    if not isinstance(root, MappingNode):
        walker.problem("", root, f"the document must be a mapping with version and categories, not {kind(root)}")
        raise MappingError(walker.problems, source)
    mapping = walker.document(root)
    walker.problems.extend(walker.located(
        p for p in mapping_problems(mapping, limits) if not walker.suppressed_by_shape_problem(p.path)
    ))
    if walker.problems:
        raise MappingError(sorted(walker.problems, key=lambda p: (p.line or 0, p.column or 0)), source)
    return mapping, root
