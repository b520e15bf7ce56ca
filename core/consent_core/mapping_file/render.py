"""Rendering for the editor: a value of the mapping as the YAML text the file will hold.

Owns how a string, a boolean, a destinations list, a destination's settings and a whole new
category are written, so that each reads back as exactly that value (`editor.py` re-reads
every edit to prove it). Pure: never sees the file being edited beyond the `CategoryStyle`
taken from it, never validates.
"""

from __future__ import annotations

import functools
from collections import abc
from dataclasses import dataclass

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import ScalarNode, SequenceNode

from consent_core.mapping_file.nodes import CATEGORY_KEYS, STR, tag_of
from consent_core.model import Category, DestinationSettings, Resolution

__all__ = [
    "CategoryStyle",
    "render_bool",
    "render_category",
    "render_destination",
    "render_flow_category",
    "render_flow_list",
    "render_str",
]


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
        if not (isinstance(item, ScalarNode) and tag_of(item) == STR and item.value == value):
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


def render_str(value: str, style: str | None = None) -> str:
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


def render_bool(value: bool) -> str:
    return "true" if value else "false"


def render_flow_list(values: abc.Iterable[str]) -> str:
    return "[" + ", ".join(render_str(v) for v in values) + "]"


def render_destination(settings: DestinationSettings) -> str:
    parts = []
    if not settings.enforce:
        parts.append("enforce: false")
    if settings.resolution is not Resolution.ALL:
        parts.append(f"resolution: {settings.resolution.value}")
    return "{" + ", ".join(parts) + "}"


@dataclass(slots=True)
class CategoryStyle:
    """How the file writes a category, taken from its last one (or defaults for an empty list)."""

    dash: str = "  - "  # the text before the first key on the item's line
    key_indent: str = "    "
    flow_item: bool = False  # `- {id: ..., ...}`
    flow_destinations: bool = True
    destination_dash: str = "  - "  # relative to key_indent, for block destination lists
    key_order: tuple[str, ...] = CATEGORY_KEYS
    blank_line_between: bool = False


def render_category(c: Category, style: CategoryStyle, nl: str) -> str:
    """A new block category (or flow item) in the file's own style, ending with `nl`."""
    if style.flow_item:
        return f"{style.dash}{render_flow_category(c)}{nl}"
    fields = _category_fields(c, style.key_order)
    lines: list[str] = []
    for name, rendered in fields:
        lead = style.dash if not lines else style.key_indent
        if name == "destinations" and not style.flow_destinations:
            lines.append(f"{lead}destinations:{nl}")
            lines.extend(f"{style.key_indent}{style.destination_dash}{render_str(d)}{nl}" for d in c.destinations)
        else:
            lines.append(f"{lead}{name}: {rendered}{nl}")
    return "".join(lines)


def render_flow_category(c: Category) -> str:
    """A new category as a flow mapping: `{id: ..., name: ..., destinations: [...]}`."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in _category_fields(c, CATEGORY_KEYS)) + "}"


def _category_fields(c: Category, key_order: tuple[str, ...]) -> list[tuple[str, str]]:
    values: dict[str, str] = {"id": render_str(c.id), "name": render_str(c.name)}
    if not c.enabled:
        values["enabled"] = "false"
    if c.shadow:
        values["shadow"] = "true"
    values["destinations"] = render_flow_list(c.destinations)
    order = [k for k in key_order if k in CATEGORY_KEYS]
    for k in CATEGORY_KEYS:  # the usual place for a key the reference category lacks
        if k not in order:
            earlier = CATEGORY_KEYS[: CATEGORY_KEYS.index(k)]
            pos = max((order.index(e) + 1 for e in earlier if e in order), default=0)
            order.insert(pos, k)
    return [(k, values[k]) for k in order if k in values]
