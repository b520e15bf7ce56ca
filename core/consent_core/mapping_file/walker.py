"""The mapping file's node tree -> `ConsentMapping`: shapes and types checked, every problem located.

Owns one pass over ruamel.yaml's round-trip node tree (`Walker`): it builds the mapping,
records each path's line and column, reports wrong shapes and types (docs/reference.md,
"Mapping file") once each, counts against `MappingLimits` as it goes, and locates the
semantic problems `consent_core.model.mapping_problems` finds. `reader` composes the tree
and calls it. Pure: never reads a file, composes YAML, decides or logs anything.
"""

from __future__ import annotations

from collections.abc import Iterable

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from consent_core.errors import Problem
from consent_core.limits import MappingLimits
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
    too_many_categories,
    too_many_destinations,
)

__all__ = ["Walker"]

_TRUE_WORDS = frozenset({"true", "yes", "on", "y"})  # `yes`/`on` only resolve to bool under %YAML 1.1
_YAML11_BOOLS = frozenset({"yes", "no", "on", "off", "y", "n"})
_SELF = "\0self"  # `Walker.problem(silence=...)` default: the problem's own path


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str | None:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ("" if path else None)


class Walker:
    """One pass over the node tree: builds the ConsentMapping, records path -> position, collects shape problems.

    Where a value has the wrong shape, a unique placeholder stands in for it so the semantic
    rules still run on everything else; their findings on (or under) a path that already has
    a shape problem are dropped, so each mistake is reported once.
    """

    def __init__(self, limits: MappingLimits) -> None:
        self.problems: list[Problem] = []
        self.positions: dict[str, tuple[int, int]] = {}
        self._suppressed: set[str] = set()
        self.limits = limits
        self.size_messages = (too_many_categories(limits), too_many_destinations(limits))
        self.truncated = False  # over a size limit: nothing past the first id beyond it was built
        self._destinations: set[str] = set()

    def _count(self, destination: str) -> None:
        """Counts a distinct destination id; past the limit, the walk stops building."""
        self._destinations.add(destination)
        if len(self._destinations) > self.limits.max_destinations:
            self.truncated = True

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

    def located(self, problems: Iterable[Problem]) -> list[Problem]:
        """The model's problems (no positions) at the positions their paths were read from."""
        out = []
        for p in problems:
            line, column = self.position(p.path)
            out.append(Problem(p.path, p.message, line, column))
        return out

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
                items = value.value
                if len(items) > self.limits.max_categories:  # one beyond the limit, for the rules to report
                    items = items[: self.limits.max_categories + 1]
                    self.truncated = True
                for i, item in enumerate(items):
                    categories.append(self.category(item, i))
                    if len(self._destinations) > self.limits.max_destinations:
                        break
            elif tag_of(value) != NULL:  # `categories:` with everything commented out is an empty list
                self.problem("categories", value, f"must be a list of categories, not {kind(value)}", key)
        destinations: dict[str, DestinationSettings] = {}
        if "destinations" in top and len(self._destinations) <= self.limits.max_destinations:
            destinations = self.destinations(*top["destinations"])
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
            self._count(out[-1])
            if len(self._destinations) > self.limits.max_destinations:
                break
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
            self._count(dest)
            if len(self._destinations) > self.limits.max_destinations:
                break
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
