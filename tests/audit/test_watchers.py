"""Live watching: backlog then live without gap or duplicate, bounded buffers, cut-off and close."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest
from consent_core import errors

from consent_sidecar.audit import (
    AuditAction,
    AuditLog,
    AuditRecord,
)

from .support import (
    WAIT,
    ev,
)

A = AuditAction


async def take(it: AsyncIterator[AuditRecord], n: int) -> list[int]:
    """The next n sequences from a watcher, bounded by WAIT."""

    async def go() -> list[int]:
        out: list[int] = []
        while len(out) < n:
            out.append((await anext(it)).sequence)
        return out

    return await asyncio.wait_for(go(), WAIT)


def append_in_thread(log: AuditLog, batches: int, per_batch: int) -> threading.Thread:
    def run() -> None:
        for i in range(batches):
            log.append([ev(detail=f"live {i}.{j}") for j in range(per_batch)])

    thread = threading.Thread(target=run)
    thread.start()
    return thread


async def test_backlog_then_live_without_gap_or_duplicate_at_the_seam(log: AuditLog) -> None:
    log.append([ev() for _ in range(1200)])  # more than two backlog chunks
    writer = append_in_thread(log, 100, 6)  # appends race with the backlog read and the switch to live
    watcher = log.watch(0)
    try:
        got = await take(watcher, 1800)
        assert got == list(range(1, 1801))
    finally:
        await watcher.aclose()
        await asyncio.to_thread(writer.join, WAIT)


async def test_watching_from_a_sequence_starts_after_it(log: AuditLog) -> None:
    log.append([ev() for _ in range(10)])
    watcher = log.watch(7)
    try:
        assert await take(watcher, 3) == [8, 9, 10]
        await asyncio.to_thread(log.append, [ev(), ev()])
        assert await take(watcher, 2) == [11, 12]
    finally:
        await watcher.aclose()


async def test_watching_an_empty_log_gets_only_live_events(log: AuditLog) -> None:
    live = asyncio.Event()
    watcher = log.watch(0, on_live=live.set)
    first = asyncio.ensure_future(anext(watcher))
    try:
        await asyncio.wait_for(live.wait(), WAIT)
        await asyncio.to_thread(log.append, [ev(detail="hello")])
        record = await asyncio.wait_for(first, WAIT)
        assert (record.sequence, record.detail) == (1, "hello")
    finally:
        await watcher.aclose()


async def test_several_watchers_each_get_their_exact_range(log: AuditLog) -> None:
    log.append([ev() for _ in range(600)])
    starts = [0, 1, 300, 599, 600, 650]
    watchers = [log.watch(s) for s in starts]
    writer = append_in_thread(log, 50, 6)  # up to 900
    try:
        results = await asyncio.gather(*(take(w, 900 - s) for w, s in zip(watchers, starts, strict=True)))
        for s, got in zip(starts, results, strict=True):
            assert got == list(range(s + 1, 901))
        assert log.watchers == len(starts)
    finally:
        for w in watchers:
            await w.aclose()
        await asyncio.to_thread(writer.join, WAIT)
    assert log.watchers == 0


async def test_a_slow_watcher_is_cut_off_while_a_fast_one_continues(log: AuditLog) -> None:
    slow_live, fast_live = asyncio.Event(), asyncio.Event()
    slow = log.watch(0, buffer=2, on_live=slow_live.set)
    fast = log.watch(0, on_live=fast_live.set)
    slow_next = asyncio.ensure_future(anext(slow))
    fast_first = asyncio.ensure_future(take(fast, 10))
    try:
        await asyncio.wait_for(asyncio.gather(slow_live.wait(), fast_live.wait()), WAIT)
        # The slow consumer reads nothing more while 10 events arrive (one batch: it fits an empty
        # queue), then one more: it is behind, and the next batch takes it past its buffer of 2.
        await asyncio.to_thread(log.append, [ev() for _ in range(10)])
        assert await asyncio.wait_for(fast_first, WAIT) == list(range(1, 11))
        await asyncio.to_thread(log.append, [ev()])
        assert await take(fast, 1) == [11]

        async def drain() -> list[int]:
            out = [(await slow_next).sequence]
            async for r in slow:
                out.append(r.sequence)
            return out

        with pytest.raises(errors.ResourceExhausted, match=r"more than 2 events waiting; .*after_sequence=\d+"):
            await asyncio.wait_for(drain(), WAIT)
        # The appender was never blocked and the fast watcher keeps going.
        await asyncio.to_thread(log.append, [ev() for _ in range(5)])
        assert await take(fast, 5) == list(range(12, 17))
        assert log.watchers == 1
    finally:
        slow_next.cancel()
        await fast.aclose()
        await slow.aclose()


async def test_the_cut_off_message_lets_the_slow_watcher_resume_without_loss(log: AuditLog) -> None:
    live = asyncio.Event()
    slow = log.watch(0, buffer=1, on_live=live.set)
    first = asyncio.ensure_future(anext(slow))
    await asyncio.wait_for(live.wait(), WAIT)
    await asyncio.to_thread(log.append, [ev() for _ in range(4)])
    await asyncio.to_thread(log.append, [ev()])  # while 4 wait: past the buffer of 1
    seen: list[int] = []
    try:
        seen.append((await asyncio.wait_for(first, WAIT)).sequence)
        while True:
            seen.append((await asyncio.wait_for(anext(slow), WAIT)).sequence)
    except errors.ResourceExhausted as exc:
        resume = int(str(exc).rsplit("after_sequence=", 1)[1].split()[0])
    except StopAsyncIteration:
        pytest.fail("watcher ended instead of being cut off")
    assert resume == (seen[-1] if seen else 0)
    again = log.watch(resume)
    try:
        assert seen + await take(again, 5 - len(seen)) == [1, 2, 3, 4, 5]
    finally:
        await again.aclose()


async def test_one_large_batch_never_cuts_off_a_watcher_that_keeps_up(log: AuditLog) -> None:
    # A 20,000-destination create is one append of 20,002 events: a watcher reading along must get
    # all of it, whatever its buffer; the records are shared by every watcher, not copied.
    live = asyncio.Event()
    watcher = log.watch(0, buffer=16, on_live=live.set)
    first = asyncio.ensure_future(anext(watcher))
    try:
        await asyncio.wait_for(live.wait(), WAIT)
        await asyncio.to_thread(log.append, [ev(A.MAPPING_CREATED, category_id="C1", destination=f"d{i}")
                                             for i in range(5000)])  # fmt: skip
        assert (await asyncio.wait_for(first, WAIT)).sequence == 1
        assert await take(watcher, 4999) == list(range(2, 5001))
        await asyncio.to_thread(log.append, [ev()])
        assert await take(watcher, 1) == [5001]
    finally:
        first.cancel()
        await watcher.aclose()


async def test_a_watcher_catching_up_holds_one_bounded_page_at_a_time(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from consent_sidecar.audit.sqlite import WATCH_CHUNK, WATCH_CHUNK_BYTES

    log.append([ev(A.CATEGORY_UPDATED, detail=f"{i} " + "z" * 5_000) for i in range(400)])  # 2 MB of backlog
    pages: list[tuple[int, int]] = []
    real_select = log._select

    def select(*args: object) -> object:
        records, more = real_select(*args)  # type: ignore[arg-type]
        pages.append((len(records), sum(len(r.detail) for r in records)))
        return records, more

    monkeypatch.setattr(log, "_select", select)
    watcher = log.watch(0)
    try:
        assert await take(watcher, 400) == list(range(1, 401))
    finally:
        await watcher.aclose()
    assert len(pages) > 1
    assert all(n <= WATCH_CHUNK and size <= WATCH_CHUNK_BYTES for n, size in pages), pages


async def test_close_ends_every_watcher_cleanly(log: AuditLog) -> None:
    log.append([ev(), ev()])
    live = [asyncio.Event(), asyncio.Event()]
    watchers = [log.watch(0, on_live=live[0].set), log.watch(2, on_live=live[1].set)]
    assert await take(watchers[0], 2) == [1, 2]
    pending = [asyncio.ensure_future(anext(w)) for w in watchers]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in live)), WAIT)
    await asyncio.to_thread(log.close)  # from another thread, as a server's shutdown may
    for task in pending:
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(task, WAIT)
    assert log.watchers == 0
    late = log.watch(0)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(late), WAIT)


async def test_close_during_backlog_ends_the_watcher(log: AuditLog) -> None:
    log.append([ev() for _ in range(1000)])
    watcher = log.watch(0)
    assert await take(watcher, 1) == [1]
    await asyncio.to_thread(log.close)

    async def rest() -> int:
        return len([r async for r in watcher])

    assert await asyncio.wait_for(rest(), WAIT) < 1000


async def test_a_watcher_left_early_is_deregistered(log: AuditLog) -> None:
    log.append([ev(), ev()])
    watcher = log.watch(0)
    assert await take(watcher, 1) == [1]
    assert log.watchers == 1
    await watcher.aclose()
    assert log.watchers == 0
    log.append([ev()])  # nothing to deliver to, nothing breaks


async def test_watch_rejects_a_negative_sequence(log: AuditLog) -> None:
    with pytest.raises(errors.InvalidArgument, match="after_sequence"):
        await anext(log.watch(-1))


def test_a_watcher_on_another_threads_loop_receives_appends(log: AuditLog) -> None:
    log.append([ev()])
    result: list[int] = []

    async def watch_elsewhere() -> None:
        watcher = log.watch(0)
        try:
            result.extend(await take(watcher, 4))
        finally:
            await watcher.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(watch_elsewhere()))
    thread.start()
    for _ in range(3):
        log.append([ev()])
    thread.join(WAIT)
    assert not thread.is_alive()
    assert result == [1, 2, 3, 4]


class RecordingPacer:
    """A pacer that lets everything through at once and remembers what it was asked."""

    def __init__(self) -> None:
        self.acquired: list[int] = []
        self.refunded: list[int] = []

    async def acquire(self, events: int) -> None:
        self.acquired.append(events)

    def refund(self, events: int) -> None:
        self.refunded.append(events)


async def test_a_pacer_is_asked_for_each_page_of_history_and_never_for_live_events(log: AuditLog) -> None:
    log.append([ev() for _ in range(250)])
    pacer = RecordingPacer()
    live = asyncio.Event()
    watcher = log.watch(20, on_live=live.set, pace=pacer)
    try:
        assert await take(watcher, 230) == list(range(21, 251))
        nxt = asyncio.ensure_future(anext(watcher))  # the watcher goes live on its way to the next event
        await asyncio.wait_for(live.wait(), WAIT)
        # Pages of up to 100 events, sized up to the head before each read: the history, exactly.
        assert pacer.acquired == [100, 100, 30]
        assert sum(pacer.acquired) - sum(pacer.refunded) == 230
        asked = list(pacer.acquired)
        for i in range(5):
            log.append([ev(detail=f"live {i}") for _ in range(40)])
        assert (await asyncio.wait_for(nxt, WAIT)).sequence == 251
        assert await take(watcher, 199) == list(range(252, 451))
        assert pacer.acquired == asked  # live events went out unpaced
    finally:
        await watcher.aclose()


async def test_a_watcher_from_the_head_is_never_paced(log: AuditLog) -> None:
    log.append([ev() for _ in range(10)])
    pacer = RecordingPacer()
    live = asyncio.Event()
    watcher = log.watch(10, on_live=live.set, pace=pacer)
    try:
        nxt = asyncio.ensure_future(anext(watcher))
        await asyncio.wait_for(live.wait(), WAIT)
        log.append([ev()])
        assert (await asyncio.wait_for(nxt, WAIT)).sequence == 11
        assert pacer.acquired == []
    finally:
        await watcher.aclose()
