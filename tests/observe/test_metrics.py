"""Metrics: exposed in the Prometheus text format and correct after known traffic, in one process and many.

Traffic goes through the real DecisionService over gRPC (bytes handlers); the exposition is
scraped over HTTP from `serve_metrics` and parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from consent.v1 import decision_pb2
from consent_core.index import Decision, Reason
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families
from samples import SAMPLE_MAPPING as MAPPING  # the same policy; settings spelled out
from serving import decision_server

from consent_sidecar.observe.endpoint import serve_metrics
from consent_sidecar.observe.metrics import (
    RPC_BUCKETS,
    RUN_DIR_PREFIX,
    Metrics,
    Recorder,
    RunDirectory,
    multiprocess_registry,
    tally,
)
from consent_sidecar.store.policy import PolicyStore, Snapshot

Req = decision_pb2.DecideRequest


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    return parse(text)


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))
            out[s.name, labels] = out.get((s.name, labels), 0.0) + s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Running:
    def __init__(self, channel: grpc.aio.Channel, recorder: Recorder, metrics_url: str, store: PolicyStore) -> None:
        self.channel = channel
        self.recorder = recorder
        self.url = metrics_url
        self.store = store

    async def decide(self, request: decision_pb2.DecideRequest) -> decision_pb2.DecideResponse:
        call = self.channel.unary_unary(
            "/consent.v1.DecisionService/Decide",
            request_serializer=Req.SerializeToString,
            response_deserializer=decision_pb2.DecideResponse.FromString,
        )
        response: decision_pb2.DecideResponse = await call(request, timeout=5)
        return response

    async def batch(self, requests: list[decision_pb2.DecideRequest]) -> decision_pb2.DecideBatchResponse:
        call = self.channel.unary_unary(
            "/consent.v1.DecisionService/DecideBatch",
            request_serializer=decision_pb2.DecideBatchRequest.SerializeToString,
            response_deserializer=decision_pb2.DecideBatchResponse.FromString,
        )
        response: decision_pb2.DecideBatchResponse = await call(
            decision_pb2.DecideBatchRequest(requests=requests), timeout=5
        )
        return response

    async def stream(self, requests: list[decision_pb2.DecideRequest]) -> list[decision_pb2.DecideResponse]:
        call = self.channel.stream_stream(
            "/consent.v1.DecisionService/DecideStream",
            request_serializer=Req.SerializeToString,
            response_deserializer=decision_pb2.DecideResponse.FromString,
        )(timeout=5)
        out = []
        for r in requests:
            await call.write(r)
            out.append(await call.read())
        await call.done_writing()
        return out

    def scrape(self) -> Samples:
        self.recorder.flush()
        return scrape(self.url)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    metrics = Metrics()

    def published(old: Snapshot | None, new: Snapshot) -> None:
        metrics.policy_published(new.generation, new.digest, new.loaded_at.timestamp())

    async with decision_server(tmp_path, MAPPING, metrics=metrics, on_publish=published) as server:
        endpoint = serve_metrics("127.0.0.1:0", metrics.registry)
        try:
            yield Running(server.channel, server.recorder, f"http://{endpoint.address}/metrics", server.store)
        finally:
            endpoint.close()


def consent(**prefs: bool) -> decision_pb2.Consent:
    return decision_pb2.Consent(category_preferences=prefs)


DESTS = ["amplitude", "google-ads", "braze", "aws-s3", "hotjar", "nobody"]
# With C0002 granted: amplitude granted (shadow C0003 would block), google-ads and braze denied,
# aws-s3 exempt, hotjar unmapped (shadow C0003 would block), nobody unmapped.


async def test_decisions_are_counted_by_outcome_and_reason_across_rpcs(running: Running) -> None:
    granted = Req(consent=consent(C0002=True), destinations=DESTS)
    for _ in range(3):  # the first is a memo miss, the rest are hits: all count
        await running.decide(granted)
    await running.batch([granted, Req(destinations=["amplitude", "x"]), Req(destinations=[""])])
    await running.stream([granted, Req(consent=consent(), destinations=["amplitude"])])
    s = running.scrape()
    n = 3 + 1 + 1  # requests deciding `granted`
    name = "consent_sidecar_decisions_total"
    assert value(s, name, outcome="allowed", reason="granted") == n
    assert value(s, name, outcome="blocked", reason="denied") == 2 * n + 1
    assert value(s, name, outcome="allowed", reason="exempt") == n
    assert value(s, name, outcome="allowed", reason="unmapped") == 2 * n
    assert value(s, name, outcome="allowed", reason="no_consent") == 2
    total = sum(v for (metric, _), v in s.items() if metric == name)
    assert total == 6 * n + 2 + 1
    assert value(s, "consent_sidecar_decision_errors_total", method="DecideBatch") == 1
    # shadow: amplitude and hotjar were allowed and C0003 (not granted) would have blocked them
    would = "consent_sidecar_shadow_would_block_total"
    assert value(s, would, category="C0003", destination="amplitude") == n
    assert value(s, would, category="C0003", destination="hotjar") == n


async def test_rpc_durations_and_batch_sizes_are_histograms(running: Running) -> None:
    await running.decide(Req(destinations=["a"]))
    await running.decide(Req(destinations=["a"]))
    await running.batch([Req(destinations=["a"])] * 7)
    await running.batch([Req(destinations=["b"])] * 30)
    await running.stream([Req(destinations=["a"])] * 4)
    s = running.scrape()
    h = "consent_sidecar_rpc_duration_seconds"
    assert value(s, f"{h}_count", method="Decide") == 2
    assert value(s, f"{h}_count", method="DecideBatch") == 2
    assert value(s, f"{h}_count", method="DecideStream") == 4
    assert value(s, f"{h}_bucket", method="Decide", le="+Inf") == 2
    assert 0 < value(s, f"{h}_sum", method="Decide") < 1
    b = "consent_sidecar_batch_size"
    assert value(s, f"{b}_count") == 2
    assert value(s, f"{b}_sum") == 37
    assert value(s, f"{b}_bucket", le="5.0") == 0
    assert value(s, f"{b}_bucket", le="10.0") == 1
    assert value(s, f"{b}_bucket", le="50.0") == 2


async def test_policy_generation_digest_and_reload_time(running: Running) -> None:
    s = running.scrape()
    snap = running.store.current
    assert value(s, "consent_sidecar_policy_generation") == 1
    assert value(s, "consent_sidecar_policy_info", digest=snap.digest) == 1
    assert value(s, "consent_sidecar_last_reload_timestamp_seconds") == pytest.approx(snap.loaded_at.timestamp())


def test_bulk_histogram_flush_equals_observing_one_by_one() -> None:
    values = [0.00001, 0.00002, 0.00003, 0.0007, 0.0007, 0.002, 0.4, 3.0, 0.1, 0.1]
    reference = CollectorRegistry()
    h = Histogram("consent_sidecar_rpc_duration_seconds", "x", ["method"], buckets=RPC_BUCKETS, registry=reference)
    for v in values:
        h.labels("Decide").observe(v)
    metrics = Metrics()
    recorder = Recorder(metrics)
    for v in values[:4]:
        recorder.rpc["Decide"].observe(v)
    recorder.flush()
    for v in values[4:]:
        recorder.rpc["Decide"].observe(v)
    recorder.flush()
    recorder.flush()  # nothing new: adds nothing

    def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, round(s.value, 9))
            for m in registry.collect() if m.name == "consent_sidecar_rpc_duration_seconds"
            for s in m.samples if not s.name.endswith("_created") and s.labels.get("method") == "Decide"
        ]

    assert samples(metrics.registry) == samples(reference)


def test_tally_counts_reasons_and_shadow_only_for_allowed_destinations() -> None:
    decisions = [
        Decision("amplitude", True, Reason.GRANTED, ("C0002",), (), ("C0003",)),
        Decision("amplitude/eu", True, Reason.GRANTED, ("C0002",), (), ("C0003",)),
        Decision("braze", False, Reason.DENIED, ("C0004",), ("C0004",), ("C0003",)),
        Decision("x", True, Reason.UNMAPPED),
    ]
    t = tally(decisions)
    allowed, blocked = 1, 0
    assert sorted(t.reasons) == sorted(
        [(Reason.GRANTED * 2 + allowed, 2), (Reason.DENIED * 2 + blocked, 1), (Reason.UNMAPPED * 2 + allowed, 1)]
    )
    assert t.shadow == (("C0003", "amplitude", 2),)


# -- multiprocess mode --------------------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import json, sys
    from consent_sidecar.observe import metrics as m
    m.enable_multiprocess(sys.argv[1])
    metrics = m.Metrics()
    rec = m.Recorder(metrics)
    t = m.Tally(((3 * 2 + 1, 5),), (("C0003", "amplitude", 2),))
    for _ in range(int(sys.argv[2])):
        rec.count(t)
    rec.rpc["Decide"].observe(0.001)
    rec.batch.observe(100)
    rec.flush()
    metrics.policy_published(int(sys.argv[2]), "d" * 64, 1000.0 + int(sys.argv[2]))
    metrics.reloads.inc()
    print(json.dumps("ok"))
    """
)


def test_multiprocess_mode_sums_counters_and_keeps_a_generation_per_process(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    for n in (1, 2, 3):
        out = subprocess.run(
            [sys.executable, "-c", _WORKER, str(directory), str(n)], capture_output=True, text=True, timeout=60,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == "ok"
    registry = multiprocess_registry(str(directory))
    endpoint = serve_metrics("127.0.0.1:0", registry)
    try:
        with urllib.request.urlopen(f"http://{endpoint.address}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        endpoint.close()
    s = parse(text)
    assert value(s, "consent_sidecar_decisions_total", outcome="allowed", reason="granted") == 5 * (1 + 2 + 3)
    assert value(s, "consent_sidecar_shadow_would_block_total", category="C0003", destination="amplitude") == 12
    assert value(s, "consent_sidecar_reloads_total") == 3
    assert value(s, "consent_sidecar_batch_size_count") == 3
    assert value(s, "consent_sidecar_rpc_duration_seconds_count", method="Decide") == 3
    # liveall gauges: one series per process (pid label), for processes not marked dead
    generations = sorted(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "consent_sidecar_policy_generation"
        for sample in family.samples
    )
    assert generations == [1, 2, 3]
    assert value(s, "consent_sidecar_last_reload_timestamp_seconds") == 1003.0


def test_metrics_endpoint_refuses_a_taken_port() -> None:
    first = serve_metrics("127.0.0.1:0", CollectorRegistry())
    try:
        with pytest.raises(OSError):
            serve_metrics(first.address, CollectorRegistry())
    finally:
        first.close()


def test_metrics_address_must_be_host_and_port() -> None:
    for bad in ("9100", "localhost", ":9100", "host:port"):
        with pytest.raises(ValueError, match="expected host:port"):
            serve_metrics(bad, CollectorRegistry())




# -- through `serve` --------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_exposes_metrics_on_metrics_listen_and_counts_reloads_and_audit(tmp_path: Path) -> None:
    import asyncio
    import io
    import os

    from consent_sidecar.config import ServeConfig
    from consent_sidecar.process.server import serve

    mapping = tmp_path / "mappings.yaml"
    mapping.write_text(MAPPING)
    port = _free_port()
    metrics_addr = f"127.0.0.1:{_free_port()}"
    config = ServeConfig(
        mappings=str(mapping), listen=(f"127.0.0.1:{port}",), metrics_listen=metrics_addr,
        audit_db=str(tmp_path / "audit.db"), grace_period=1.0,
    )
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(config, ready=ready, stop=stop, stderr=io.StringIO()))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        url = f"http://{metrics_addr}/metrics"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/consent.v1.DecisionService/Decide",
                request_serializer=Req.SerializeToString,
                response_deserializer=decision_pb2.DecideResponse.FromString,
            )
            for _ in range(3):
                await call(Req(consent=consent(C0002=True), destinations=DESTS), timeout=5)
            edited = tmp_path / "edited.yaml"
            edited.write_text(MAPPING.replace("[google-ads, braze]", "[google-ads]"))
            os.replace(edited, mapping)
            for _ in range(200):  # bounded: the watcher reloads within a second or two
                r = await call(Req(destinations=["braze"]), timeout=5)
                if r.policy.generation == 2:
                    break
                await asyncio.sleep(0.05)
            assert r.policy.generation == 2

        async def scraped() -> Samples:
            return await asyncio.to_thread(scrape, url)

        for _ in range(100):  # the recorder flushes once a second
            s = await scraped()
            if value(s, "consent_sidecar_reloads_total") == 1 and value(
                s, "consent_sidecar_decisions_total", outcome="allowed", reason="granted"
            ) == 3:
                break
            await asyncio.sleep(0.1)
        assert value(s, "consent_sidecar_decisions_total", outcome="allowed", reason="granted") == 3
        assert value(s, "consent_sidecar_decisions_total", outcome="blocked", reason="denied") == 6
        assert value(s, "consent_sidecar_reloads_total") == 1
        assert value(s, "consent_sidecar_failed_reloads_total") == 0
        assert value(s, "consent_sidecar_policy_generation") == 2
        # the start event, then the change events and POLICY_RELOADED of the reload
        assert value(s, "consent_sidecar_audit_events_total") >= 3
        assert value(s, "consent_sidecar_rpc_duration_seconds_count", method="Decide") >= 4
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0


# -- the endpoint under idle connections ----------------------------------------------------------------


def test_idle_connections_cost_no_thread_and_are_closed_after_the_idle_timeout() -> None:
    import contextlib
    import socket
    import threading
    import time

    endpoint = serve_metrics("127.0.0.1:0", CollectorRegistry(), idle_timeout=1.0, max_connections=64)
    host, _, port = endpoint.address.rpartition(":")
    threads = threading.active_count()
    idle = []
    try:
        for _ in range(300):  # more than max_connections: the ones idle longest make room
            idle.append(socket.create_connection((host, int(port)), timeout=10))
        with urllib.request.urlopen(f"http://{endpoint.address}/metrics", timeout=10) as r:
            assert r.status == 200  # a scraper still gets in
        assert threading.active_count() <= threads  # one thread serves them all, none per connection
        assert endpoint.connections <= 64
        # Silent connections are closed by the endpoint: each one reads EOF (bounded waits).
        deadline = time.monotonic() + 20
        for sock in idle:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ConnectionResetError):  # closed with data unread: a reset is a close too
                assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
        endpoint.close()


def test_the_endpoint_keeps_a_connection_alive_between_scrapes() -> None:
    import http.client

    endpoint = serve_metrics("127.0.0.1:0", CollectorRegistry(), idle_timeout=5.0)
    host, _, port = endpoint.address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            r = conn.getresponse()
            assert r.status == 200 and r.getheader("Content-Encoding") == "gzip"
            r.read()
        conn.request("POST", "/metrics", body=b"")
        assert conn.getresponse().status == 405
    finally:
        conn.close()
        endpoint.close()


# -- the metrics directory of a run -----------------------------------------------------------------------


def test_an_operators_multiproc_dir_is_used_and_never_deleted(tmp_path: Path) -> None:
    import fcntl
    import os

    base = tmp_path / "operator"
    base.mkdir(mode=0o755)
    (base / "theirs.txt").write_text("keep me")
    dead = base / f"{RUN_DIR_PREFIX}dead"  # a run killed before it could remove its directory
    dead.mkdir()
    (dead / ".lock").touch()
    live = RunDirectory(str(base))  # another sidecar's run, still going
    old_umask = os.umask(0)
    try:
        run = RunDirectory(str(base))
    finally:
        os.umask(old_umask)
    try:
        assert Path(run.path).parent == base and Path(run.path).stat().st_mode & 0o777 == 0o700
        assert (base / "theirs.txt").read_text() == "keep me"
        assert not dead.exists() and Path(live.path).exists()
        with open(Path(run.path) / ".lock") as f, pytest.raises(OSError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while the run lives
    finally:
        run.remove()
        live.remove()
    assert base.exists() and (base / "theirs.txt").exists() and not Path(run.path).exists()
