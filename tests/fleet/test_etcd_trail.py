"""The fleet's audit trail in etcd: the SQLite trail's contract (chain, paging, watching, verify), second adapter."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from consent_core import errors
from etcd_cluster import EtcdCluster

from consent_sidecar.audit import AuditAction, NewEvent, event_hash
from consent_sidecar.audit.etcd import CHUNK_BYTES, EtcdTrail, decode_chunk
from consent_sidecar.etcd.keys import Keys
from tests.audit.test_watchers import RecordingPacer

from .conftest import etcd_client, settings

A = AuditAction


def denied(i: int, actor: str = "bob") -> NewEvent:
    return NewEvent(actor, A.PERMISSION_DENIED, detail=f"CreateCategory #{i}")


async def test_appends_from_many_sidecars_extend_one_gapless_chain(etcd_cluster: EtcdCluster, prefix: str) -> None:
    etcd = settings(etcd_cluster, prefix)
    async with etcd_client(etcd) as (_, one), etcd_client(etcd) as (_, two):
        await asyncio.gather(*((one if i % 2 else two).append_async([denied(i)]) for i in range(20)))
        records, token = await one.page_async(page_size=1000)
        assert token == ""
        assert [r.sequence for r in records] == list(range(1, 21))
        assert records[0].prev_hash == "0" * 64
        assert all(r.prev_hash == p.hash for p, r in itertools.pairwise(records))
        assert all(event_hash(r.canonical_bytes()) == r.hash for r in records)
        assert sorted(r.detail for r in records) == sorted(f"CreateCategory #{i}" for i in range(20))
        result = await two.verify_async()
        assert result.ok and result.count == 20 and result.last_hash == records[-1].hash


async def test_a_change_of_many_destinations_is_stored_in_a_few_chunks(etcd_cluster: EtcdCluster, prefix: str) -> None:
    etcd = settings(etcd_cluster, prefix)
    events = [NewEvent("alice", A.MAPPING_CREATED, category_id="C0002", destination=f"dest-{i:05d}" + "x" * 200)
              for i in range(2000)]  # fmt: skip
    async with etcd_client(etcd) as (client, trail):
        await trail.append_async(events)
        kvs, _, _ = await client.range(trail.keys.events, trail.keys.events_end)
        assert 1 < len(kvs) < 10  # one key per event would exceed etcd's 128 operations per transaction
        assert all(len(kv.value) <= CHUNK_BYTES + 1024 for kv in kvs)
        assert [r.sequence for kv in kvs for r in decode_chunk(kv.value)] == list(range(1, 2001))
        page, _ = await trail.page_async(after_sequence=1500, page_size=10)
        assert [r.sequence for r in page] == list(range(1501, 1511))


async def test_pages_filter_and_tokens_resume_exactly_as_the_sqlite_trail_does(
    etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    async with etcd_client(etcd) as (_, trail):
        for i in range(30):
            await trail.append_async([
                NewEvent("alice", A.CATEGORY_UPDATED, category_id=f"C{i % 3}"), denied(i),
            ])  # fmt: skip
        first, token = await trail.page_async(page_size=4, category_id="C1")
        assert [r.category_id for r in first] == ["C1"] * 4 and token
        rest, last = await trail.page_async(page_size=100, category_id="C1", page_token=token)
        assert len(first) + len(rest) == 10 and last == ""
        assert rest[0].sequence > first[-1].sequence
        only, _ = await trail.page_async(action=int(A.PERMISSION_DENIED), after_sequence=50, page_size=100)
        assert all(r.action == A.PERMISSION_DENIED and r.sequence > 50 for r in only) and len(only) == 5
        with pytest.raises(errors.InvalidArgument):
            await trail.page_async(page_size=1001)
        with pytest.raises(errors.InvalidArgument):
            await trail.page_async(page_token=token)  # issued for other filters


async def test_a_watch_streams_the_backlog_then_live_appends_without_gap_or_duplicate(
    etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    async with etcd_client(etcd) as (_, writer), etcd_client(etcd) as (_, reader):
        await writer.append_async([denied(i) for i in range(5)])
        live = asyncio.Event()
        seen: list[int] = []

        async def follow() -> None:
            async for r in reader.watch(2, on_live=live.set):
                seen.append(r.sequence)
                if r.sequence == 25:
                    return

        task = asyncio.create_task(follow())
        await asyncio.wait_for(live.wait(), 10)
        for i in range(20):
            await writer.append_async([denied(100 + i)])
        await asyncio.wait_for(task, 20)
        assert seen == list(range(3, 26))


async def test_a_watch_is_paced_for_its_history_only(etcd_cluster: EtcdCluster, prefix: str) -> None:
    etcd = settings(etcd_cluster, prefix)
    async with etcd_client(etcd) as (_, writer), etcd_client(etcd) as (_, reader):
        for b in range(5):
            await writer.append_async([denied(b * 50 + i) for i in range(50)])
        pacer = RecordingPacer()
        live = asyncio.Event()
        seen: list[int] = []

        async def follow() -> None:
            async for r in reader.watch(0, on_live=live.set, pace=pacer):
                seen.append(r.sequence)
                if r.sequence == 260:
                    return

        task = asyncio.create_task(follow())
        await asyncio.wait_for(live.wait(), 10)
        # Every history event was paid for, whatever the reader knew of the head beforehand.
        assert sum(pacer.acquired) - sum(pacer.refunded) == 250
        asked = list(pacer.acquired)
        await writer.append_async([denied(1000 + i) for i in range(10)])
        await asyncio.wait_for(task, 20)
        assert seen == list(range(1, 261))
        assert pacer.acquired == asked  # live events went out unpaced


async def test_a_slow_watcher_is_cut_off_not_buffered_for(etcd_cluster: EtcdCluster, prefix: str) -> None:
    etcd = settings(etcd_cluster, prefix)
    async with etcd_client(etcd) as (_, writer), etcd_client(etcd) as (_, reader):
        live = asyncio.Event()
        gen = reader.watch(0, buffer=3, on_live=live.set)
        first = asyncio.ensure_future(anext(gen))
        await asyncio.wait_for(live.wait(), 10)
        await writer.append_async([denied(0)])
        assert (await asyncio.wait_for(first, 10)).sequence == 1
        # A consumer already behind (2 unread) that a further delivery would take past its buffer of 3.
        await writer.append_async([denied(i) for i in range(2)])
        deadline = asyncio.get_running_loop().time() + 10
        while reader._followed < 3:  # the follower has handed those 2 over
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        await writer.append_async([denied(i) for i in range(5)])
        with pytest.raises(errors.ResourceExhausted):
            for _ in range(20):
                await asyncio.wait_for(anext(gen), 10)
        await gen.aclose()


async def test_verify_finds_an_altered_event_a_removed_chunk_and_a_cut_head(
    etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    keys = Keys(prefix)
    async with etcd_client(etcd) as (client, trail):
        for i in range(3):
            await trail.append_async([denied(i)])
        assert (await trail.verify_async()).ok
        kv, _ = await client.get(keys.event(2))
        assert kv is not None
        original = kv.value
        items = json.loads(original)
        items[0]["detail"] = "nothing to see"
        await client.put_value(keys.event(2), json.dumps(items).encode())
        result = await trail.verify_async()
        assert (result.ok, result.broken_sequence, result.kind) == (False, 2, "altered")
        await client.txn([], [client.put(keys.event(2), original)])
        assert (await trail.verify_async()).ok
        # The newest event cut off the end: the head still names it.
        from consent_sidecar.etcd.client import pb  # type: ignore[attr-defined]

        await client.txn([], [pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=keys.event(3)))])
        result = await trail.verify_async()
        assert (result.ok, result.kind) == (False, "removed")


async def test_the_blocking_interface_runs_from_worker_threads_as_the_sqlite_log_does(
    etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    async with etcd_client(etcd) as (_, trail):
        records = await asyncio.to_thread(trail.append, [denied(1)])
        assert [r.sequence for r in records] == [1]
        page, _ = await asyncio.to_thread(trail.page, page_size=10)
        assert page == records
        head = trail.head  # an attribute read, never blocking: the head this process has seen
        assert head is not None and (head.sequence, head.hash) == (1, records[0].hash)
        with pytest.raises(RuntimeError):
            trail.page()  # on the loop itself it would deadlock: refused


def test_a_trail_needs_its_loop(etcd_cluster: EtcdCluster) -> None:
    with pytest.raises(RuntimeError):
        EtcdTrail(None, Keys("/x"))  # type: ignore[arg-type]
