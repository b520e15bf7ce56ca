"""The compiled decision table: `compile(ConsentMapping) -> Index` and `Index.decide`, the hot path; pure.

Work that depends only on the mapping happens here at compile time: category ids become bit
positions, each destination becomes one (exempt, any, required mask, shadow mask) row and one
`need` int, and a consent object becomes one granted mask. Allowed/blocked then take one pass
over the request with validation folded in (consent_core.split); explained decisions are built
from the rows (consent_core.explain). Outcomes are memoised per snapshot on (granted mask,
destinations) because real traffic often repeats both, within a byte budget (`memo_bytes`,
consent_core.memo), and the memo steps aside for traffic that does not repeat. Never does I/O
or logging.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from consent_core.explain import ENTRY_BYTES, ID_BYTES, Explainer, Row, event_allows, finish, names
from consent_core.limits import Limits
from consent_core.memo import DEFAULT_MEMO_BYTES, Memo, MemoStats
from consent_core.model import ConsentMapping, Resolution, UnknownDestinations
from consent_core.native import NATIVE
from consent_core.outcome import Decision, Outcome, Reason
from consent_core.split import Split

_tuple_new: Final = tuple.__new__

# consent_core._native's consent reduction: (bits, preferences dict, strict) -> mask, None (strict:
# an odd entry) or -1 (not its to answer: the pure loop). None without the extension.
_native_granted: Final = None if NATIVE is None else NATIVE.granted

__all__ = [
    "DEFAULT_MEMO_BYTES", "PREFERENCE_EVENT_NAME", "Decision", "Index", "MemoStats", "Outcome", "Reason", "compile",
]

PREFERENCE_EVENT_NAME: Final = "Segment Consent Preference Updated"

# Shares of the memo budget (`memo_bytes`): plain outcomes, the common case, take half; explained
# outcomes a quarter; per-destination explained decisions and per-mask tables an eighth each.
_PLAIN_SHARE: Final = 2
_EXPLAINED_SHARE: Final = 4
_DECISIONS_SHARE: Final = 8
_TABLES_SHARE: Final = 8


def _need(row: Row) -> int:
    """The row as consent_core.split's `need`: 0 free, > 0 all of these bits, < 0 any of `~need`'s."""
    exempt, any_, req, _ = row
    if exempt or not req:
        return 0
    if any_ and req & (req - 1):  # `any` of one category is `all` of it
        return ~req
    return req


class Index:
    """An immutable, compiled mapping. Build with `compile`; share freely between threads.

    The memos inside are caches of pure functions of their keys, within `memo_bytes` (estimated)
    in all: threads may race on them and lose an entry, never get a wrong answer.
    """

    __slots__ = (
        "_bits",
        "_cat_names",
        "_explainer",
        "_free",
        "_memo",
        "_shadow_names",
        "_split",
        "category_bits",
        "digest",
        "known_destinations",
        "mapping",
        "memo_bytes",
    )

    def __init__(self, mapping: ConsentMapping, *, memo_bytes: int = DEFAULT_MEMO_BYTES) -> None:
        self.mapping: Final = mapping
        self.digest: Final = mapping.digest()
        self.known_destinations: Final = mapping.known_destinations()
        self.memo_bytes: Final = memo_bytes
        deny_unknown = mapping.settings.unknown_destinations is UnknownDestinations.DENY
        # Only enabled categories take a bit: disabled ones are not enforced at all.
        enabled = [c for c in mapping.categories if c.enabled]
        self._cat_names = tuple(c.id for c in enabled)
        self._bits: dict[str, int] = {c.id: 1 << i for i, c in enumerate(enabled)}
        # Enabled category id -> its bit: for callers that inline `granted_mask_strict` (read only).
        self.category_bits: Final[Mapping[str, int]] = self._bits
        self._shadow_names = frozenset(c.id for c in enabled if c.shadow)
        required: dict[str, int] = dict.fromkeys(self.known_destinations, 0)
        shadow: dict[str, int] = dict.fromkeys(self.known_destinations, 0)
        for c in enabled:
            target = shadow if c.shadow else required
            bit = self._bits[c.id]
            for d in c.destinations:
                target[d] |= bit
        settings = mapping.destinations
        exempt_or_any = {
            d: (not s.enforce, s.resolution is Resolution.ANY) for d, s in settings.items()
        }
        plain = (False, False)
        rows: dict[str, Row] = {
            d: (*exempt_or_any.get(d, plain), required[d], shadow[d]) for d in self.known_destinations
        }
        self._split = Split({d: _need(row) for d, row in rows.items()}, deny_unknown, memo_bytes // _TABLES_SHARE)
        self._free = self._split.free
        self._explainer = Explainer(
            rows, self._cat_names, deny_unknown, memo_bytes // _EXPLAINED_SHARE, memo_bytes // _DECISIONS_SHARE
        )
        # (granted, destinations) -> Outcome without decisions, tagged with the Limits its ids were
        # checked against (None: unchecked); granted None = no consent object.
        self._memo: Memo[tuple[int | None, tuple[str, ...]], Outcome] = Memo(
            memo_bytes // _PLAIN_SHARE
        )

    # -- consent -> mask -------------------------------------------------------------------

    def granted_mask(self, preferences: Mapping[str, bool]) -> int:
        """The bits of the enabled categories granted `True`; unknown ids are ignored."""
        if _native_granted is not None and type(preferences) is dict:
            g: int = _native_granted(self._bits, preferences, False)
            if g >= 0:
                return g
        bits = self._bits
        g = 0
        for k, v in preferences.items():
            if v is True:
                b = bits.get(k)
                if b is not None:
                    g |= b
        return g

    def granted_mask_strict(self, preferences: Mapping[Any, object]) -> int | None:
        """`granted_mask` of untrusted input in the same pass: None when a value is not a bool or
        an id not an exact str (the caller then says why; a str subclass is merely unusual)."""
        if _native_granted is not None and type(preferences) is dict:
            n: int | None = _native_granted(self._bits, preferences, True)
            if n is None or n >= 0:
                return n
        get = self._bits.get
        g = 0
        for k, v in preferences.items():
            if v is True:
                b = get(k)
                if b is not None:
                    g |= b
                    continue
            elif v is not False:
                return None
            if type(k) is not str:
                return None
        return g

    def category_ids(self, mask: int) -> tuple[str, ...]:
        """The enabled category ids named by `mask`, in mapping order."""
        return names(mask, self._cat_names)

    @property
    def all_categories_mask(self) -> int:
        """Every enabled category's bit (shadow ones included)."""
        return (1 << len(self._cat_names)) - 1

    def is_shadow(self, category_id: str) -> bool:
        """Whether `category_id` is an enabled category in dry run."""
        return category_id in self._shadow_names

    def needs(self) -> tuple[Mapping[str, int], int]:
        """consent_core.split's compiled table: known destination id -> need, and an unknown id's need
        (for consent_core.native's tables; read only)."""
        return self._split.needs()

    def need_row(
        self, destinations: tuple[str, ...], limits: Limits, field: str = "destinations"
    ) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """The ids a plain decision of `destinations` answers about (empty = every known id) and
        each one's need (`needs`' encoding), the ids validated against `limits` as `decide_plain`
        validates them (InvalidArgument naming `field[i]`). Under a granted mask `g` an id is
        blocked when `consent_core.split.blocks(need, g)`; with no consent object none is."""
        if not destinations:  # nothing was named, nothing to check
            return self.known_destinations, self._split.row(self.known_destinations, None)
        return destinations, self._split.row(destinations, limits, field)

    # -- memos -----------------------------------------------------------------------------

    def clear_memo(self) -> None:
        """Empties every memo and per-mask table (benchmarks measure the cost of a miss with it)."""
        self._memo.clear()
        self._explainer.clear()
        self._split.clear()

    def memo_stats(self) -> MemoStats:
        """Entries, estimated bytes and evictions of every memo of this index together (for metrics)."""
        parts = [self._memo.stats(), *self._explainer.memos()]
        if self._split.tables is not None:
            parts.append(self._split.tables.stats())
        return MemoStats(
            sum(p.entries for p in parts), sum(p.bytes for p in parts), self.memo_bytes,
            sum(p.evictions for p in parts),
        )

    # -- the decision --------------------------------------------------------------------

    def decide(
        self,
        preferences: Mapping[str, bool] | None,
        destinations: Sequence[str] = (),
        *,
        integrations: Mapping[str, object] | None = None,
        preference_event: bool = False,
        explain: bool = False,
    ) -> Outcome:
        """Decides one event (docs/reference.md, decision semantics).

        preferences: the consent object's categoryPreferences; None = no consent object.
        destinations: as requested (instances allowed); empty = every known destination.
        integrations: the event's `integrations` object, applied after consent.
        preference_event: a "Segment Consent Preference Updated" track event.
        Inputs are assumed valid (see consent_core.event, or `decide_validated`); the hot path.
        """
        if preferences is None:
            granted = None
        elif _native_granted is not None and type(preferences) is dict and (
            (granted := _native_granted(self._bits, preferences, False)) >= 0
        ):
            pass
        else:  # granted_mask, inlined (a call costs a tenth of a miss)
            get = self._bits.get
            granted = 0
            for k, v in preferences.items():
                if v is True:
                    b = get(k)
                    if b is not None:
                        granted |= b
        if not (explain or integrations or preference_event):  # the common case
            dests = destinations if type(destinations) is tuple else tuple(destinations)
            if granted in self._free:  # nothing blocked (most traffic): no memo, no pass
                return _tuple_new(Outcome, (dests or self.known_destinations, (), None))
            if dests:
                memo = self._memo
                if memo.skip:  # off (traffic that does not repeat): the compiled pass alone
                    memo.skip -= 1
                    return self._split.split(granted, dests)
                if memo.seen is None:  # on: a hit, inlined (repeated lists and consents)
                    e = memo.young.get((granted, dests))
                    if e is not None:  # checked or not, its ids were valid: nothing to check here
                        memo.hits += 1
                        return e[0]
            return self._plain(granted, dests, None, "")
        return self.decide_mask(
            granted, tuple(destinations), integrations=integrations, preference_event=preference_event,
            explain=explain,
        )

    def check_destinations(self, destinations: Sequence[str], limits: Limits, field: str = "destinations") -> None:
        """`consent_core.event.check_destinations`, skipping the per-id work when every id is known
        (the mapping's ids were checked once, at compile time)."""
        self._split.check(destinations, limits, field)

    def decide_validated(
        self,
        preferences: Mapping[str, bool] | None,
        destinations: Sequence[str],
        limits: Limits,
        field: str = "destinations",
        *,
        explain: bool = False,
    ) -> Outcome:
        """`decide` (no `integrations`) with the destination ids validated against `limits` on the
        way, InvalidArgument naming `field[i]` as consent_core.event.check_destinations does."""
        if explain:
            self._split.check(destinations, limits, field)
            return self.decide(preferences, destinations, explain=True)
        granted = None if preferences is None else self.granted_mask(preferences)
        return self._limited(granted, destinations, limits, field)

    def decide_checked(
        self, preferences: Mapping[Any, object] | None, destinations: Sequence[str], limits: Limits, field: str
    ) -> Outcome | None:
        """`decide_validated` of untrusted input: the preferences checked in the pass that reduces
        them (None when a preference is not a bool or an id not a str: the caller says why)."""
        if preferences is None:
            granted = None
        elif _native_granted is not None and type(preferences) is dict and (
            (got := _native_granted(self._bits, preferences, True)) is None or got >= 0
        ):
            if got is None:
                return None
            granted = got
        else:  # granted_mask_strict, inlined
            get = self._bits.get
            granted = 0
            for k, v in preferences.items():
                if v is True:
                    b = get(k)
                    if b is not None:
                        granted |= b
                        continue
                elif v is not False:
                    return None
                if type(k) is not str:
                    return None
        return self._limited(granted, destinations, limits, field)

    def _limited(self, granted: int | None, destinations: Sequence[str], limits: Limits, field: str) -> Outcome:
        """`decide_plain` with limits: a memo hit when the memo is on (it also spares the ids'
        check), else the free shortcut, else the pass."""
        if destinations:
            memo = self._memo
            dests = destinations if type(destinations) is tuple else tuple(destinations)
            if memo.seen is None and not memo.skip:
                e = memo.young.get((granted, dests))
                if e is not None and e[2] is limits:  # its ids were checked against these very limits
                    memo.hits += 1
                    return e[0]
            split = self._split
            if granted in self._free:  # nothing blocked: ids the mapping knows need no check either
                trusted = limits is split.ok_limits and len(dests) <= limits.max_destinations
                if trusted and split.known.issuperset(dests):
                    return _tuple_new(Outcome, (dests, (), None))
                return split.split(granted, dests, limits, field)
            if memo.skip:  # off (traffic that does not repeat): the compiled pass alone
                memo.skip -= 1
                return split.split(granted, dests, limits, field)
            return self._plain(granted, dests, limits, field)
        return self._plain(granted, destinations, limits, field)

    def decide_plain(
        self,
        granted: int | None,
        destinations: Sequence[str],
        *,
        limits: Limits | None = None,
        field: str = "destinations",
    ) -> Outcome:
        """Allowed/blocked by consent alone (no explain, no `integrations`), through the memo.

        granted: `granted_mask` of the consent; None = no consent object. `destinations` as in
        `decide`, validated against `limits` when given.
        """
        return self._plain(granted, destinations, limits, field)

    def _plain(self, granted: int | None, destinations: Sequence[str], limits: Limits | None, field: str) -> Outcome:
        if destinations:
            dests = destinations if type(destinations) is tuple else tuple(destinations)
        else:
            dests = self.known_destinations
            limits = None  # nothing was named, nothing to check
        memo = self._memo
        if memo.skip:  # off: traffic that does not repeat, where the memo would only cost
            memo.skip -= 1
            return self._split.split(granted, dests, limits, field)
        key = (granted, dests)
        if memo.seen is not None:  # off, and this call is sampled
            memo.sample(key)
            return self._split.split(granted, dests, limits, field)
        e = memo.entry(key)
        if e is None:
            out = self._split.split(granted, dests, limits, field)
            memo.put(key, out, ENTRY_BYTES + ID_BYTES * len(dests) + sum(map(len, dests)), limits)
            return out
        if limits is not None and e[2] is not limits:
            self._split.check(dests, limits, field)  # memoised unchecked, or under other limits
        return e[0]

    def split(
        self,
        granted: int | None,
        destinations: tuple[str, ...],
        *,
        limits: Limits | None = None,
        field: str = "destinations",
    ) -> Outcome:
        """`decide_plain` without the memo: for callers that memoise answers themselves (the server)."""
        if not destinations:
            destinations, limits = self.known_destinations, None
        return self._split.split(granted, destinations, limits, field)

    def decide_mask(
        self,
        granted: int | None,
        destinations: tuple[str, ...],
        *,
        integrations: Mapping[str, object] | None = None,
        preference_event: bool = False,
        explain: bool = False,
    ) -> Outcome:
        """`decide` with the consent already reduced to `granted_mask` (None = no consent object).

        `destinations` is a tuple (a memo key), assumed valid; empty = every known destination.
        Memoised per (granted, destinations) when `integrations` is empty and this is no
        preference event.
        """
        dests = destinations or self.known_destinations
        if preference_event:
            decisions = [Decision(d, True, Reason.PREFERENCE_EVENT) for d in dests]
            out = finish(decisions, integrations)
            return out if explain else Outcome(out.allowed, out.blocked)
        if explain:
            if integrations:
                return finish(self._explainer.decisions(granted, dests), integrations)
            return self._explainer.outcome(granted, dests)
        plain = self.decide_plain(granted, dests)
        if integrations:
            # A destination's consent verdict depends only on its string, so a set is exact.
            consent_blocked = set(plain.blocked)
            all_off = integrations.get("All") is False
            al: list[str] = []
            bl: list[str] = []
            for d in dests:
                ok = d not in consent_blocked and event_allows(integrations, all_off, d)
                (al if ok else bl).append(d)
            return Outcome(tuple(al), tuple(bl))
        return plain


def compile(mapping: ConsentMapping, *, memo_bytes: int = DEFAULT_MEMO_BYTES) -> Index:
    """Compiles a validated mapping into its decision table.

    memo_bytes: the estimated bytes all of the index's memos may hold together (default 32 MiB);
        0 disables memoisation (every event takes the compiled pass).
    """
    return Index(mapping, memo_bytes=memo_bytes)
