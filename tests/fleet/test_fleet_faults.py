"""Faults against real etcd processes of the test's own: members killed, paused, all gone, absent at start.

Decisions never depend on etcd (the store is off the hot path); writes answer UNAVAILABLE and
change nothing while etcd cannot commit; every acknowledged write is in the document and in
the trail exactly once; a sidecar catches up when etcd returns.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from consent.v1 import admin_pb2, decision_pb2
from etcd_cluster import EtcdCluster
from grpc_health.v1 import health_pb2, health_pb2_grpc
from samples import SAMPLE_MAPPING

from consent_sidecar.etcd.keys import Keys

from .conftest import OWNER, WAIT, FleetSidecar, etcd_client, eventually, fleet, push, settings, start_fleet_sidecar

pytestmark = pytest.mark.slow


def create(cid: str) -> admin_pb2.CreateCategoryRequest:
    return admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(id=cid, name=f"Name {cid}", destinations=[cid]))


async def write_storm(sidecars: list[FleetSidecar], n: int, during: object) -> tuple[list[str], list[str]]:
    """`n` creates spread over the sidecars, 4 at a time, running `during()` once a quarter are done.

    Returns (acknowledged ids, failed ids)."""
    acked: list[str] = []
    failed: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    started = asyncio.Event()

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            if i == n // 4:
                started.set()
            cid = f"W{i:03d}"
            try:
                await sidecars[i % len(sidecars)].admin().CreateCategory(create(cid), metadata=OWNER, timeout=15)
                acked.append(cid)
            except grpc.aio.AioRpcError as e:
                assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED,
                                    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.DEADLINE_EXCEEDED), e  # fmt: skip
                failed.append(cid)

    async def fault() -> None:
        await started.wait()
        await during()  # type: ignore[operator]

    await asyncio.gather(*(worker() for _ in range(4)), fault())
    return acked, failed


async def decide_ok(sidecar: FleetSidecar) -> bool:
    response = await sidecar.decision().Decide(
        decision_pb2.DecideRequest(consent=decision_pb2.Consent(category_preferences={"C0002": True}),
                                   destinations=["amplitude"]), timeout=5)  # fmt: skip
    return list(response.allowed) == ["amplitude"]


async def check_every_ack_once(cluster: EtcdCluster, prefix: str, acked: list[str]) -> None:
    etcd = settings(cluster, prefix)
    async with etcd_client(etcd) as (client, trail):
        kv, _ = await client.get(Keys(prefix).mapping)
        assert kv is not None
        text = kv.value.decode()
        records = []
        token = ""
        while True:
            page, token = await trail.page_async(page_size=1000, page_token=token)
            records.extend(page)
            if not token:
                break
        result = await trail.verify_async()
    assert result.ok, result
    created = [r.category_id for r in records if r.action.name == "CATEGORY_CREATED"]
    for cid in acked:
        assert text.count(f"id: {cid}\n") == 1, cid
        assert created.count(cid) == 1, cid
    assert len(created) == len(set(created))  # nothing applied twice, acknowledged or not


async def test_killing_one_of_three_members_during_writes_loses_no_acknowledged_write(
    tmp_path: Path, dedicated_cluster: EtcdCluster
) -> None:
    prefix = "/faults/kill-one"
    etcd = settings(dedicated_cluster, prefix)
    await push(etcd)
    async with fleet(tmp_path, etcd, 2) as sidecars:

        async def kill_leader() -> None:
            await asyncio.to_thread(dedicated_cluster.leader().kill)

        acked, _ = await write_storm(sidecars, 40, kill_leader)
        assert len(acked) >= 20  # two members keep quorum: most writes land
        await check_every_ack_once(dedicated_cluster, prefix, acked)
        assert await decide_ok(sidecars[0])


async def test_a_leader_paused_for_five_seconds_loses_no_acknowledged_write_and_decisions_never_fail(
    tmp_path: Path, dedicated_cluster: EtcdCluster
) -> None:
    prefix = "/faults/pause-leader"
    etcd = settings(dedicated_cluster, prefix)
    await push(etcd)
    async with fleet(tmp_path, etcd, 2) as sidecars:
        decisions = {"ok": 0, "failed": 0}
        storming = True

        async def decide_loop() -> None:
            while storming:
                try:
                    decisions["ok" if await decide_ok(sidecars[1]) else "failed"] += 1
                except grpc.aio.AioRpcError:
                    decisions["failed"] += 1
                await asyncio.sleep(0.005)

        async def pause_leader() -> None:
            leader = await asyncio.to_thread(dedicated_cluster.leader)
            leader.pause()
            try:
                await asyncio.sleep(5.0)  # the fault's duration, not a synchronisation
            finally:
                leader.resume()

        looping = asyncio.create_task(decide_loop())
        acked, _ = await write_storm(sidecars, 30, pause_leader)
        storming = False
        await looping
        assert decisions["failed"] == 0 and decisions["ok"] > 100
        await check_every_ack_once(dedicated_cluster, prefix, acked)


async def test_with_every_member_down_decisions_continue_writes_fail_and_a_restart_converges(
    tmp_path: Path, dedicated_cluster: EtcdCluster
) -> None:
    prefix = "/faults/all-down"
    etcd = settings(dedicated_cluster, prefix)
    await push(etcd)
    async with fleet(tmp_path, etcd, 2) as sidecars:
        digest = await sidecars[0].digest()
        for m in dedicated_cluster.members:
            await asyncio.to_thread(m.kill)

        async def disconnected() -> admin_pb2.PolicyStatus | None:
            st = await sidecars[0].status()
            return st if not st.store_connected else None

        status = await eventually(disconnected, "status saying disconnected")
        assert status.HasField("disconnected_since") and status.store == "etcd"
        health = health_pb2_grpc.HealthStub(grpc.aio.insecure_channel(sidecars[0].address))
        answered = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # every call answers, from the last good policy
            assert await decide_ok(sidecars[0])
            answered += 1
        assert answered > 50
        check = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await sidecars[1].admin().CreateCategory(create("X001"), metadata=OWNER, timeout=WAIT)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await sidecars[1].digest() == digest  # the refused write changed nothing

        for m in dedicated_cluster.members:
            dedicated_cluster.start_member(m)
        await asyncio.to_thread(dedicated_cluster.wait_healthy, WAIT)

        async def connected() -> bool:
            return all([(await s.status()).store_connected for s in sidecars])

        await eventually(connected, "both sidecars connected again")
        await sidecars[1].admin().CreateCategory(create("X002"), metadata=OWNER, timeout=WAIT)
        new = await sidecars[1].digest()
        await eventually(lambda: _serves(sidecars[0], new), "the other sidecar catching up")
        await check_every_ack_once(dedicated_cluster, prefix, ["X002"])


async def _serves(s: FleetSidecar, digest: str) -> bool:
    return await s.digest() == digest


async def test_a_sidecar_started_while_etcd_is_down_serves_its_cache_or_says_not_serving(
    tmp_path: Path, dedicated_cluster: EtcdCluster
) -> None:
    prefix = "/faults/start-down"
    etcd = settings(dedicated_cluster, prefix)
    await push(etcd)
    first = await start_fleet_sidecar(tmp_path / "cached", etcd, name="cached")
    digest = await first.digest()
    cache = Path(first.config.mappings)
    await eventually(lambda: _exists(cache), "the cache file written")
    assert cache.stat().st_mode & 0o777 == 0o600
    assert await first.close() == 0
    for m in dedicated_cluster.members:
        await asyncio.to_thread(m.stop)

    # With the cache: it serves the last good policy, and says so.
    cached = await start_fleet_sidecar(tmp_path / "cached", etcd, name="cached")
    assert await cached.digest() == digest
    status = await cached.status()
    assert status.source == f"cache:{cache}" and not status.store_connected

    # Without one: NOT_SERVING (decisions UNAVAILABLE) until etcd answers.
    bare = await start_fleet_sidecar(tmp_path / "bare", etcd, name="bare", cache=False, admin=False, wait_ready=False)
    channel = grpc.aio.insecure_channel(bare.address)
    health = health_pb2_grpc.HealthStub(channel)

    async def health_is(status: int) -> bool:
        return (await health.Check(health_pb2.HealthCheckRequest(), timeout=2)).status == status

    await eventually(lambda: health_is(health_pb2.HealthCheckResponse.NOT_SERVING), "NOT_SERVING while etcd is down")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await bare.decision().Decide(decision_pb2.DecideRequest(), timeout=2)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE

    for m in dedicated_cluster.members:
        dedicated_cluster.start_member(m)
    await asyncio.to_thread(dedicated_cluster.wait_healthy, WAIT)
    await eventually(lambda: health_is(health_pb2.HealthCheckResponse.SERVING), "SERVING once etcd is back")
    assert await bare.digest() == digest

    async def from_etcd() -> bool:
        st = await cached.status()
        return st.store_connected and st.source == f"etcd:{prefix}/mapping"

    await eventually(from_etcd, "the cached sidecar back on etcd")
    await channel.close()
    assert await bare.close() == 0
    assert await cached.close() == 0


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_a_watch_from_a_compacted_revision_says_so_and_the_trail_still_reads_whole(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    from consent_sidecar.etcd.client import Compacted

    etcd = settings(etcd_cluster, prefix)
    first = await push(etcd)
    latest = await push(etcd, SAMPLE_MAPPING.replace("hotjar", "fullstory"))
    async with etcd_client(etcd) as (client, trail):
        await client.compact(latest)
        with pytest.raises(Compacted):
            async for _ in client.watch(Keys(prefix).mapping, start_revision=first):
                pass
        records = [r async for r in _take(trail.watch(0), 4)]
        assert [r.sequence for r in records] == [1, 2, 3, 4]


async def _take(gen: object, n: int) -> object:
    count = 0
    async for r in gen:  # type: ignore[attr-defined]
        yield r
        count += 1
        if count == n:
            return


async def test_an_etcd_with_authentication_takes_the_user_and_the_password_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess

    from etcd_cluster import etcd_binary

    from consent_sidecar.cli import run_cli

    cluster = EtcdCluster.start_new(1, tmp_path / "etcd", name="auth")
    try:
        ctl = [str(Path(etcd_binary()).with_name("etcdctl")), "--endpoints", cluster.endpoints_flag]
        for args in (["user", "add", "root:s3cret"], ["auth", "enable"]):
            await asyncio.to_thread(subprocess.run, [*ctl, *args], check=True, capture_output=True, timeout=30)
        doc = tmp_path / "m.yaml"
        doc.write_text(SAMPLE_MAPPING, encoding="utf-8")
        flags = ["--etcd-endpoints", cluster.endpoints_flag, "--etcd-user", "root"]
        assert await asyncio.to_thread(run_cli, ["store", "push", str(doc), *flags], {}) == 2  # no password: usage
        assert "CONSENT_SIDECAR_ETCD_PASSWORD" in capsys.readouterr().err
        wrong = {"CONSENT_SIDECAR_ETCD_PASSWORD": "nope"}
        assert await asyncio.to_thread(run_cli, ["store", "push", str(doc), *flags], wrong) == 1
        capsys.readouterr()
        right = {"CONSENT_SIDECAR_ETCD_PASSWORD": "s3cret"}
        assert await asyncio.to_thread(run_cli, ["store", "push", str(doc), *flags], right) == 0
        revision = int(capsys.readouterr().out)
        etcd = settings(cluster, "/consent-sidecar/default")
        from dataclasses import replace

        sidecar = await start_fleet_sidecar(tmp_path / "s", replace(etcd, user="root", password="s3cret"))
        try:
            assert (await sidecar.status()).store_revision == revision
        finally:
            assert await sidecar.close() == 0
    finally:
        cluster.stop()


def _openssl(*argv: str) -> None:
    import subprocess

    subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)


def _pki(d: Path) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the TLS tests' certificates: apt-get install -y openssl")
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-subj", "/CN=ca")  # fmt: skip
    for name, san in (("server", "DNS:localhost,IP:127.0.0.1"), ("client", "DNS:client")):
        _openssl(
            "req", "-x509", "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"), "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-keyout", str(d / f"{name}.key"),
            "-out", str(d / f"{name}.pem"), "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
            "-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth,clientAuth",
        )  # fmt: skip
    return d


async def test_an_etcd_that_requires_client_certificates_is_reached_over_mtls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    from consent_sidecar.cli import run_cli

    pki = await asyncio.to_thread(_pki, tmp_path / "pki")
    cluster = await asyncio.to_thread(
        EtcdCluster.start_new, 1, tmp_path / "etcd", name="tls", tls=(pki / "ca.pem", pki / "server.pem",
                                                                       pki / "server.key"),
    )  # fmt: skip
    try:
        doc = tmp_path / "m.yaml"
        doc.write_text(SAMPLE_MAPPING, encoding="utf-8")
        flags = ["--etcd-endpoints", cluster.endpoints_flag, "--etcd-ca", str(pki / "ca.pem")]
        assert cluster.endpoints_flag.startswith("https://")
        assert await asyncio.to_thread(run_cli, ["store", "push", str(doc), *flags], {}) == 1  # no client cert
        capsys.readouterr()
        mtls = [*flags, "--etcd-cert", str(pki / "client.pem"), "--etcd-key", str(pki / "client.key")]
        assert await asyncio.to_thread(run_cli, ["store", "push", str(doc), *mtls], {}) == 0
        revision = int(capsys.readouterr().out)
        etcd = replace(settings(cluster, "/consent-sidecar/default"), ca=str(pki / "ca.pem"),
                       cert=str(pki / "client.pem"), key=str(pki / "client.key"))  # fmt: skip
        sidecar = await start_fleet_sidecar(tmp_path / "s", etcd)
        try:
            assert (await sidecar.status()).store_revision == revision
        finally:
            assert await sidecar.close() == 0
    finally:
        cluster.stop()
