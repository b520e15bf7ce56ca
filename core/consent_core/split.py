"""Allowed and blocked by consent alone, compiled: what every event costs when no memo answers; pure.

Each known destination compiles to one int, its *need*: 0 when nothing is required (exempt,
unmapped, or mapped only to shadow/disabled categories); > 0 the category bits that must all be
granted; < 0 `~need` holds the bits of an `any` destination, one of which must be granted. A
consent is one granted mask `g`. Deciding a request is then one pass: look the id up, test
one mask, append it to allowed or blocked. Ids the table does not hold (instances, unknown
ids) take a side path that validates them, so validation costs known ids nothing; the
error for an invalid id is exactly `consent_core.event.check_destinations`'s.

For a granted mask in steady use (the ids decided under it reached the number of known ids,
about what building its table costs) that blocks almost no known id or almost every one (a
consent granting everything, or only what is strictly necessary: most of real traffic), a
per-mask table replaces the pass: the few known ids it blocks, or the few it allows, as a
frozenset, so a request of known ids splits with C-level set operations (and with nothing
at all when the mask blocks no known id). Other masks keep the pass: a table of half the ids
would cost memory and saves little. Tables live in a `Memo` within a byte budget. Never does I/O.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from itertools import filterfalse
from typing import Final

from consent_core.errors import InvalidArgument
from consent_core.limits import Limits
from consent_core.memo import Memo
from consent_core.model import invisible_problem
from consent_core.native import NATIVE
from consent_core.outcome import Outcome

__all__ = ["Split", "check_destination_ids", "destination_problem"]

# A frozenset of the known ids a granted mask blocks (True) or allows (False).
_Table = tuple[bool, frozenset[str]]

_MAX_WORK_ENTRIES: Final = 4096  # granted masks whose past work is remembered
_TABLE_SHARE: Final = 8  # a table holds at most this fraction of the known ids
_NO_TABLE_BYTES: Final = 100  # the estimated size of a "no table for this mask" entry

_tuple_new: Final = tuple.__new__

# consent_core._native's pass (None: the pure one below, always, e.g. with CONSENT_CORE_PURE=1).
_native_split: Final = None if NATIVE is None else NATIVE.split


def destination_problem(destination: str, max_bytes: int) -> str | None:
    """Why `destination` is not a valid destination id in a request, or None."""
    size = len(destination)
    if size == 0:
        return "destination id must not be empty"
    # A str of at most max_bytes // 4 characters cannot exceed max_bytes in UTF-8: skip encoding it.
    if size > max_bytes // 4 and len(destination.encode("utf-8", "surrogatepass")) > max_bytes:
        return f"destination id longer than {max_bytes} bytes"
    if destination[0] == "/":
        return "destination id must not start with '/'"
    # Control and format characters (and separators, lone surrogates) are never printable: one C call.
    if not destination.isprintable() and (why := invisible_problem(destination)) is not None:
        return f"destination id {why}"
    return None


def check_destination_ids(destinations: Sequence[str], limits: Limits, field: str) -> None:
    """Raises InvalidArgument (naming `field[i]`) unless every id is valid and there are not too many."""
    n = len(destinations)
    if n > limits.max_destinations:
        raise InvalidArgument(field, f"too many destinations: {n} > {limits.max_destinations}")
    max_bytes = limits.max_destination_id_bytes
    for i, d in enumerate(destinations):
        if (why := destination_problem(d, max_bytes)) is not None:
            raise InvalidArgument(f"{field}[{i}]", why)


def blocks(need: int, granted: int) -> bool:
    """Whether a destination of this need is blocked under `granted` (the definition the pass inlines)."""
    return bool(need & ~granted) and (need >= 0 or not ~need & granted)


class Split:
    """The compiled (allowed, blocked) decision of one snapshot. Build once; share between threads."""

    __slots__ = (
        "_groups",
        "_known",
        "_known_ok_bytes",
        "_need",
        "_unknown_need",
        "_work",
        "free",
        "known",
        "ok_limits",
        "tables",
    )

    def __init__(self, need: dict[str, int], deny_unknown: bool, table_budget: int) -> None:
        self._need = need
        self._known = self.known = frozenset(need)
        # The last Limits under which every known id is a valid request id (Limits are frozen):
        # callers that find their limits here need check no known id.
        self.ok_limits: Limits | None = None
        self._unknown_need = -1 if deny_unknown else 0  # -1: an `any` of no category: always blocked
        # Known ids are valid request ids under limits allowing this many bytes, checked here once
        # (mappings forbid empty ids, '/' and invisible characters; a mapping built without
        # validation that holds one is checked in full on every request: sys.maxsize).
        ok = all(destination_problem(d, sys.maxsize) is None for d in need)
        self._known_ok_bytes = (
            max((len(d.encode("utf-8", "surrogatepass")) for d in need), default=0) if ok else sys.maxsize
        )
        groups: dict[int, list[str]] = {}
        for d, n in need.items():
            groups.setdefault(n, []).append(d)
        self._groups = {n: tuple(ids) for n, ids in groups.items()}
        # granted mask -> its table. When the largest table does not fit the Memo's largest entry,
        # there are no tables and no work is counted.
        self.tables: Memo[int, _Table | None] | None = Memo(table_budget)
        if sys.getsizeof(frozenset(need)) // _TABLE_SHARE + 100 > table_budget >> 5:
            self.tables = None
        self._work: dict[int, int] = {}  # granted mask -> destinations decided without a table
        # The granted masks under which every id is allowed: no consent object (None) and, when
        # unknown ids are allowed, each mask whose table blocks no known id. Callers test
        # membership before anything else (one set lookup, then no pass): most real traffic
        # grants everything.
        self.free: set[int | None] = {None}

    def needs(self) -> tuple[dict[str, int], int]:
        """The compiled table (known id -> need) and the need of an id it does not hold (read only)."""
        return self._need, self._unknown_need

    # -- validation --------------------------------------------------------------------------

    def _trusted(self, limits: Limits) -> bool:
        """Whether every known id is a valid request id under `limits` (so a lookup validates it)."""
        return self._known_ok_bytes <= limits.max_destination_id_bytes

    def check(self, destinations: Sequence[str], limits: Limits, field: str) -> None:
        """`check_destination_ids`, skipping the per-id work when every id is known (one C-level pass)."""
        n = len(destinations)
        if n > limits.max_destinations:
            raise InvalidArgument(field, f"too many destinations: {n} > {limits.max_destinations}")
        if not (self._trusted(limits) and self._known.issuperset(destinations)):
            check_destination_ids(destinations, limits, field)

    def row(self, dests: tuple[str, ...], limits: Limits | None, field: str = "destinations") -> tuple[int, ...]:
        """Each id's need, in request order, `dests` validated against `limits` first when given
        (InvalidArgument naming `field[i]`, as `split` with these limits raises): what a caller
        deciding one list under many masks computes once (the embedded decide_many's C loop)."""
        if limits is not None:
            self.check(dests, limits, field)
        get = self._need.get
        return tuple(n if (n := get(d)) is not None else self._resolve(d, dests, None, field) for d in dests)

    # -- the decision ------------------------------------------------------------------------

    def _resolve(self, d: str, dests: Sequence[str], limits: Limits | None, field: str) -> int:
        """The need of an id the table does not hold: validated (when `limits`), then its base's or unknown's."""
        if limits is not None and (why := destination_problem(d, limits.max_destination_id_bytes)) is not None:
            raise InvalidArgument(f"{field}[{dests.index(d)}]", why)  # the first invalid id is this one
        if "/" in d:  # `<destination>/<instance>` decides as <destination>
            n = self._need.get(d.split("/", 1)[0])
            if n is not None:
                return n
        return self._unknown_need

    def split(
        self, granted: int | None, dests: tuple[str, ...], limits: Limits | None = None, field: str = "destinations"
    ) -> Outcome:
        """Allowed and blocked in request order (no decisions); granted None = no consent object.

        With `limits`, `dests` is validated in the same pass (InvalidArgument naming `field[i]`).
        """
        if limits is not None and limits is not self.ok_limits:
            if self._known_ok_bytes > limits.max_destination_id_bytes:  # known ids may be too long
                check_destination_ids(dests, limits, field)  # in full: then the pass need not
                limits = None
            else:
                self.ok_limits = limits
        if limits is not None and len(dests) > limits.max_destinations:
            check_destination_ids(dests, limits, field)  # raises: too many
        if granted is None or granted in self.free:  # no consent object, or a mask that blocks nothing
            if limits is not None and not self._known.issuperset(dests):
                check_destination_ids(dests, limits, field)
            return _tuple_new(Outcome, (dests, (), None))
        tables = self.tables
        counted = False  # whether the mask has no entry in `tables` yet (its work is counted)
        table: _Table | None = None
        if tables is not None:  # an entry's table is None when it would be too large
            e = tables.young.get(granted)
            if e is None:
                e = tables.old.get(granted)
                if e is None:
                    counted = True
                else:
                    tables.put(granted, e[0], e[1])  # promoted (tables carry no tag)
            if e is not None:
                table = e[0]
        if table is not None:
            is_blocked, ids = table
            if is_blocked and not ids and limits is None and not self._unknown_need:
                # No known id blocked, unknown ones allowed, nothing to check: every id is allowed.
                return _tuple_new(Outcome, (dests, (), None))
            if not self._known.issuperset(dests):
                table = None  # an instance, unknown or invalid id: the pass resolves it
        if _native_split is not None:  # the same pass in C; None: an id or mask it leaves to the pure pass
            got = _native_split(self._need, self._unknown_need, granted, dests, limits is not None)
            if got is not None:
                if counted and tables is not None:
                    self._count(tables, granted, len(dests))
                return _tuple_new(Outcome, (got[0], got[1], None))
        if table is not None:
            if not ids:
                return _tuple_new(Outcome, ((dests, (), None) if is_blocked else ((), dests, None)))
            contains = ids.__contains__
            if is_blocked:
                bl = tuple(filter(contains, dests))
                return _tuple_new(Outcome, ((tuple(filterfalse(contains, dests)) if bl else dests), bl, None))
            al = tuple(filter(contains, dests))
            return _tuple_new(Outcome, (al, (tuple(filterfalse(contains, dests)) if al else dests), None))
        # The pass: one lookup and one mask test per id (`blocks`, inlined).
        ng = ~granted
        al_list: list[str] = []
        bl_list: list[str] = []
        allow = al_list.append
        block = bl_list.append
        get = self._need.get
        for d in dests:
            n = get(d)
            if n is None:
                n = self._resolve(d, dests, limits, field)
            if n & ng and (n >= 0 or not ~n & granted):
                block(d)
            else:
                allow(d)
        if counted and tables is not None:  # `_count`'s common case inlined: the work is only noted
            work = self._work
            done = work.get(granted, 0) + len(dests)
            if done < len(self._known) and len(work) < _MAX_WORK_ENTRIES:
                work[granted] = done
            else:
                self._count(tables, granted, len(dests))
        return _tuple_new(Outcome, (tuple(al_list), tuple(bl_list), None))

    # -- per-mask tables ---------------------------------------------------------------------

    def _count(self, tables: Memo[int, _Table | None], granted: int, n: int) -> None:
        """Adds `n` ids decided without a table under `granted`; decides its table once that paid for it."""
        work = self._work
        done = work.get(granted, 0) + n
        if done < len(self._known):
            if len(work) >= _MAX_WORK_ENTRIES:
                work.clear()  # forgetting past work only delays a table
            work[granted] = done
            return
        work.pop(granted, None)
        table = self._table(granted)  # None: too large, remembered as such (the pass it is)
        if table is not None and table[0] and not table[1] and not self._unknown_need:
            free = self.free
            if len(free) >= _MAX_WORK_ENTRIES:
                free.clear()
                free.add(None)
            free.add(granted)
        tables.put(granted, table, _NO_TABLE_BYTES if table is None else sys.getsizeof(table[1]) + 100)

    def _table(self, granted: int) -> _Table | None:
        """The few known ids `granted` blocks (True) or allows (False); None when neither side is few."""
        blocked: list[Iterable[str]] = []
        allowed: list[Iterable[str]] = []
        nb = 0
        for n, ids in self._groups.items():
            if blocks(n, granted):
                blocked.append(ids)
                nb += len(ids)
            else:
                allowed.append(ids)
        few = len(self._known) // _TABLE_SHARE
        if nb <= few:
            return True, frozenset().union(*blocked)
        if len(self._known) - nb <= few:
            return False, frozenset().union(*allowed)
        return None

    def clear(self) -> None:
        """Forgets every table and all past work."""
        if self.tables is not None:
            self.tables.clear()
        self._work.clear()
        self.free.clear()
        self.free.add(None)
