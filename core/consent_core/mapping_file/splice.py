"""Splicing the mapping file's text: where a node's text lies, and how edits replace spans of it.

Owns the geometry of the original text (a node's own span without trailing comments, its
lines, the `-` of a list item, the comment lines attached above it) and the application
of non-overlapping `Edit`s, so that every byte outside an edited span stays exactly as it
was. Never decides what to change (the editor does) and never renders a value.
"""

from __future__ import annotations

from dataclasses import dataclass

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from consent_core.mapping_file.nodes import is_empty

__all__ = ["Edit", "TextSpans", "apply_edits"]


@dataclass(frozen=True, slots=True, order=True)
class Edit:
    """Replace text[start:end] by `text`; `seq` keeps insertions at one point in the order made."""

    start: int
    end: int
    seq: int
    text: str


def apply_edits(text: str, edits: list[Edit], base: int = 0) -> str:
    """text[base:] with every edit applied (edits must not overlap; offsets are into `text`)."""
    out: list[str] = []
    pos = base
    for e in sorted(edits):
        if e.start < pos:
            raise RuntimeError(f"overlapping edits at offset {e.start}")  # a bug in the editor, never input
        out.append(text[pos : e.start])
        out.append(e.text)
        pos = e.end
    out.append(text[pos:])
    return "".join(out)


class TextSpans:
    """Positions in one document's text, computed from its round-trip nodes' marks."""

    def __init__(self, text: str) -> None:
        self.text = text

    def line_start(self, i: int) -> int:
        return self.text.rfind("\n", 0, i) + 1

    def line_end(self, i: int) -> int:
        """The index after the newline ending the line that holds text[i]."""
        j = self.text.find("\n", i)
        return len(self.text) if j < 0 else j + 1

    def end(self, node: Node) -> int:
        """Where the node's own text ends (trailing blanks, newlines and comments excluded); -1 if empty."""
        if isinstance(node, ScalarNode):
            if is_empty(node):
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
