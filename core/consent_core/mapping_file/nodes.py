"""The mapping file's vocabulary over ruamel.yaml nodes: its keys, the YAML tags it reads, node predicates.

Shared by the reader (which judges shapes) and the editor (which splices text where nodes
are); both must agree on what an implicit null or a quoted scalar is. Pure: never reads
files, never builds a `ConsentMapping`, never reports a problem.
"""

from __future__ import annotations

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "BOOL",
    "CATEGORY_KEYS",
    "DESTINATION_KEYS",
    "INT",
    "NULL",
    "SETTINGS_KEYS",
    "STR",
    "TAG",
    "TOP_KEYS",
    "has_anchors",
    "is_empty",
    "kind",
    "style_of",
    "tag_of",
]

TOP_KEYS = ("version", "settings", "categories", "destinations")
SETTINGS_KEYS = ("unknown_destinations",)
CATEGORY_KEYS = ("id", "name", "enabled", "shadow", "destinations")  # also the order new keys are written in
DESTINATION_KEYS = ("enforce", "resolution")

TAG = "tag:yaml.org,2002:"
STR, INT, BOOL, NULL = TAG + "str", TAG + "int", TAG + "bool", TAG + "null"


def tag_of(node: Node) -> str:
    return str(node.tag)


def is_empty(node: Node) -> bool:
    """An implicit null (`key:` with nothing after it): its marks point at the next token."""
    return isinstance(node, ScalarNode) and tag_of(node) == NULL and node.value == "" and not node.style


def kind(node: Node) -> str:
    """What a node is, for messages: "a mapping", "a list", "an integer", ..."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = tag_of(node)
    return {
        NULL: "empty (null)",
        BOOL: "a boolean",
        INT: "an integer",
        TAG + "float": "a number",
        TAG + "timestamp": "a date",
        STR: "a string",
    }.get(tag, f"a {tag} value")


def style_of(node: Node) -> str | None:
    """A scalar's quoting: None (plain), "'", '"', "|" or ">"."""
    return node.style if isinstance(node, ScalarNode) else None


def has_anchors(node: Node) -> bool:
    """True when the node or anything under it carries a YAML anchor (`&name`)."""
    if node.anchor is not None:
        return True
    if isinstance(node, MappingNode):
        return any(has_anchors(k) or has_anchors(v) for k, v in node.value)
    if isinstance(node, SequenceNode):
        return any(has_anchors(item) for item in node.value)
    return False
