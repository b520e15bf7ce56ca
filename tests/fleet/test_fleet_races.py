"""Concurrent writes and documents written around the sidecars: one commit per revision, nothing lost or doubled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from consent.v1 import admin_pb2
from etcd_cluster import EtcdCluster
from samples import SAMPLE_MAPPING

from consent_sidecar.etcd.keys import Keys

from .conftest import OWNER, WAIT, etcd_client, eventually, fleet, push, settings

pytestmark = pytest.mark.slow


async def _all_events(stub: object) -> list[admin_pb2.AuditEvent]:
    events: list[admin_pb2.AuditEvent] = []
    token = ""
    while True:
        page = await stub.ListAuditEvents(  # type: ignore[attr-defined]
            admin_pb2.ListAuditEventsRequest(page_size=1000, page_token=token), metadata=OWNER, timeout=WAIT
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


async def test_concurrent_updates_of_one_category_with_one_etag_commit_exactly_once(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    await push(etcd)
    async with fleet(tmp_path, etcd, 3) as sidecars:
        etag = (await sidecars[0].admin().GetCategory(admin_pb2.GetCategoryRequest(category_id="C0002"),
                                                      metadata=OWNER)).etag  # fmt: skip

        async def update(i: int) -> grpc.StatusCode:
            request = admin_pb2.UpdateCategoryRequest(
                category_id="C0002", category=admin_pb2.Category(name=f"Performance {i}"), etag=etag
            )
            request.update_mask.paths.append("name")
            try:
                await sidecars[i % 3].admin().UpdateCategory(request, metadata=OWNER, timeout=WAIT)
            except grpc.aio.AioRpcError as e:
                return e.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(update(i) for i in range(20)))
        assert codes.count(grpc.StatusCode.OK) == 1
        assert codes.count(grpc.StatusCode.ABORTED) == 19
        events = await _all_events(sidecars[0].admin())
        assert sum(e.action == admin_pb2.AUDIT_ACTION_CATEGORY_UPDATED for e in events) == 1


async def test_concurrent_updates_of_twenty_categories_all_land_with_their_events(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    cats = "".join(f"  - id: K{i:02d}\n    name: Cat {i}\n    destinations: [d{i}]\n" for i in range(20))
    await push(etcd, "version: 1\ncategories:\n" + cats)
    async with fleet(tmp_path, etcd, 3) as sidecars:

        async def update(i: int) -> None:
            request = admin_pb2.UpdateCategoryRequest(
                category_id=f"K{i:02d}", category=admin_pb2.Category(destinations=[f"d{i}", f"new{i}"])
            )
            request.update_mask.paths.append("destinations")
            await sidecars[i % 3].admin().UpdateCategory(request, metadata=OWNER, timeout=WAIT)

        await asyncio.gather(*(update(i) for i in range(20)))

        async def all_in_the_document() -> bool:
            listed = await sidecars[0].admin().ListCategories(admin_pb2.ListCategoriesRequest(), metadata=OWNER)
            return all(list(c.destinations) == [f"d{i}", f"new{i}"] for i, c in enumerate(listed.categories))

        await eventually(all_in_the_document, "every update in the served document")
        events = await _all_events(sidecars[1].admin())
        updated = [e.category_id for e in events if e.action == admin_pb2.AUDIT_ACTION_CATEGORY_UPDATED]
        assert sorted(updated) == [f"K{i:02d}" for i in range(20)]
        mine = [e for e in events if e.actor == "alice"]
        mapped = [e.destination for e in mine if e.action == admin_pb2.AUDIT_ACTION_MAPPING_CREATED]
        assert sorted(mapped) == sorted(f"new{i}" for i in range(20))
        assert sum(e.action == admin_pb2.AUDIT_ACTION_POLICY_RELOADED and e.actor == "alice" for e in events) == 20
    async with etcd_client(etcd) as (_, trail):
        result = await trail.verify_async()
    assert result.ok, result


async def test_a_document_put_around_the_sidecars_is_served_and_audited_once(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    await push(etcd)
    async with fleet(tmp_path, etcd, 3) as sidecars:
        async with etcd_client(etcd) as (client, _):
            revision = await client.put_value(Keys(prefix).mapping,
                                              SAMPLE_MAPPING.replace("mixpanel", "segment").encode())  # fmt: skip

        async def everywhere() -> bool:
            statuses = [await s.status() for s in sidecars]
            return all(st.store_revision == revision for st in statuses)

        await eventually(everywhere, "every sidecar on the raw put's revision")
        digests = {await s.digest() for s in sidecars}
        assert len(digests) == 1
        events = await _all_events(sidecars[0].admin())
        raw = [e for e in events if e.actor == "etcd:unattributed"]
        assert sorted((e.action, e.destination) for e in raw if e.destination) == [
            (admin_pb2.AUDIT_ACTION_MAPPING_CREATED, "segment"), (admin_pb2.AUDIT_ACTION_MAPPING_REMOVED, "mixpanel")
        ]
        reloaded = [e for e in raw if e.action == admin_pb2.AUDIT_ACTION_POLICY_RELOADED]
        assert len(reloaded) == 1 and f"revision {revision}" in reloaded[0].detail


async def test_an_invalid_document_put_around_the_sidecars_is_never_served_and_fails_writes(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    await push(etcd)
    async with fleet(tmp_path, etcd, 3) as sidecars:
        good = await sidecars[0].digest()
        async with etcd_client(etcd) as (client, _):
            revision = await client.put_value(Keys(prefix).mapping, b"version: 1\ncategories: [oops\n")

        async def rejected_everywhere() -> bool:
            statuses = [await s.status() for s in sidecars]
            return all(f"revision {revision}" in st.last_error for st in statuses)

        await eventually(rejected_everywhere, "every sidecar naming the rejected revision")
        assert {await s.digest() for s in sidecars} == {good}
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await sidecars[1].admin().CreateCategory(
                admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(id="C0009", name="S", destinations=["x"])),
                metadata=OWNER, timeout=WAIT,
            )
        assert e.value.code() == grpc.StatusCode.ABORTED
        events = await _all_events(sidecars[2].admin())
        failed = [e for e in events if e.action == admin_pb2.AUDIT_ACTION_POLICY_RELOAD_FAILED]
        assert len(failed) == 1 and f"revision {revision}" in failed[0].detail
        # Fixed by a push: served again, the failure cleared everywhere.
        fixed = await push(etcd, SAMPLE_MAPPING.replace("hotjar", "fullstory"))

        async def cleared() -> bool:
            statuses = [await s.status() for s in sidecars]
            return all(st.store_revision == fixed and not st.last_error for st in statuses)

        await eventually(cleared, "every sidecar serving the fix")
