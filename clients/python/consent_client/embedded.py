"""In-process decisions with the sidecar's own compiled index: zero network hops, or a local fallback.

`EmbeddedDecider` loads the mapping file with `consent_core.mapping_file.load_mapping`, compiles it
with `consent_core.index.compile` and decides through the core (`Index.decide_plain` for consent
objects, `consent_core.event.decide_one` for Segment events and explained requests), exactly the
paths the server takes, under the same `consent_core.limits.Limits`: same answers, same validation,
same errors (translated to `consent_client.errors`). Optionally it re-reads the file when it
changes, keeping the last good policy when an edit is broken. It never copies decision logic.

The plain path (consent object, no explain) is the in-process hot path: the consent is checked
and reduced to a granted mask in one pass, destination ids are validated inside the index's
decision pass, and the result is built once, directly (`results.decided`). `decide_many`
decides each distinct (consent, destination list) of a batch once, in consent-core's C loop
when the accelerator is built (`_native_many`), else in the Python loop it must equal.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from consent_core import errors as core_errors
from consent_core import native as core_native
from consent_core.event import check_destinations, decide_one, parse_segment_event
from consent_core.index import Index, Outcome
from consent_core.index import compile as compile_index
from consent_core.limits import Limits
from consent_core.model import ConsentMapping

from consent_client._wire import encode_event
from consent_client.errors import InvalidArgument, MappingFileError
from consent_client.results import (
    DecideResult,
    Decision,
    PolicyVersion,
    Request,
    as_destinations,
    consent_problem,
    decided,
    reason_from_number,
)

__all__ = ["EmbeddedDecider", "Override", "Snapshot", "decide_local", "encode_event"]


class Override(enum.Enum):
    """How a failure policy reinterprets an event's consent when deciding locally."""

    NONE = "none"  # decide the request as it is
    NO_CONSENT = "no_consent"  # as if the event carried no consent object (fail_open)
    GRANT_NOTHING = "grant_nothing"  # as if its consent object granted nothing (fail_closed)


def _result(outcome: Outcome, policy: PolicyVersion | None, explain: bool) -> DecideResult:
    decisions: tuple[Decision, ...] = ()
    if explain and outcome.decisions:
        decisions = tuple(
            Decision(
                d.destination,
                d.allowed,
                reason_from_number(int(d.reason)),
                d.required_categories,
                d.missing_categories,
                d.shadow_missing_categories,
            )
            for d in outcome.decisions
        )
    return DecideResult(outcome.allowed, outcome.blocked, decisions, policy)


def _granted(index: Index, consent: Mapping[str, bool]) -> int:
    """The consent's granted mask; raises InvalidArgument for a malformed one, as the sidecar would."""
    granted = index.granted_mask_strict(consent)
    if granted is None:  # something is odd: say what (a str subclass as an id is merely unusual)
        if (problem := consent_problem(consent)) is not None:
            raise InvalidArgument(problem)
        granted = index.granted_mask(consent)
    return granted


def _decide_plain(
    index: Index, limits: Limits, consent: Mapping[str, bool] | None, destinations: Sequence[str],
    policy: PolicyVersion | None, field: str,
) -> DecideResult:
    """A consent object (or none), not explained: checked and decided in the index's compiled pass."""
    try:
        out = index.decide_checked(consent, destinations, limits, field)
    except core_errors.InvalidArgument as e:
        raise InvalidArgument(str(e)) from None
    if out is None:  # something in the consent is odd: say what, as the sidecar would
        assert consent is not None
        if (problem := consent_problem(consent)) is not None:
            raise InvalidArgument(problem)
        out = index.decide_validated(consent, destinations, limits, field)  # a str subclass as an id
    return decided(out.allowed, out.blocked, policy)


def decide_local(
    index: Index,
    limits: Limits,
    request: Request,
    policy: PolicyVersion | None,
    *,
    override: Override = Override.NONE,
    field: str = "",
) -> DecideResult:
    """Decides one request in-process with `index`; raises consent_client.errors.InvalidArgument.

    `field` prefixes field names in error messages (e.g. "requests[3]."), as the server does.
    """
    if override is Override.NONE and request.event is None and not request.explain:
        return _decide_plain(index, limits, request.consent, request.destinations, policy, f"{field}destinations")
    if request.consent is not None and (problem := consent_problem(request.consent)) is not None:
        raise InvalidArgument(problem)
    try:
        dests = request.destinations
        raw = None if request.event is None else encode_event(request.event)
        if override is Override.NONE:
            outcome = decide_one(
                index, limits, dests,
                preferences=request.consent, segment_event=raw, explain=request.explain, field=field,
            )
        else:
            check_destinations(dests, limits, f"{field}destinations")
            integrations = None
            if raw is not None:
                integrations = parse_segment_event(raw, limits, f"{field}segment_event").integrations
            prefs: dict[str, bool] | None = None if override is Override.NO_CONSENT else {}
            outcome = index.decide(prefs, dests, integrations=integrations, explain=request.explain)
    except core_errors.InvalidArgument as e:
        raise InvalidArgument(str(e)) from None
    return _result(outcome, policy, request.explain)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One loaded policy: the compiled index and the version it reports."""

    index: Index
    policy: PolicyVersion


def _load(path: str) -> tuple[ConsentMapping, tuple[int, int, int]]:
    """The validated mapping and the (mtime_ns, size, inode) of the very file it was read from."""
    # Imported lazily: the YAML stack is only needed once a mapping file is actually read.
    from consent_core.mapping_file import load_mapping

    loaded = load_mapping(path)
    return loaded.mapping, (loaded.mtime_ns, loaded.size, loaded.inode)


# A file modified this recently may be modified again within the filesystem's timestamp
# granularity without changing its (mtime, size, inode): such a read is re-checked (git's
# "racy" rule); the digest comparison keeps a re-read of unchanged content from publishing.
_RACY_NS: Final = 2_000_000_000


def _settled(key: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    """`key`, or None (re-read on the next check) when the file was modified too recently to trust it."""
    if key is None or time.time_ns() - key[0] < _RACY_NS:
        return None
    return key


def _file_key(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class EmbeddedDecider:
    """Decides in-process against a mapping file, with the sidecar's own compiled index.

    mappings_path: the YAML mapping file (the same one the sidecar serves).
    watch: re-read the file when it changes. Checked lazily on decide, at most once every
        `check_interval` seconds (a `stat`, so cheap); a change of mtime, size or inode
        triggers a reload; a broken edit keeps the last good policy and sets `last_error`.
        The generation grows only when the mapping's digest changes.
    limits: the input limits (defaults equal the sidecar's).

    Thread-safe: decisions read one snapshot reference; one thread at a time reloads, the
    others keep deciding against the current snapshot meanwhile.
    """

    def __init__(
        self,
        mappings_path: str | os.PathLike[str],
        *,
        watch: bool = False,
        check_interval: float = 1.0,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path: Final = os.fspath(mappings_path)
        self.limits: Final = limits if limits is not None else Limits()
        self.watch: Final = watch
        self.check_interval: Final = check_interval
        self._clock = clock
        self._reload_lock = threading.Lock()
        self.last_error: str | None = None
        self.reloads = 0
        self.failed_reloads = 0
        try:
            mapping, key = _load(self.path)
        except core_errors.MappingError as e:
            raise MappingFileError(e.format()) from None
        except OSError as e:
            raise MappingFileError(f"{self.path}: {e.strerror or e}") from None
        self._key: tuple[int, int, int] | None = _settled(key)
        self._snapshot = Snapshot(compile_index(mapping), PolicyVersion(1, mapping.digest()))
        self._next_check = clock() + check_interval

    # -- the policy ------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The current policy (after a due change check when watching)."""
        if self.watch and self._clock() >= self._next_check:
            self._maybe_reload(force=False)
        return self._snapshot

    @property
    def policy(self) -> PolicyVersion:
        return self.snapshot.policy

    @property
    def known_destinations(self) -> tuple[str, ...]:
        """Every destination the mapping knows, sorted by id."""
        return self.snapshot.index.known_destinations

    def reload(self) -> bool:
        """Checks the file now (watching or not); True when a new policy was published."""
        return self._maybe_reload(force=True)

    def _maybe_reload(self, *, force: bool) -> bool:
        if not self._reload_lock.acquire(blocking=force):
            return False  # another thread is checking; decide against the current snapshot
        try:
            self._next_check = self._clock() + self.check_interval
            try:
                key = _file_key(self.path)
            except OSError as e:  # mid-rename or deleted: keep serving what we have
                self.last_error = f"{self.path}: {e.strerror or e}"
                return False
            if key == self._key and not force:
                return False
            self._key = _settled(key)  # a broken file is not re-parsed until it changes again
            try:
                mapping, loaded_key = _load(self.path)
            except core_errors.MappingError as e:
                self.failed_reloads += 1
                self.last_error = e.format()
                return False
            except Exception as e:  # any loader failure keeps the last good policy
                self.failed_reloads += 1
                self.last_error = f"{self.path}: {e}"
                return False
            self._key = _settled(loaded_key)
            self.last_error = None
            current = self._snapshot
            digest = mapping.digest()
            if digest == current.policy.digest:
                return False
            self._snapshot = Snapshot(compile_index(mapping), PolicyVersion(current.policy.generation + 1, digest))
            self.reloads += 1
            return True
        finally:
            self._reload_lock.release()

    # -- decisions -------------------------------------------------------------------------

    def decide(
        self, destinations: Sequence[str] = (), consent: Mapping[str, bool] | None = None, *, explain: bool = False
    ) -> DecideResult:
        """Decides one event given its consent (`categoryPreferences`; None = no consent object)."""
        if explain or (type(destinations) is not tuple and isinstance(destinations, str)):  # as_destinations raises
            return self.decide_request(Request(as_destinations(destinations), consent, None, explain))
        snap = self.snapshot if self.watch else self._snapshot
        index = snap.index
        try:  # `_decide_plain`, inlined: the in-process hot path
            out = index.decide_checked(consent, destinations, self.limits, "destinations")
        except core_errors.InvalidArgument as e:
            raise InvalidArgument(str(e)) from None
        if out is None:
            return _decide_plain(index, self.limits, consent, destinations, snap.policy, "destinations")
        return decided(out.allowed, out.blocked, snap.policy)

    def decide_event(
        self, event: Mapping[str, Any] | bytes | str, destinations: Sequence[str] = (), *, explain: bool = False
    ) -> DecideResult:
        """Decides a Segment event (consent from context.consent, `integrations` honoured)."""
        return self.decide_request(Request(as_destinations(destinations), None, event, explain))

    def decide_request(self, request: Request) -> DecideResult:
        """Decides one request; raises InvalidArgument for malformed input, like the sidecar's Decide."""
        snap = self.snapshot
        return decide_local(snap.index, self.limits, request, snap.policy)

    def decide_many(self, requests: Iterable[Request]) -> list[DecideResult]:
        """Like DecideBatch: one snapshot for all; an invalid entry gets `error`, the rest are decided.

        What repeats inside a batch is done once: each (granted mask, destination list object)
        is validated and decided once, and the entries that share them share one (immutable)
        result; a consent object is reduced once per run of entries that carry it. With
        consent-core's accelerator the loop runs in C (`_native_many`); the loop below is the
        reference and the fallback, and both answer every entry alike.
        """
        reqs = requests if isinstance(requests, list) else list(requests)
        if len(reqs) > self.limits.max_batch:
            raise InvalidArgument(f"requests: too many entries: {len(reqs)} > {self.limits.max_batch}")
        snap = self.snapshot
        index, limits, policy = snap.index, self.limits, snap.policy
        bits = index.category_bits

        def one(i: int, req: Request) -> DecideResult:
            return _entry(index, limits, policy, i, req)

        if core_native.NATIVE is not None and type(bits) is dict and len(bits) <= core_native.MAX_CATEGORIES:
            return _native_many(index, limits, policy, reqs, one)
        # (granted mask, id(destination list)) -> the one result of every entry sharing both; id() is
        # safe, every list is alive in `reqs` meanwhile. Invalid entries are never stored (each is
        # reported under its own index).
        results: dict[tuple[int | None, int], DecideResult] = {}
        last_consent: object = None  # the last consent object reduced, and its mask
        last_granted: int | None = None
        out: list[DecideResult] = []
        append = out.append
        for i, req in enumerate(reqs):
            consent = req.consent
            if req.event is not None or req.explain:
                append(one(i, req))
                continue
            granted: int | None = None
            if consent is None:
                pass
            elif consent is last_consent:  # one consent object for many events
                granted = last_granted
            else:
                granted = index.granted_mask_strict(consent)
                if granted is None:  # something is odd: say what, as the sidecar would
                    try:
                        granted = _granted(index, consent)
                    except InvalidArgument as e:
                        append(DecideResult(error=e.message, policy=policy))
                        continue
                last_consent, last_granted = consent, granted
            dests = req.destinations
            key = (granted, id(dests))
            result = results.get(key)
            if result is None:
                try:
                    o = index.decide_plain(granted, dests, limits=limits, field=f"requests[{i}].destinations")
                except core_errors.InvalidArgument as e:
                    append(DecideResult(error=str(e), policy=policy))
                    continue
                result = results[key] = decided(o.allowed, o.blocked, policy)
            append(result)
        return out


def _entry(index: Index, limits: Limits, policy: PolicyVersion, i: int, req: Request) -> DecideResult:
    """Entry `i` of decide_many decided alone (nothing shared): events, explain, odd consents and
    invalid lists, which both loops hand here, and anything the C loop leaves to Python."""
    consent = req.consent
    if req.event is not None or req.explain:
        try:
            return decide_local(index, limits, req, policy, field=f"requests[{i}].")
        except InvalidArgument as e:
            return DecideResult(error=e.message, policy=policy)
    granted: int | None = None
    if consent is not None:
        try:
            granted = _granted(index, consent)
        except InvalidArgument as e:
            return DecideResult(error=e.message, policy=policy)
    try:
        o = index.decide_plain(granted, req.destinations, limits=limits, field=f"requests[{i}].destinations")
    except core_errors.InvalidArgument as e:
        return DecideResult(error=str(e), policy=policy)
    return decided(o.allowed, o.blocked, policy)


def _native_many(
    index: Index, limits: Limits, policy: PolicyVersion, reqs: list[Request],
    one: Callable[[int, Request], DecideResult],
) -> list[DecideResult]:
    """decide_many's loop in C (consent_core._native.many): plain entries there, the rest through `one`.

    The C validates and resolves ids of printable ASCII itself, from `index.needs()`; `row`
    validates and resolves a list it does not (other ids, too many, the empty list), once per
    list object: None when the list is invalid, whose entries then go through `one`, each
    reporting its own index.
    """

    def row(dests: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]] | None:
        try:
            return index.need_row(dests, limits)
        except core_errors.InvalidArgument:
            return None

    need, unknown_need = index.needs()
    assert core_native.NATIVE is not None
    got: list[DecideResult] = core_native.NATIVE.many(
        reqs, Request, index.category_bits, need, unknown_need, limits.max_destinations,
        limits.max_destination_id_bytes, policy, decided, row, one,
    )
    return got
