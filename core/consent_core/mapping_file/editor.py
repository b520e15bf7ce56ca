"""Editing the mapping file: a new `ConsentMapping` as the smallest change to the file's own text.

Owns comment-keeping edits behind admin writes: `MappingDocument.with_mapping(new)` splices
the changed values into the original text, so comments, blank lines, key order, quoting and
indentation outside the changed spans stay byte for byte (`rewrite.py` computes the splices).
Every result is re-read and must equal `new`, so an editing bug raises instead of reaching
the disk. Never reads or writes a file (`reader.py` parses, `saver.py` saves) and never
decides whether a change is allowed (`consent_core.edits` does).
"""

from __future__ import annotations

from collections import abc

from ruamel.yaml.nodes import MappingNode

from consent_core.errors import FailedPrecondition, MappingError
from consent_core.limits import MappingLimits
from consent_core.mapping_file.nodes import has_anchors
from consent_core.mapping_file.reader import parse_mapping, parse_with_nodes
from consent_core.mapping_file.rewrite import Rewriter
from consent_core.model import ConsentMapping, mapping_problems

__all__ = ["MappingDocument"]


class MappingDocument:
    """A validated mapping file kept as its text and node tree, to re-render edits of it.

    `with_mapping(new)` returns the file's text changed only where `new` differs: untouched
    bytes (comments, blank lines, key order, quoting, indentation) are kept exactly.
    """

    __slots__ = ("_limits", "_mapping", "_root", "_source", "_text")

    def __init__(
        self, text: str, source: str, mapping: ConsentMapping, root: MappingNode, limits: MappingLimits | None = None
    ) -> None:
        self._text = text
        self._source = source
        self._mapping = mapping
        self._root = root
        self._limits = limits  # the size an edited mapping may have (None: the documented limits)

    @classmethod
    def parse(cls, text: str, source: str, limits: MappingLimits | None = None) -> MappingDocument:
        """Parse and validate (its size against `limits`); raises `MappingError` exactly as `parse_mapping` does."""
        mapping, root = parse_with_nodes(text, source, limits)
        return cls(text, source, mapping, root, limits)

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
        problems = mapping_problems(new) if self._limits is None else mapping_problems(new, self._limits)
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
        if has_anchors(self._root):
            raise FailedPrecondition(
                f"{self._source} uses YAML anchors/aliases (&name, *name), which an edit cannot keep apart; "
                "expand them by hand first"
            )
        out = Rewriter(self._text, self._root, self._mapping).render(new, renames)
        try:
            reread: ConsentMapping | None = parse_mapping(out, self._source, self._limits)
        except MappingError:
            reread = None
        if reread != new:  # an editing bug must never reach the disk
            raise RuntimeError(f"{self._source}: the edited text does not re-read as the intended mapping")
        return out
