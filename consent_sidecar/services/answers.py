"""What DecisionService keeps per policy snapshot, and how an answer becomes bytes on the wire.

Owns the consent.v1 wire pieces the handlers assemble by hand (a DecideBatchResponse is the
concatenation of its pre-encoded fields: the same bytes protobuf produces, tests check it),
the per-snapshot memos (`Served`), and the encoding of an unexplained DecideResponse from
per-destination pieces. Never decides (the core does) and never does I/O.

Memos are bounded in bytes (estimates) per generation, derived from the index's `memo_bytes`
(default 32 MiB: 4 MiB per generation for request bytes, for (mask, destinations) answers and
for consent objects), and turn themselves off for traffic that does not repeat: then callers
skip them (no probe, no store, no garbage for the collector) except one call or batch in
`_SAMPLE_EVERY`, whose hits turn them back on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from consent.v1 import decision_pb2
from consent_core.errors import InvalidArgument, printable
from consent_core.index import Index, Outcome
from consent_core.limits import Limits
from consent_core.memo import MemoStats
from consent_core.native import batch_table

from consent_sidecar.observe.metrics import Tally
from consent_sidecar.store.policy import Snapshot

__all__ = ["Answer", "Served", "encode_response", "error_body", "field", "split_batch"]

DecideResponse = decision_pb2.DecideResponse

RESPONSES_TAG: Final = b"\x0a"  # DecideBatchResponse.responses: field 1, wire type 2 (length-delimited)
POLICY_TAG: Final = b"\x12"  # DecideBatchResponse.policy: field 2, wire type 2
_ENTRY_TAG: Final = 0x0A  # DecideBatchRequest.requests: field 1, wire type 2
_ALLOWED_TAG: Final = b"\x0a"  # DecideResponse.allowed: field 1
_BLOCKED_TAG: Final = b"\x12"  # DecideResponse.blocked: field 2
_RESPONSE_POLICY_TAG: Final = b"\x22"  # DecideResponse.policy: field 4

_MEMO_SHARE: Final = 8  # each memo's generation: this fraction of the index's memo_bytes
_MAX_MEMO_ITEM: Final = 64 << 10  # larger entries (thousands of destinations, huge consents) are not kept
_WINDOW: Final = 512  # lookups per look at a memo's hit rate
_MIN_HIT_SHARE: Final = 8  # below 1 hit in 8 lookups a memo does not pay for itself
_SAMPLE_EVERY: Final = 8  # off: one call (or batch) in 8 goes the memo way, and is counted


# -- wire format ----------------------------------------------------------------------------------


_SHORT: Final = [bytes((n,)) for n in range(0x80)]  # one-byte varints: most lengths here


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SHORT[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, body: bytes) -> bytes:
    """One length-delimited field: tag, varint length, body."""
    return tag + _varint(len(body)) + body


def split_batch(data: bytes) -> list[bytes] | None:
    """The encoded DecideRequest entries of an encoded DecideBatchRequest, in order.

    None when `data` holds anything but field-1 entries or is truncated: the caller then parses
    it with protobuf (which accepts unknown fields or raises the DecodeError the plain path would).
    Entry contents are not checked here; each is parsed (or found in the memo) on its own.
    """
    out: list[bytes] = []
    append = out.append
    i = 0
    n = len(data)
    try:
        while i < n:
            if data[i] != _ENTRY_TAG:
                return None
            length = data[i + 1]
            if length < 0x80:  # entries under 128 bytes: a one-byte length
                i += 2
            elif (b2 := data[i + 2]) < 0x80:  # under 16 KiB: two bytes, the common case
                length = (length & 0x7F) | (b2 << 7)
                i += 3
            else:
                length = (length & 0x7F) | ((b2 & 0x7F) << 7)
                i += 3
                shift = 14
                while True:
                    b = data[i]
                    i += 1
                    length |= (b & 0x7F) << shift
                    if not b & 0x80:
                        break
                    shift += 7
                    if shift > 28:
                        return None
            end = i + length
            if end > n:
                return None
            append(data[i:end])
            i = end
    except IndexError:
        return None
    return out


def encode_response(outcome: Outcome, policy: decision_pb2.PolicyVersion, explain: bool) -> bytes:
    """The DecideResponse for `outcome`, encoded: decisions only when `explain`."""
    msg = DecideResponse()
    msg.allowed.extend(outcome.allowed)
    msg.blocked.extend(outcome.blocked)
    if explain and outcome.decisions is not None:
        add = msg.decisions.add
        for d in outcome.decisions:
            add(
                destination=d.destination,
                allowed=d.allowed,
                reason=int(d.reason),  # consent_core.index.Reason values equal consent.v1.Reason
                required_categories=d.required_categories,
                missing_categories=d.missing_categories,
                shadow_missing_categories=d.shadow_missing_categories,
            )
    msg.policy.CopyFrom(policy)
    return msg.SerializeToString()


def error_body(e: InvalidArgument) -> bytes:
    """A batch entry's or stream message's error response (its message is printable UTF-8, as status details are)."""
    return DecideResponse(error=printable(str(e))).SerializeToString()


# -- answers and their memos ------------------------------------------------------------------------


class Answer:
    """One decided request: its encoded response (alone and as a batch entry) and what it counts as."""

    __slots__ = ("_framed", "body", "destinations", "granted", "integrations", "preference_event", "tally")

    def __init__(
        self,
        body: bytes,
        tally: Tally | None,
        granted: int | None,
        destinations: tuple[str, ...],
        integrations: dict[str, Any] | None = None,
        preference_event: bool = False,
    ) -> None:
        self.body = body
        self._framed: bytes | None = None  # built when a batch first needs it: most answers never are
        self.tally = tally
        self.granted = granted
        self.destinations = destinations
        self.integrations = integrations
        self.preference_event = preference_event

    @property
    def framed(self) -> bytes:
        """The response as a DecideBatchResponse `responses` field."""
        framed = self._framed
        if framed is None:
            framed = self._framed = field(RESPONSES_TAG, self.body)
        return framed


K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """A bounded map in two generations: hits in `old` move to `young`; a full `young` becomes `old`.

    The hot path reads `young` directly (and counts its hits); `get_old` and `put` are the slow
    path. Bounded by entries and by a weight (estimated bytes) per generation; entries heavier
    than `_MAX_MEMO_ITEM` are not kept. `off` (fewer than 1 hit in `_MIN_HIT_SHARE` lookups over
    the last window): callers ask `bypass()` and skip the memo when it says so.
    """

    __slots__ = (
        "countdown", "evictions", "hits", "max_entries", "max_weight", "misses", "off", "old", "old_weight",
        "weigh", "weight", "young",
    )

    def __init__(self, max_entries: int, max_weight: int, weigh: Callable[[K, V], int]) -> None:
        self.young: dict[K, V] = {}
        self.old: dict[K, V] = {}
        self.weight = 0
        self.old_weight = 0
        self.max_entries = max_entries
        self.max_weight = max_weight
        self.weigh = weigh
        self.hits = 0
        self.misses = 0
        self.evictions = 0  # entries dropped with an old generation
        self.off = False
        self.countdown = _SAMPLE_EVERY

    def bypass(self) -> bool:
        """Whether this call should skip the memo: it is off and the call is not a sampled one."""
        if not self.off:
            return False
        self.countdown -= 1
        if self.countdown > 0:
            return True
        self.countdown = _SAMPLE_EVERY
        self._look()  # sampled calls that only hit never store: look at their hit rate here
        return False

    def _look(self) -> None:
        """After a window of lookups: off when fewer than 1 in `_MIN_HIT_SHARE` hit, else on."""
        lookups = self.hits + self.misses
        if lookups >= _WINDOW:
            self.off = self.hits * _MIN_HIT_SHARE < lookups
            self.hits = self.misses = 0

    def get_old(self, key: K) -> V | None:
        """The young generation missed: the old one, promoted on a hit; counts the hit or the miss."""
        value = self.old.get(key)
        if value is not None:
            self.hits += 1
            self.put(key, value)
        else:
            self.misses += 1
        return value

    def put(self, key: K, value: V) -> None:
        self._look()
        w = self.weigh(key, value)
        if w > _MAX_MEMO_ITEM:
            return
        if len(self.young) >= self.max_entries or self.weight + w > self.max_weight:
            self.evictions += len(self.old)
            self.old = self.young
            self.old_weight = self.weight
            self.young = {}
            self.weight = 0
        self.young[key] = value
        self.weight += w

    def stats(self) -> MemoStats:
        return MemoStats(
            len(self.young) + len(self.old), self.weight + self.old_weight, 2 * self.max_weight, self.evictions
        )


AnswerKey = tuple[int | None, tuple[str, ...], bool]


def _weigh_raw(key: bytes, a: Answer) -> int:
    return len(key) + 2 * len(a.body) + 200


def _weigh_answer(key: AnswerKey, a: Answer) -> int:
    return 70 * len(key[1]) + 2 * len(a.body) + 200


def _weigh_consent(key: bytes, granted: int) -> int:
    return len(key) + 100


class Served:
    """Everything kept for one policy snapshot; replaced (never cleared) when the snapshot changes."""

    __slots__ = (
        "_allowed", "_blocked", "_known", "_policy_tail", "answers", "batch_table", "consent", "generation", "index",
        "policy", "policy_field", "raw", "snap",
    )

    def __init__(self, snap: Snapshot, limits: Limits | None = None) -> None:
        self.snap = snap
        self.index: Index = snap.index
        self.generation = snap.generation
        self.policy = decision_pb2.PolicyVersion(generation=snap.generation, digest=snap.digest)
        policy = self.policy.SerializeToString()
        self.policy_field = policy_field = field(POLICY_TAG, policy)  # of a DecideBatchResponse
        self._policy_tail = field(_RESPONSE_POLICY_TAG, policy)  # of a DecideResponse (its last field)
        # consent_core.native's compiled table for plain batches (None: no extension, or no limits given).
        self.batch_table = None if limits is None else batch_table(self.index, limits, self._policy_tail, policy_field)
        per_generation = max(self.index.memo_bytes // _MEMO_SHARE, 1)
        self.raw: Memo[bytes, Answer] = Memo(per_generation // 512, per_generation, _weigh_raw)
        self.answers: Memo[AnswerKey, Answer] = Memo(per_generation // 512, per_generation, _weigh_answer)
        self.consent: Memo[bytes, int] = Memo(per_generation // 1024, per_generation, _weigh_consent)
        # Known destination id -> its encoded DecideResponse.allowed / .blocked field, filled as used.
        self._known = frozenset(self.index.known_destinations)
        self._allowed: dict[str, bytes] = {}
        self._blocked: dict[str, bytes] = {}

    def memo_stats(self) -> list[MemoStats]:
        return [self.raw.stats(), self.answers.stats(), self.consent.stats()]

    def encode(self, outcome: Outcome) -> bytes:
        """An unexplained outcome's DecideResponse: protobuf's bytes, joined from per-id pieces."""
        try:
            return b"".join([
                *map(self._allowed.__getitem__, outcome.allowed), *map(self._blocked.__getitem__, outcome.blocked),
                self._policy_tail,
            ])
        except KeyError:
            pass
        # An id not encoded yet: known ones are added (bounded by the mapping), others are not kept.
        parts = []
        for tag, pieces, ids in ((_ALLOWED_TAG, self._allowed, outcome.allowed),
                                 (_BLOCKED_TAG, self._blocked, outcome.blocked)):
            for d in ids:
                piece = pieces.get(d)
                if piece is None:
                    piece = field(tag, d.encode())
                    if d in self._known:
                        pieces[d] = piece
                parts.append(piece)
        parts.append(self._policy_tail)
        return b"".join(parts)
