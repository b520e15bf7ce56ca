"""Open WatchAuditEvents streams answer to the principals file: revoked ones end, each principal has a cap."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import grpc
import grpc.aio
from consent.v1 import admin_pb2
from serving import OWNER, WAIT, Served, bearer, principals_yaml, serving, until

from consent_sidecar.services.admin import MAX_WATCH_STREAMS_PER_PRINCIPAL

Stream = grpc.aio.UnaryStreamCall[admin_pb2.WatchAuditEventsRequest, admin_pb2.AuditEvent]


def watch(sc: Served, pid: str) -> Stream:
    call: Stream = sc.admin.WatchAuditEvents(admin_pb2.WatchAuditEventsRequest(), metadata=bearer(pid), timeout=60)
    return call


async def next_event(call: Stream) -> admin_pb2.AuditEvent:
    event = await asyncio.wait_for(call.read(), WAIT)
    assert event is not grpc.aio.EOF
    assert isinstance(event, admin_pb2.AuditEvent)
    return event


def rename_save(path: Path, text: str) -> None:
    """How an editor saves: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_a_removed_principals_open_stream_ends_unauthenticated_at_the_reload(tmp_path: Path) -> None:
    async with serving(tmp_path, principals=principals_yaml(alice="owner", bob="member", carol="member")) as sc:
        bob, carol = watch(sc, "bob"), watch(sc, "carol")
        assert (await next_event(bob)).sequence == (await next_event(carol)).sequence == 1
        await asyncio.to_thread(rename_save, sc.principals, principals_yaml(alice="owner", carol="member"))
        with contextlib.suppress(grpc.aio.AioRpcError):
            await asyncio.wait_for(bob.read(), WAIT)
        assert await bob.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "principal 'bob' was removed from the principals file, or its token revoked" in (await bob.details())
        # The others' streams go on: carol sees the next change.
        await sc.admin.CreateCategory(
            admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(id="C9", name="N", destinations=["n"])),
            metadata=OWNER, timeout=10,
        )  # fmt: skip
        assert (await next_event(carol)).action == admin_pb2.AUDIT_ACTION_CATEGORY_CREATED
        carol.cancel()


async def test_a_demoted_owner_may_still_watch(tmp_path: Path) -> None:
    async with serving(tmp_path) as sc:
        alice = watch(sc, "alice")
        assert (await next_event(alice)).sequence == 1
        await asyncio.to_thread(rename_save, sc.principals, principals_yaml(alice="member", bob="owner"))

        async def demoted() -> bool:
            try:
                await sc.admin.CreateCategory(admin_pb2.CreateCategoryRequest(), metadata=OWNER, timeout=5)
            except grpc.aio.AioRpcError as e:
                return e.code() == grpc.StatusCode.PERMISSION_DENIED
            return False

        await until("alice demoted", demoted)
        assert (await next_event(alice)).action == admin_pb2.AUDIT_ACTION_PERMISSION_DENIED  # her own refusal
        alice.cancel()


async def test_each_principal_holds_at_most_16_streams(tmp_path: Path) -> None:
    async with serving(tmp_path) as sc:
        streams = [watch(sc, "bob") for _ in range(MAX_WATCH_STREAMS_PER_PRINCIPAL)]
        for call in streams:
            assert (await next_event(call)).sequence == 1
        extra = watch(sc, "bob")
        with contextlib.suppress(grpc.aio.AioRpcError):
            await asyncio.wait_for(extra.read(), WAIT)
        assert await extra.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await extra.details()) == (
            "principal 'bob' already has 16 WatchAuditEvents streams open, the most allowed per principal; "
            "close one first"
        )
        alice = watch(sc, "alice")  # the cap is per principal
        assert (await next_event(alice)).sequence == 1
        streams.pop().cancel()

        async def reopened() -> Stream | None:
            call = watch(sc, "bob")
            try:
                await asyncio.wait_for(call.read(), WAIT)
                return call
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return None

        streams.append(await until("a stream freed by a cancel", reopened))
        for call in [*streams, alice]:
            call.cancel()
