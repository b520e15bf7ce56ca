"""AdminService reads over real gRPC: categories, policy status, audit paging and watching, and where it is served."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc
from consent_core.model import Category, category_etag
from grpc_health.v1 import health_pb2, health_pb2_grpc

from consent_sidecar.audit import GENESIS_HASH, AuditAction, AuditLog, NewEvent, verify

if TYPE_CHECKING:
    from conftest import RunningSidecar, StartSidecar

ADMIN = "consent.v1.AdminService"
DECISION = "consent.v1.DecisionService"
KNOWN = ["amplitude", "aws-s3", "braze", "google-ads", "hotjar", "mixpanel"]
P = admin_pb2.AuditAction
WAIT = 30.0  # upper bound of every wait here, in seconds


def stub(channel: grpc.aio.Channel | None) -> admin_pb2_grpc.AdminServiceStub:
    assert channel is not None
    return admin_pb2_grpc.AdminServiceStub(channel)


@pytest.fixture
async def sc(start_sidecar: StartSidecar) -> AsyncIterator[RunningSidecar]:
    async with start_sidecar(admin=True) as running:
        yield running


def audit_of(sc: RunningSidecar) -> AuditLog:
    assert sc.audit is not None
    return sc.audit


async def append(sc: RunningSidecar, *events: NewEvent) -> None:
    await asyncio.to_thread(audit_of(sc).append, list(events))


def ev(i: int, category: str = "", action: AuditAction = AuditAction.CATEGORY_UPDATED) -> NewEvent:
    return NewEvent("alice", action, category_id=category, detail=f"event {i}")


async def eventually(check: object, what: str, timeout: float = WAIT) -> None:
    """Polls `check()` until true; fails naming `what` at the deadline (a poll, not a sleep-as-sync)."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


# -- categories -----------------------------------------------------------------------------


async def test_list_categories_in_file_order_with_etags_and_the_policy_version(sc: RunningSidecar) -> None:
    r = await stub(sc.admin).ListCategories(admin_pb2.ListCategoriesRequest(), timeout=5)
    assert [c.id for c in r.categories] == ["C0002", "C0004", "C0003"]
    shadow = r.categories[2]
    assert (shadow.name, list(shadow.destinations), shadow.shadow) == (
        "Functional Cookies", ["amplitude", "hotjar"], True)
    assert all(c.HasField("enabled") and c.enabled for c in r.categories)
    for c in r.categories:
        model = sc.store.current.index.mapping.category(c.id)
        assert model is not None and c.etag == category_etag(model)
    assert (r.policy.generation, r.policy.digest) == (1, sc.store.current.digest)


async def test_get_category(sc: RunningSidecar) -> None:
    c = await stub(sc.admin).GetCategory(admin_pb2.GetCategoryRequest(category_id="C0004"), timeout=5)
    assert (c.id, c.name, list(c.destinations), c.enabled, c.shadow) == (
        "C0004", "Targeting Cookies", ["google-ads", "braze"], True, False)
    assert len(c.etag) == 16


async def test_get_category_not_found_names_the_id(sc: RunningSidecar) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(sc.admin).GetCategory(admin_pb2.GetCategoryRequest(category_id="c0004"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'c0004'" in (info.value.details() or "")  # ids are case-sensitive


async def test_get_category_needs_an_id(sc: RunningSidecar) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(sc.admin).GetCategory(admin_pb2.GetCategoryRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("category_id:")


def test_the_etag_is_stable_and_follows_only_its_own_category() -> None:
    c = Category("C0004", "Targeting Cookies", ("google-ads", "braze"))
    assert category_etag(c) == category_etag(Category("C0004", "Targeting Cookies", ("google-ads", "braze")))
    assert re.fullmatch(r"[0-9a-f]{16}", category_etag(c))  # hex, 64 bits
    variants = [
        Category("C0004", "Ads", ("google-ads", "braze")),
        Category("C0004", "Targeting Cookies", ("braze", "google-ads")),
        Category("C0004", "Targeting Cookies", ("google-ads", "braze"), enabled=False),
        Category("C0004", "Targeting Cookies", ("google-ads", "braze"), shadow=True),
        Category("C0005", "Targeting Cookies", ("google-ads", "braze")),
    ]
    assert len({category_etag(v) for v in [c, *variants]}) == 6


async def test_an_edit_of_one_category_leaves_the_others_etags_alone(sc: RunningSidecar) -> None:
    assert sc.writer is not None
    before = {c.id: c.etag for c in (await stub(sc.admin).ListCategories(admin_pb2.ListCategoriesRequest())).categories}
    sc.mapping_path.write_text(sc.mapping_path.read_text().replace("Targeting Cookies", "Advertising"))
    await sc.writer.reload(sc.writer.file_actor)
    after = {c.id: c.etag for c in (await stub(sc.admin).ListCategories(admin_pb2.ListCategoriesRequest())).categories}
    assert after["C0002"] == before["C0002"] and after["C0003"] == before["C0003"]
    assert after["C0004"] != before["C0004"]


@pytest.mark.parametrize(
    ("rpc", "request_"),
    [
        ("CreateCategory", admin_pb2.CreateCategoryRequest()),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest()),
        ("DisableCategory", admin_pb2.DisableCategoryRequest()),
        ("EnableCategory", admin_pb2.EnableCategoryRequest()),
        ("DeleteCategory", admin_pb2.DeleteCategoryRequest()),
    ],
)
async def test_write_rpcs_are_refused_on_a_listener_without_authentication(
    sc: RunningSidecar, rpc: str, request_: object
) -> None:
    # These reads run without a gate; writes then need one (tests/services/test_admin_writes.py).
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(stub(sc.admin), rpc)(request_, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == f"{rpc}: admin writes need authentication (serve --principals)"


# -- policy status --------------------------------------------------------------------------


async def test_policy_status_of_a_fresh_sidecar(sc: RunningSidecar) -> None:
    s = await stub(sc.admin).GetPolicyStatus(admin_pb2.GetPolicyStatusRequest(), timeout=5)
    snap = sc.store.current
    assert (s.policy.generation, s.policy.digest) == (1, snap.digest)
    assert s.source == str(sc.mapping_path)
    assert abs(s.loaded_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=5)
    assert s.loaded_at.ToDatetime(tzinfo=UTC) == snap.loaded_at
    assert (s.reloads, s.failed_reloads, s.last_error, s.HasField("last_error_at")) == (0, 0, "", False)
    assert (s.categories, s.destinations) == (3, len(KNOWN))  # known destinations, incl. `destinations:` only
    assert (s.store, s.store_connected, s.store_revision, s.HasField("disconnected_since")) == ("file", True, 0, False)


async def test_fleet_status_of_a_file_backed_sidecar_is_a_failed_precondition(sc: RunningSidecar) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub(sc.admin).GetFleetStatus(admin_pb2.GetFleetStatusRequest(), timeout=5)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "the policy source is a file" in (e.value.details() or "")


async def test_policy_status_reports_a_rejected_reload_until_a_good_one(sc: RunningSidecar) -> None:
    assert sc.writer is not None
    good = sc.mapping_path.read_text()
    sc.mapping_path.write_text(good.replace("id: C0004", "id: 4C"))
    await sc.writer.reload(sc.writer.file_actor)
    s = await stub(sc.admin).GetPolicyStatus(admin_pb2.GetPolicyStatusRequest(), timeout=5)
    assert s.failed_reloads == 1 and s.policy.generation == 1
    assert f"{sc.mapping_path}:8:9: categories[1].id: must not start with a digit" in s.last_error
    assert s.HasField("last_error_at")
    sc.mapping_path.write_text(good.replace("[google-ads, braze]", "[google-ads, braze, tiktok]"))
    await sc.writer.reload(sc.writer.file_actor)
    s = await stub(sc.admin).GetPolicyStatus(admin_pb2.GetPolicyStatusRequest(), timeout=5)
    assert (s.reloads, s.failed_reloads, s.last_error, s.HasField("last_error_at")) == (1, 1, "", False)
    assert (s.policy.generation, s.destinations) == (2, len(KNOWN) + 1)


# -- ListAuditEvents ------------------------------------------------------------------------


async def test_the_trail_starts_with_policy_reloaded_by_system_from_64_zeros(sc: RunningSidecar) -> None:
    r = await stub(sc.admin).ListAuditEvents(admin_pb2.ListAuditEventsRequest(), timeout=5)
    [start] = r.events
    assert (start.sequence, start.actor, start.action) == (1, "system", P.AUDIT_ACTION_POLICY_RELOADED)
    assert start.prev_hash == GENESIS_HASH == "0" * 64 and len(start.hash) == 64
    assert sc.store.current.digest in start.detail
    assert r.next_page_token == ""


async def test_audit_events_carry_every_field(sc: RunningSidecar) -> None:
    await append(sc, NewEvent("alice", AuditAction.MAPPING_CREATED, category_id="C0004", destination="tiktok",
                              before_json='{"a":1}', after_json='{"a":2}', detail="d"))
    r = await stub(sc.admin).ListAuditEvents(admin_pb2.ListAuditEventsRequest(after_sequence=1), timeout=5)
    [e] = r.events
    stored = audit_of(sc).page(after_sequence=1)[0][0]
    assert (e.sequence, e.actor, e.action, e.category_id, e.destination, e.before_json, e.after_json, e.detail) == (
        2, "alice", P.AUDIT_ACTION_MAPPING_CREATED, "C0004", "tiktok", '{"a":1}', '{"a":2}', "d")
    assert (e.prev_hash, e.hash) == (stored.prev_hash, stored.hash)
    assert e.time.ToDatetime(tzinfo=UTC) == stored.time


async def list_all(sc: RunningSidecar, **filters: object) -> list[admin_pb2.AuditEvent]:
    """Every matching event, walking next_page_token (page_size 5)."""
    out: list[admin_pb2.AuditEvent] = []
    token = ""
    while True:
        r = await stub(sc.admin).ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(page_size=5, page_token=token, **filters), timeout=5)  # type: ignore[arg-type]
        out.extend(r.events)
        token = r.next_page_token
        if not token:
            return out


async def test_paging_with_tokens_neither_loses_nor_repeats_while_events_arrive(sc: RunningSidecar) -> None:
    batches = 60
    expected = 1 + 3 * batches

    async def appender() -> None:
        for i in range(batches):
            await append(sc, *(ev(i * 3 + k) for k in range(3)))

    task = asyncio.create_task(appender())
    seen: list[int] = []
    deadline = time.monotonic() + WAIT
    try:
        # A listing walks its tokens while events keep arriving; an empty token means "no more
        # right now", so when the appender is still going a new listing starts after the last seen.
        while not (task.done() and seen and seen[-1] == expected):
            assert time.monotonic() < deadline, "paging did not catch up with the appender"
            anchor, token = (seen[-1] if seen else 0), ""
            while True:
                r = await stub(sc.admin).ListAuditEvents(
                    admin_pb2.ListAuditEventsRequest(page_size=7, page_token=token, after_sequence=anchor), timeout=5)
                seen.extend(e.sequence for e in r.events)
                token = r.next_page_token
                if not token:
                    break
    finally:
        await asyncio.wait_for(task, WAIT)
    assert seen == list(range(1, expected + 1))


async def test_filters_by_category_action_and_sequence(sc: RunningSidecar) -> None:
    await append(sc, ev(1, "C0002"), ev(2, "C0004"), ev(3, "C0002", AuditAction.CATEGORY_DISABLED),
                 ev(4, "C0002"), ev(5))
    by_category = await list_all(sc, category_id="C0002")
    assert [e.sequence for e in by_category] == [2, 4, 5]
    by_action = await list_all(sc, action=P.AUDIT_ACTION_CATEGORY_UPDATED)
    assert [e.sequence for e in by_action] == [2, 3, 5, 6]
    both = await list_all(sc, category_id="C0002", action=P.AUDIT_ACTION_CATEGORY_UPDATED, after_sequence=2)
    assert [e.sequence for e in both] == [5]
    assert await list_all(sc, category_id="nope") == []
    huge = await list_all(sc, after_sequence=2**64 - 1)  # beyond any stored sequence: nothing, not an error
    assert huge == []


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (admin_pb2.ListAuditEventsRequest(page_size=1001), "page_size"),
        (admin_pb2.ListAuditEventsRequest(page_token="not-a-token"), "page_token"),
        (admin_pb2.ListAuditEventsRequest(action=99), "action"),  # type: ignore[arg-type]
    ],
)
async def test_bad_list_requests_name_the_field(sc: RunningSidecar, request_: object, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(sc.admin).ListAuditEvents(request_, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(f"{field}:")


async def test_a_token_is_only_good_for_its_own_filters(sc: RunningSidecar) -> None:
    await append(sc, *(ev(i, "C0002") for i in range(10)))
    r = await stub(sc.admin).ListAuditEvents(admin_pb2.ListAuditEventsRequest(page_size=3), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(sc.admin).ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(page_size=3, page_token=r.next_page_token, category_id="C0002"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- WatchAuditEvents -----------------------------------------------------------------------


async def read_n(call: grpc.aio.UnaryStreamCall, n: int) -> list[int]:  # type: ignore[type-arg]
    out = []
    for _ in range(n):
        e = await asyncio.wait_for(call.read(), WAIT)
        assert e is not grpc.aio.EOF
        out.append(e.sequence)
    return out


async def test_watchers_get_the_backlog_then_live_events_in_order(sc: RunningSidecar) -> None:
    await append(sc, *(ev(i) for i in range(5)))  # sequences 2..6
    calls = [
        stub(sc.admin).WatchAuditEvents(admin_pb2.WatchAuditEventsRequest(after_sequence=after), timeout=60)
        for after in (0, 0, 3, 6)
    ]
    try:
        assert await read_n(calls[0], 6) == [1, 2, 3, 4, 5, 6]
        assert await read_n(calls[1], 6) == [1, 2, 3, 4, 5, 6]
        assert await read_n(calls[2], 3) == [4, 5, 6]
        # Live from here on, for all of them (the last one has no backlog at all).
        await eventually(lambda: audit_of(sc).watchers == 4, "four live watchers")
        live = [ev(i) for i in range(20)]
        for e in live:
            await append(sc, e)
        for call in calls:
            assert await read_n(call, 20) == list(range(7, 27))
    finally:
        for call in calls:
            call.cancel()
    await eventually(lambda: audit_of(sc).watchers == 0, "cancelled watchers to be forgotten")


async def test_a_watcher_sees_reload_events_as_they_happen(sc: RunningSidecar) -> None:
    assert sc.writer is not None
    call = stub(sc.admin).WatchAuditEvents(admin_pb2.WatchAuditEventsRequest(after_sequence=1), timeout=60)
    try:
        await eventually(lambda: audit_of(sc).watchers == 1, "the watcher")
        sc.mapping_path.write_text(sc.mapping_path.read_text().replace("[amplitude, mixpanel]", "[amplitude]"))
        await sc.writer.reload(sc.writer.file_actor)
        got = [await asyncio.wait_for(call.read(), WAIT) for _ in range(3)]
        assert [(e.actor, e.action, e.destination) for e in got] == [
            ("file:mappings.yaml", P.AUDIT_ACTION_CATEGORY_UPDATED, ""),
            ("file:mappings.yaml", P.AUDIT_ACTION_MAPPING_REMOVED, "mixpanel"),
            ("file:mappings.yaml", P.AUDIT_ACTION_POLICY_RELOADED, ""),
        ]
    finally:
        call.cancel()


async def test_a_slow_watcher_is_cut_off_and_never_holds_up_appends_or_others(start_sidecar: StartSidecar) -> None:
    async with start_sidecar(admin=True, watch_buffer=4) as sc:
        # Without BDP probing the slow client's flow-control window stays at 64 KiB, so a few
        # large events fill it and the server-side buffer of 4 overflows quickly.
        slow_channel = grpc.aio.insecure_channel(sc.sidecar.admin_address or "", options=[("grpc.http2.bdp_probe", 0)])
        slow = stub(slow_channel).WatchAuditEvents(admin_pb2.WatchAuditEventsRequest(), timeout=60)
        fast = stub(sc.admin).WatchAuditEvents(admin_pb2.WatchAuditEventsRequest(), timeout=60)
        try:
            assert await read_n(slow, 1) == [1]
            assert await read_n(fast, 1) == [1]
            await eventually(lambda: audit_of(sc).watchers == 2, "both watchers live")
            big = "x" * 16_000
            appended = 0
            deadline = time.monotonic() + WAIT
            while audit_of(sc).watchers == 2:  # until the slow one is dropped
                assert time.monotonic() < deadline, "the slow watcher was never cut off"
                await append(sc, NewEvent("alice", AuditAction.CATEGORY_UPDATED, detail=big))
                appended += 1
                assert await read_n(fast, 1) == [appended + 1]  # the fast one keeps up, in order
            for _ in range(5):  # appends and the fast watcher go on after the cut
                await append(sc, NewEvent("alice", AuditAction.CATEGORY_UPDATED, detail="after"))
                appended += 1
                assert await read_n(fast, 1) == [appended + 1]
            # The slow client, reading at last, gets what was in flight, then the status.
            received = 1
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while True:
                    e = await asyncio.wait_for(slow.read(), WAIT)
                    assert e is not grpc.aio.EOF
                    received += 1
                    assert e.sequence == received
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"after_sequence={received}" in (info.value.details() or "")
        finally:
            slow.cancel()
            fast.cancel()
            await slow_channel.close()


async def test_watch_streams_end_cleanly_at_shutdown_without_waiting_for_the_grace_period(
    start_sidecar: StartSidecar,
) -> None:
    async with start_sidecar(admin=True) as sc:
        calls = [stub(sc.admin).WatchAuditEvents(admin_pb2.WatchAuditEventsRequest(), timeout=60) for _ in range(3)]
        for call in calls:
            assert await read_n(call, 1) == [1]
        await eventually(lambda: audit_of(sc).watchers == 3, "three live watchers")
        started = time.monotonic()
        await asyncio.wait_for(sc.sidecar.stop(30.0), WAIT)  # a long grace: streams must not use it up
        assert time.monotonic() - started < 10
        for call in calls:
            assert await asyncio.wait_for(call.read(), WAIT) is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK


async def test_a_closed_audit_log_ends_watchers_and_lists_are_unavailable(sc: RunningSidecar) -> None:
    call = stub(sc.admin).WatchAuditEvents(admin_pb2.WatchAuditEventsRequest(), timeout=60)
    assert await read_n(call, 1) == [1]
    await eventually(lambda: audit_of(sc).watchers == 1, "the watcher")
    audit_of(sc).close()
    assert await asyncio.wait_for(call.read(), WAIT) is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(sc.admin).ListAuditEvents(admin_pb2.ListAuditEventsRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_trail_verifies_after_reads_and_writes(sc: RunningSidecar) -> None:
    await append(sc, *(ev(i) for i in range(10)))
    assert verify(audit_of(sc).path).ok


# -- where it is served ---------------------------------------------------------------------


async def test_admin_service_only_on_the_admin_listener(sc: RunningSidecar) -> None:
    for ch in (sc.tcp, sc.unix):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub(ch).GetPolicyStatus(admin_pb2.GetPolicyStatusRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=DECISION), timeout=5)
        assert r.status == health_pb2.HealthCheckResponse.SERVING
    assert sc.admin is not None
    r = await health_pb2_grpc.HealthStub(sc.admin).Check(health_pb2.HealthCheckRequest(service=ADMIN), timeout=5)
    assert r.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await decision_pb2_grpc.DecisionServiceStub(sc.admin).Decide(decision_pb2.DecideRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_get_caller_without_principals_is_unauthenticated(sc: RunningSidecar) -> None:
    # A listener built without a gate (tests only: serve refuses --admin-listen without --principals).
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub(sc.admin).GetCaller(admin_pb2.GetCallerRequest(), timeout=5)
    assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
