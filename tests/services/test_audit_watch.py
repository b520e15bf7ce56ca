"""WatchAuditEvents over real gRPC: events encoded once and sent byte for byte, history paced, live events not."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2, admin_pb2_grpc

from consent_sidecar.audit import AuditAction, AuditLog, AuditRecord, NewEvent
from consent_sidecar.services.audit_watch import EncodedEvents, WatchStreams, audit_event

if TYPE_CHECKING:
    from conftest import RunningSidecar, StartSidecar

WAIT = 30.0  # upper bound of every wait here, in seconds
METHOD = "/consent.v1.AdminService/WatchAuditEvents"


def audit_of(sc: RunningSidecar) -> AuditLog:
    assert sc.audit is not None
    return sc.audit


def watches(sc: RunningSidecar) -> WatchStreams:
    assert sc.sidecar.admin is not None
    return sc.sidecar.admin.watches


async def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Polls `check()` until true; fails naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def fill(sc: RunningSidecar, n: int) -> None:
    """Appends `n` events after the start event, in batches (one with a large body)."""
    events = [
        NewEvent("alice", AuditAction.CATEGORY_UPDATED, category_id=f"C{i % 7}", detail=f"event {i}",
                 after_json='{"x": "' + "y" * (3000 if i == 5 else 10) + '"}')
        for i in range(n)
    ]  # fmt: skip
    for i in range(0, n, 100):
        await asyncio.to_thread(audit_of(sc).append, events[i : i + 100])


def all_records(sc: RunningSidecar) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    token = ""
    while True:
        page, token = audit_of(sc).page(page_size=1000, page_token=token)
        out += page
        if not token:
            return out


def raw_watch(sc: RunningSidecar, after: int = 0) -> grpc.aio.UnaryStreamMultiCallable:  # type: ignore[type-arg]
    """WatchAuditEvents with no response deserializer: the client sees the messages' bytes."""
    assert sc.admin is not None
    call = sc.admin.unary_stream(METHOD, request_serializer=admin_pb2.WatchAuditEventsRequest.SerializeToString)
    return call(admin_pb2.WatchAuditEventsRequest(after_sequence=after), timeout=120)


async def read_bytes(call: object, n: int, into: list[bytes] | None = None) -> list[bytes]:
    out = into if into is not None else []
    while len(out) < n:
        m = await asyncio.wait_for(call.read(), WAIT)  # type: ignore[attr-defined]
        assert m is not grpc.aio.EOF
        out.append(m)
    return out


# -- encoded once, sent byte for byte -------------------------------------------------------


async def test_streams_send_exactly_the_bytes_the_generated_serializer_would(start_sidecar: StartSidecar) -> None:
    async with start_sidecar(admin=True, audit_replay_rate=None) as sc:
        await fill(sc, 250)
        expected = [audit_event(r).SerializeToString() for r in all_records(sc)]
        assert len(expected) == 251
        calls = [raw_watch(sc) for _ in range(3)]
        try:
            got = await asyncio.gather(*(read_bytes(c, len(expected)) for c in calls))
        finally:
            for c in calls:
                c.cancel()
        for stream in got:
            assert stream == expected
        # One encoding per event, shared: the other streams were served from it.
        encoded = watches(sc).encoded
        assert encoded.misses == len(expected)
        assert encoded.hits == 2 * len(expected)


async def test_the_generated_stubs_read_the_stream_as_audit_events(start_sidecar: StartSidecar) -> None:
    async with start_sidecar(admin=True) as sc:
        await fill(sc, 20)
        expected = [audit_event(r) for r in all_records(sc)]
        call = admin_pb2_grpc.AdminServiceStub(sc.admin).WatchAuditEvents(
            admin_pb2.WatchAuditEventsRequest(after_sequence=0), timeout=60
        )
        try:
            got = [await asyncio.wait_for(call.read(), WAIT) for _ in expected]
        finally:
            call.cancel()
        assert got == expected


def record(sequence: int, *, digest: str = "h", detail: str = "d") -> AuditRecord:
    return AuditRecord(sequence, datetime(2026, 1, 1, tzinfo=UTC), "alice", AuditAction.CATEGORY_UPDATED,
                       "C1", "", "", "", detail, "p", digest)  # fmt: skip


def test_encoded_events_are_shared_and_bounded_in_bytes() -> None:
    cache = EncodedEvents(max_bytes=4000)
    first = cache.get(record(1))
    assert cache.get(record(1)) is first  # the same bytes object for every stream
    assert first == audit_event(record(1)).SerializeToString()
    for seq in range(2, 200):
        cache.get(record(seq))
    assert cache.bytes <= 4000
    assert 0 < len(cache) < 199
    assert cache.get(record(199)) is cache.get(record(199))  # the newest are kept, the oldest went first
    misses = cache.misses
    cache.get(record(1))
    assert cache.misses == misses + 1


def test_an_encoding_is_only_reused_for_the_same_event() -> None:
    cache = EncodedEvents()
    cache.get(record(7, digest="a"))
    other = dataclasses.replace(record(7, digest="b"), detail="rewritten")
    assert cache.get(other) == audit_event(other).SerializeToString()
    assert cache.misses == 2


def test_an_event_larger_than_an_eighth_of_the_budget_is_not_kept() -> None:
    cache = EncodedEvents(max_bytes=8000)
    big = record(1, detail="x" * 2000)
    assert cache.get(big) == audit_event(big).SerializeToString()
    assert len(cache) == 0 and cache.bytes == 0


# -- history paced, live events not --------------------------------------------------------


async def test_a_paced_replay_sends_every_event_in_order_byte_for_byte(start_sidecar: StartSidecar) -> None:
    rate = 400.0
    async with start_sidecar(admin=True, audit_replay_rate=rate) as sc:
        await fill(sc, 500)
        expected = [audit_event(r).SerializeToString() for r in all_records(sc)]
        started = time.monotonic()
        calls = [raw_watch(sc), raw_watch(sc)]
        try:
            got = await asyncio.gather(*(read_bytes(c, len(expected)) for c in calls))
        finally:
            for c in calls:
                c.cancel()
        took = time.monotonic() - started
        assert got == [expected, expected]
        # Both streams' history shared one budget: beyond the first page, `rate` events a second.
        assert took >= (2 * len(expected) - 100) / rate * 0.9


async def test_a_live_event_reaches_a_caught_up_watcher_while_another_still_replays(
    start_sidecar: StartSidecar,
) -> None:
    async with start_sidecar(admin=True, audit_replay_rate=20.0) as sc:
        await fill(sc, 300)  # 301 events: ~10 s of history at 20 a second beyond the first page
        head = audit_of(sc).head
        assert head is not None
        replaying = raw_watch(sc)
        received: list[bytes] = []
        reader = asyncio.ensure_future(read_bytes(replaying, head.sequence, received))
        caught_up = raw_watch(sc, after=head.sequence)
        try:
            await eventually(lambda: len(received) >= 100, "the replaying stream's first page")
            await eventually(lambda: watches(sc).live == 1, "the watcher from the head to go live")
            now = NewEvent("alice", AuditAction.CATEGORY_UPDATED, detail="now")
            await asyncio.to_thread(audit_of(sc).append, [now])
            [live] = await read_bytes(caught_up, 1)
            assert admin_pb2.AuditEvent.FromString(live).sequence == head.sequence + 1
            # The other stream is provably still in its history: paced, not finished, not live.
            assert len(received) < head.sequence
            assert watches(sc).live == 1 and watches(sc).open == 2
        finally:
            reader.cancel()
            replaying.cancel()
            caught_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
