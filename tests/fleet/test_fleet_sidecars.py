"""Sidecars sharing one policy in etcd: writes from any sidecar, served everywhere, one trail, fleet status."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from consent.v1 import admin_pb2, decision_pb2
from etcd_cluster import EtcdCluster
from samples import SAMPLE_MAPPING

from consent_sidecar.audit import AuditAction
from consent_sidecar.cli import run_cli

from .conftest import MEMBER, OWNER, WAIT, etcd_client, eventually, fleet, push, settings

A = AuditAction


def create(
    cid: str = "C0009", name: str = "Social", dests: tuple[str, ...] = ("facebook",)
) -> admin_pb2.CreateCategoryRequest:
    return admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(id=cid, name=name, destinations=list(dests)))


async def test_a_write_on_one_sidecar_is_served_by_every_sidecar_and_audited_once(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    await push(etcd)
    async with fleet(tmp_path, etcd, 3) as sidecars:
        before = await sidecars[0].digest()
        created = await sidecars[1].admin().CreateCategory(create(), metadata=OWNER, timeout=WAIT)
        assert created.id == "C0009"
        # Read-your-writes on the writing sidecar: it serves the new policy before the RPC returned.
        after = await sidecars[1].digest()
        assert after != before
        for s in sidecars:
            await eventually(lambda s=s: _serves(s, after), f"{s.config.member_id} serving the write")
        # One trail for the fleet: the same events through any sidecar, exactly once.
        pages = [
            await s.admin().ListAuditEvents(admin_pb2.ListAuditEventsRequest(), metadata=OWNER, timeout=WAIT)
            for s in sidecars
        ]
        assert all(list(p.events) == list(pages[0].events) for p in pages)
        actions = [(e.actor, e.action) for e in pages[0].events]
        assert actions.count(("alice", admin_pb2.AUDIT_ACTION_CATEGORY_CREATED)) == 1
        assert actions.count(("alice", admin_pb2.AUDIT_ACTION_MAPPING_CREATED)) == 1
        mine = [e for e in pages[0].events if e.actor == "alice"]
        reloaded = [e for e in mine if e.action == admin_pb2.AUDIT_ACTION_POLICY_RELOADED]
        assert len(reloaded) == 1 and f"digest {after}" in reloaded[0].detail
        # No sidecar start is in the shared trail.
        assert all(e.actor != "system" for e in pages[0].events)


async def _serves(sidecar: object, digest: str) -> bool:
    return await sidecar.digest() == digest  # type: ignore[attr-defined, no-any-return]


async def test_the_document_in_etcd_keeps_the_comments_an_edit_did_not_touch(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    await push(etcd, "# owned by the privacy team\n" + SAMPLE_MAPPING)
    async with fleet(tmp_path, etcd, 1) as (s,):
        await s.admin().CreateCategory(create(), metadata=OWNER, timeout=WAIT)
    async with etcd_client(etcd) as (client, _):
        kv, _ = await client.get(f"{prefix}/mapping".encode())
    assert kv is not None
    text = kv.value.decode()
    assert text.startswith("# owned by the privacy team\n") and "C0009" in text


async def test_status_reports_the_etcd_store_and_fleet_status_lists_every_member(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    revision = await push(etcd)
    async with fleet(tmp_path, etcd, 2) as sidecars:
        status = await sidecars[0].status()
        assert (status.store, status.store_connected, status.store_revision) == ("etcd", True, revision)
        assert not status.HasField("disconnected_since")
        assert status.source == f"etcd:{prefix}/mapping"
        async with etcd_client(etcd) as (_, trail):
            head = await trail.read_head()
        assert (status.audit_head_sequence, status.audit_head_hash) == (head.sequence, head.hash)  # the fleet's

        async def members() -> admin_pb2.FleetStatus | None:
            fs = await sidecars[1].admin().GetFleetStatus(admin_pb2.GetFleetStatusRequest(), metadata=MEMBER, timeout=5)
            ok = len(fs.members) == 2 and all(m.policy.digest == fs.store_digest for m in fs.members)
            return fs if ok else None

        fs = await eventually(members, "both members in fleet status")
        assert fs.store_revision == revision
        assert {m.member_id for m in fs.members} == {"s0", "s1"}
        assert {m.address for m in fs.members} == {s.address for s in sidecars}
        assert all(m.connected and m.store_revision == revision for m in fs.members)


async def test_a_member_is_refused_writes_and_the_refusal_is_in_the_shared_trail(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    await push(etcd)
    async with fleet(tmp_path, etcd, 2) as sidecars:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await sidecars[0].admin().CreateCategory(create(), metadata=MEMBER, timeout=WAIT)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED

        async def denied() -> bool:
            page = await sidecars[1].admin().ListAuditEvents(
                admin_pb2.ListAuditEventsRequest(action=admin_pb2.AUDIT_ACTION_PERMISSION_DENIED), metadata=OWNER
            )
            return [e.actor for e in page.events] == ["bob"]

        await eventually(denied, "the refusal in the trail")


async def test_watch_audit_events_on_one_sidecar_streams_writes_made_on_another(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    await push(etcd)
    async with fleet(tmp_path, etcd, 2) as sidecars:
        stream = sidecars[0].admin().WatchAuditEvents(admin_pb2.WatchAuditEventsRequest(), metadata=OWNER)
        backlog = await asyncio.wait_for(stream.read(), WAIT)  # the push's events
        assert backlog.sequence == 1
        await sidecars[1].admin().CreateCategory(create(), metadata=OWNER, timeout=WAIT)
        seen = []
        while not any(e.action == admin_pb2.AUDIT_ACTION_CATEGORY_CREATED for e in seen):
            seen.append(await asyncio.wait_for(stream.read(), WAIT))
        sequences = [backlog.sequence, *(e.sequence for e in seen)]
        assert sequences == list(range(1, len(sequences) + 1))
        stream.cancel()


def test_store_push_pull_and_audit_verify_from_the_command_line(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "m.yaml"
    doc.write_text("# comments travel\n" + SAMPLE_MAPPING, encoding="utf-8")
    flags = ["--etcd-endpoints", ",".join(etcd_cluster.endpoints), "--etcd-prefix", prefix]
    assert run_cli(["store", "push", str(doc), "--actor", "ci", *flags]) == 0
    revision = int(capsys.readouterr().out.strip())
    out = tmp_path / "pulled.yaml"
    assert run_cli(["store", "pull", "-o", str(out), *flags]) == 0
    assert out.read_bytes() == doc.read_bytes()
    assert f"revision {revision}" in capsys.readouterr().err
    # A moved revision with --expect-revision: exit 1, nothing written.
    doc.write_text(SAMPLE_MAPPING.replace("Targeting Cookies", "Ads"), encoding="utf-8")
    assert run_cli(["store", "push", str(doc), "--expect-revision", str(revision - 1), *flags]) == 1
    assert run_cli(["store", "pull", *flags]) == 0
    assert capsys.readouterr().out.startswith("# comments travel\n")
    assert run_cli(["store", "push", str(doc), "--expect-revision", str(revision), *flags]) == 0
    assert int(capsys.readouterr().out) > revision
    # Invalid: the errors like `check`, exit 1, nothing written.
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ncategories:\n  - id: 1abc\n    name: x\n    destinations: [a]\n", encoding="utf-8")
    assert run_cli(["store", "push", str(bad), *flags]) == 1
    assert "categories[0].id" in capsys.readouterr().err
    assert run_cli(["audit", "verify", *flags]) == 0
    assert "chain intact" in capsys.readouterr().out
    assert run_cli(["audit", "verify", "--expect-head", f"1:{'0' * 64}", *flags]) == 1  # a head it does not hold
    assert "expected head" in capsys.readouterr().err


def test_audit_db_with_etcd_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["serve", "--etcd-endpoints", "http://127.0.0.1:1", "--audit-db", str(tmp_path / "a.db")])
    assert code == 2
    assert "--audit-db" in capsys.readouterr().err


async def test_decisions_read_one_snapshot_while_the_fleet_converges(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    await push(etcd)
    async with fleet(tmp_path, etcd, 1, admin=True) as (s,):
        response = await s.decision().Decide(
            decision_pb2.DecideRequest(consent=decision_pb2.Consent(category_preferences={"C0002": True}),
                                       destinations=["amplitude", "google-ads"]), timeout=WAIT)  # fmt: skip
        assert list(response.allowed) == ["amplitude"] and list(response.blocked) == ["google-ads"]


async def test_a_stopped_sidecar_leaves_fleet_status_and_metrics_show_the_store(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    import urllib.request

    from etcd_cluster import free_port

    from .conftest import start_fleet_sidecar

    etcd = settings(etcd_cluster, prefix)
    await push(etcd)
    metrics = f"127.0.0.1:{free_port()}"
    s0 = await start_fleet_sidecar(tmp_path / "a", etcd, name="a", metrics_listen=metrics)
    s1 = await start_fleet_sidecar(tmp_path / "b", etcd, name="b")
    try:
        async def members(n: int) -> bool:
            fs = await s0.admin().GetFleetStatus(admin_pb2.GetFleetStatusRequest(), metadata=OWNER, timeout=5)
            return len(fs.members) == n

        await eventually(lambda: members(2), "two members")
        assert await s1.close() == 0
        await eventually(lambda: members(1), "the stopped sidecar gone from fleet status")

        def scrape() -> str:
            with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as page:
                return str(page.read().decode())

        async def exported() -> str | None:
            text = await asyncio.to_thread(scrape)
            ok = "consent_sidecar_store_connected 1.0" in text and "consent_sidecar_store_revision_lag 0.0" in text
            return text if ok else None

        text = await eventually(exported, "the store metrics")
        assert "consent_sidecar_store_apply_seconds_count 1.0" in text
    finally:
        await s0.close()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--etcd-endpoints", "ftp://127.0.0.1:2379"], "not an etcd client URL"),
        (["--etcd-endpoints", "http://127.0.0.1:2379", "--etcd-prefix", "no-slash"], "--etcd-prefix"),
        (["--etcd-endpoints", "http://127.0.0.1:2379", "--etcd-cert", "c.pem"], "--etcd-cert and --etcd-key"),
        (["--etcd-endpoints", "http://127.0.0.1:2379", "--etcd-user", "u"], "CONSENT_SIDECAR_ETCD_PASSWORD"),
        (["--member-id", "m1", "--mappings", "m.yaml"], "--member-id: only with --etcd-endpoints"),
        ([], "--mappings (or CONSENT_SIDECAR_MAPPINGS)"),
    ],
)
def test_unusable_fleet_flags_are_usage_errors_before_anything_starts(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["serve", *flags], environ={}) == 2
    assert message in capsys.readouterr().err


def test_the_etcd_flags_read_their_variables_and_the_password_only_from_the_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from consent_sidecar.cli import flag_reference

    flags = {f.flag for f in flag_reference() if f.verb == "store push"}
    assert {"--etcd-endpoints", "--etcd-prefix", "--etcd-ca", "--etcd-cert", "--etcd-key", "--etcd-user"} <= flags
    assert not any("password" in f for f in flags)
    env = {"CONSENT_SIDECAR_ETCD_ENDPOINTS": "gopher://x", "CONSENT_SIDECAR_ETCD_PREFIX": "/p"}
    assert run_cli(["store", "pull"], environ=env) == 2
    assert "gopher://x" in capsys.readouterr().err


async def test_the_cache_file_follows_every_applied_revision_byte_for_byte_mode_0600(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    await push(etcd, "# cached as written\n" + SAMPLE_MAPPING)
    async with fleet(tmp_path, etcd, 2) as sidecars:
        await sidecars[0].admin().CreateCategory(create(), metadata=OWNER, timeout=WAIT)
        async with etcd_client(etcd) as (client, _):
            kv, _ = await client.get(f"{prefix}/mapping".encode())
        assert kv is not None
        for s in sidecars:
            cache = Path(s.config.mappings)

            async def cached(cache: Path = cache) -> bool:
                return cache.exists() and cache.read_bytes() == kv.value

            await eventually(cached, f"{cache.name} holding the newest document")
            assert cache.stat().st_mode & 0o777 == 0o600
