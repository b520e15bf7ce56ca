"""The text edits that turn a valid mapping document into a new `ConsentMapping`, comments kept.

Owns `Rewriter`: given the document's text, its round-trip node tree and the mapping it
holds, it computes the smallest splices (`splice.Edit`) for the settings, the destinations
and the categories: categories are matched old to new (by id, or through a rename), moved
only where a longest increasing run of kept positions says they must, and edited field by
field; lists get line-wise inserts and deletes in the file's own style (`render`).
`editor.MappingDocument` drives it and re-reads every result. Pure: never reads or writes a
file, and never judges a change (the document is valid, the new mapping already checked).
"""

from __future__ import annotations

import bisect
import difflib
from collections import abc

from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from consent_core.mapping_file.nodes import CATEGORY_KEYS, is_empty, style_of
from consent_core.mapping_file.render import (
    CategoryStyle,
    render_bool,
    render_category,
    render_destination,
    render_flow_category,
    render_flow_list,
    render_str,
)
from consent_core.mapping_file.splice import Edit, TextSpans, apply_edits
from consent_core.model import Category, ConsentMapping, DestinationSettings, Settings

__all__ = ["Rewriter"]


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


class Rewriter(TextSpans):
    """Computes the text edits that turn the document into a new ConsentMapping (valid document assumed)."""

    def __init__(self, text: str, root: MappingNode, old: ConsentMapping) -> None:
        super().__init__(text)
        self.root = root
        self.old = old
        self.nl = "\r\n" if "\r\n" in text else "\n"
        self.edits: list[Edit] = []
        self.top: dict[str, tuple[Node, Node]] = {}
        for key, value in root.value:
            self.top.setdefault(str(key.value), (key, value))

    def edit(self, start: int, end: int, text: str) -> None:
        self.edits.append(Edit(start, end, len(self.edits), text))

    def insert_lines(self, at: int, lines: str) -> None:
        """Insert whole lines at a line start (`at` may be the end of a file lacking its last newline)."""
        if at > 0 and self.text[at - 1] != "\n":
            lines = self.nl + lines
        self.edit(at, at, lines)

    def indent_unit(self) -> int:
        for name in ("destinations", "settings"):
            if name in self.top:
                key, value = self.top[name]
                if isinstance(value, MappingNode) and not value.flow_style and value.value:
                    return max(1, int(value.start_mark.column) - int(key.start_mark.column))
        return 2

    # -- scalars and small maps

    def replace_scalar(self, node: Node, rendered: str) -> Edit:
        s, e = self.span(node)
        return Edit(s, e, 0, rendered)

    def set_map_fields(self, key: Node, value: Node, fields: list[tuple[str, str]]) -> list[Edit]:
        """Set `fields` ((name, rendered value)) in the map `value` (or null) held by `key`."""
        edits: list[Edit] = []
        if not isinstance(value, MappingNode):  # null: write a flow map where it was
            rendered = "{" + ", ".join(f"{k}: {v}" for k, v in fields) + "}"
            if is_empty(value):
                at = self.colon_after(key) + 1
                edits.append(Edit(at, at, 0, " " + rendered))
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
                edits.append(Edit(at, at, 0, "".join(f", {m}" for m in missing)))
            else:
                edits.append(Edit(value.start_mark.index, value.end_mark.index, 0, "{" + ", ".join(missing) + "}"))
        else:
            indent = " " * value.start_mark.column
            at = self.lines_end(value)
            edits.append(Edit(at, at, 0, "".join(f"{indent}{m}{self.nl}" for m in missing)))
        return edits

    # -- the whole document

    def render(self, new: ConsentMapping, renamed: dict[str, str]) -> str:
        self.settings(new.settings)
        self.categories(new, renamed)
        self.destinations(new.destinations)
        return apply_edits(self.text, self.edits)

    def settings(self, new: Settings) -> None:
        if new == self.old.settings:
            return
        value_text = render_str(new.unknown_destinations.value)
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
            lines = "".join(f"{col}{unit}{render_str(d)}: {render_destination(new[d])}{self.nl}" for d in added)
            last_key, last_value = self.root.value[-1]
            self.insert_lines(self.lines_end(last_key, last_value), f"{col}destinations:{self.nl}{lines}")
            return
        key, value = self.top["destinations"]
        if not isinstance(value, MappingNode) or (value.flow_style and not value.value):
            rendered = ", ".join(f"{render_str(d)}: {render_destination(new[d])}" for d in added)
            if is_empty(value):
                indent = " " * key.start_mark.column + unit
                lines = "".join(f"{indent}{render_str(d)}: {render_destination(new[d])}{self.nl}" for d in added)
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
                    parts.append(f"{self.text[k.start_mark.index : self.end(k)]}: {render_destination(new[dest])}")
            parts.extend(f"{render_str(d)}: {render_destination(new[d])}" for d in added)
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
                    fields.append(("enforce", render_bool(new[dest].enforce)))
                if new[dest].resolution != old[dest].resolution:
                    fields.append(("resolution", new[dest].resolution.value))
                for e in self.set_map_fields(k, v, fields):
                    self.edit(e.start, e.end, e.text)
            floor = self.lines_end(k, v)
        if added:
            indent = " " * value.start_mark.column
            lines = "".join(f"{indent}{render_str(d)}: {render_destination(new[d])}{self.nl}" for d in added)
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
                moved_text[old_i] = apply_edits(self.text[:end], inner, base=start)
        staying_in_order = [i for i in match if i is not None and i in staying]
        at = blocks[staying_in_order[0]][0] if staying_in_order else max(e for _, e in removed)
        before_first = bool(staying_in_order)
        sep = self.nl if style.blank_line_between else ""
        for j, old_i in enumerate(match):
            if old_i is not None and old_i in staying:
                at, before_first = blocks[old_i][1], False
                continue
            block = moved_text[old_i] if old_i is not None else render_category(new.categories[j], style, self.nl)
            self.insert_lines(at, block + sep if before_first else sep + block)
        if not new.categories:
            colon = self.colon_after(key)
            self.edit(colon + 1, colon + 1, " []")

    def categories_from_empty(self, key: Node, value: Node, new: tuple[Category, ...]) -> None:
        """`categories:` (null) or `categories: []` getting its first categories: block style."""
        if not new:
            return
        col = key.start_mark.column
        style = CategoryStyle(dash=" " * (col + 2) + "- ", key_indent=" " * (col + 4))
        if isinstance(value, SequenceNode):  # `[]`: drop it (and the space before it)
            start = value.start_mark.index
            while start > 0 and self.text[start - 1] in " \t":
                start -= 1
            self.edit(start, value.end_mark.index, "")
        lines = "".join(render_category(c, style, self.nl) for c in new)
        self.insert_lines(self.line_end(self.colon_after(key)), lines)

    def flow_categories(self, value: SequenceNode, new: tuple[Category, ...], match: list[int | None]) -> None:
        parts = []
        for j, i in enumerate(match):
            if i is None:
                parts.append(render_flow_category(new[j]))
            else:
                item = value.value[i]
                inner = self.category_edits(item, self.old.categories[i], new[j])
                parts.append(apply_edits(self.text[: self.end(item)], inner, base=item.start_mark.index))
        self.edit(value.start_mark.index, value.end_mark.index, "[" + ", ".join(parts) + "]")

    def category_style(self, key: Node, items: list[MappingNode]) -> CategoryStyle:
        ref = items[-1]
        style = CategoryStyle()
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

    def category_edits(self, item: MappingNode, old: Category, new: Category) -> list[Edit]:
        """The edits inside one matched category's own text."""
        if old == new:
            return []
        entries = {str(k.value): (k, v) for k, v in item.value}
        edits: list[Edit] = []
        for field in ("id", "name"):
            before, after = getattr(old, field), getattr(new, field)
            if before != after:
                node = entries[field][1]
                edits.append(self.replace_scalar(node, render_str(after, style_of(node))))
        for field in ("enabled", "shadow"):
            before, after = getattr(old, field), getattr(new, field)
            if before == after:
                continue
            if field in entries:
                edits.append(self.replace_scalar(entries[field][1], render_bool(after)))
            else:
                edits.append(self.add_category_field(item, entries, field, render_bool(after)))
        if old.destinations != new.destinations:
            node = entries["destinations"][1]
            assert isinstance(node, SequenceNode)  # a valid document lists at least one
            edits.extend(self.list_edits(node, list(old.destinations), list(new.destinations)))
        return [Edit(e.start, e.end, n, e.text) for n, e in enumerate(edits)]

    def add_category_field(
        self, item: MappingNode, entries: dict[str, tuple[Node, Node]], field: str, rendered: str
    ) -> Edit:
        """A new `field: value` after the key that precedes it in the usual order (id, name, enabled, shadow)."""
        order = CATEGORY_KEYS[: CATEGORY_KEYS.index(field)]
        anchor = next((entries[k] for k in reversed(order) if k in entries), item.value[0])
        if item.flow_style:
            at = max(self.end(anchor[0]), self.end(anchor[1]))
            return Edit(at, at, 0, f", {field}: {rendered}")
        at = self.lines_end(*anchor)
        prefix = self.nl if at > 0 and self.text[at - 1] != "\n" else ""
        return Edit(at, at, 0, f"{prefix}{' ' * item.start_mark.column}{field}: {rendered}{self.nl}")

    def list_edits(self, seq: SequenceNode, old: list[str], new: list[str]) -> list[Edit]:
        """Edits turning a destinations list `old` into `new`, keeping its flow or block style."""
        items: list[Node] = list(seq.value)
        ops = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
        if seq.flow_style:
            if not items:
                return [Edit(seq.start_mark.index, seq.end_mark.index, 0, render_flow_list(new))]
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
                    parts.extend(render_str(v) for v in new[j1:j2])
            if "\n" in opening or "\n" in closing or "#" in closing:
                opening, closing = "[", "]"
            return [Edit(seq.start_mark.index, seq.end_mark.index, 0, opening + sep.join(parts) + closing)]
        first = items[0]
        prefix = self.text[self.line_start(first.start_mark.index) : first.start_mark.index]
        if prefix.strip() != "-":
            dash = self.dash(first)
            prefix = " " * (dash - self.line_start(dash)) + "- "
        edits: list[Edit] = []

        def lines(values: list[str]) -> str:
            return "".join(f"{prefix}{render_str(v)}{self.nl}" for v in values)

        def delete(i1: int, i2: int) -> None:
            edits.append(Edit(self.line_start(self.dash(items[i1])), self.lines_end(items[i2 - 1]), 0, ""))

        def insert_after(i: int, values: list[str]) -> None:
            if i < 0:
                at = self.line_start(self.dash(items[0]))
                edits.append(Edit(at, at, 0, lines(values)))
            else:
                at = self.lines_end(items[i])
                gap = self.nl if at > 0 and self.text[at - 1] != "\n" else ""
                edits.append(Edit(at, at, 0, gap + lines(values)))

        for tag, i1, i2, j1, j2 in ops:
            if tag == "equal":
                continue
            n = min(i2 - i1, j2 - j1)
            for k in range(n):  # replaced in place: the item's end-of-line comment stays
                node = items[i1 + k]
                edits.append(self.replace_scalar(node, render_str(new[j1 + k], style_of(node))))
            if i2 - i1 > n:
                delete(i1 + n, i2)
            if j2 - j1 > n:
                insert_after(i1 + n - 1, new[j1 + n : j2])
        return edits
