"""Warnings about a valid mapping: what the rules allow but is almost certainly a mistake; pure.

Today: category ids, or names, that differ only in case (`c0004` beside `C0004`). Ids are
compared case-sensitively, so both are legal, yet a CMP sends one spelling and the other
category then never matches; names that differ only in case make the typed-name confirmation
of Disable and Delete easy to get wrong. Warnings never make a mapping invalid: `check` prints
them and still succeeds. Never reads files.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from consent_core.documents import node_position
from consent_core.errors import Problem
from consent_core.model import ConsentMapping

__all__ = ["warnings"]


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def warnings(mapping: ConsentMapping, text: str) -> list[Problem]:
    """The warnings for a mapping validated from `text`, located in it (message prefixed "warning: ")."""
    try:
        doc: Any = YAML(typ="rt").load(text)
    except YAMLError:  # validated already: not expected; warn without positions
        doc = None
    nodes = doc.get("categories") if isinstance(doc, dict) else None
    out: list[Problem] = []
    for key, what in (("id", "ids are compared case-sensitively: an event naming one never grants the other"),
                      ("name", "Disable and Delete must be confirmed with the exact name")):
        first: dict[str, int] = {}
        for i, c in enumerate(mapping.categories):
            value: str = getattr(c, key)
            j = first.setdefault(_fold(value), i)
            if j == i:
                continue
            other: str = getattr(mapping.categories[j], key)
            where: tuple[int | None, int | None] = (None, None)
            if isinstance(nodes, list) and i < len(nodes):
                where = node_position(nodes[i], key, value=True)
            out.append(Problem(
                f"categories[{i}].{key}",
                f"warning: {value!r} differs from categories[{j}].{key} {other!r} only in case ({what})",
                *where,
            ))
    return sorted(out, key=lambda p: (p.line or 0, p.column or 0))
