"""`serve --workers N`: workers share the TCP port, serve and reload together, drain on SIGTERM, report metrics.

The sidecar runs as a real process (`support.serve_process`): workers are processes, signals
are real, and multiprocess metrics must not leak into this test process. Waits are bounded polls.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core.index import compile as compile_index
from consent_core.mapping_file import load_mapping
from consent_core.model import ConsentMapping
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from samples import SAMPLE_MAPPING as MAPPING
from serving import ServeProcess, serve_process

from consent_sidecar.process.workers import reserve_tcp

from .support import alive, free_port, poll

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")


Req = decision_pb2.DecideRequest


@contextlib.contextmanager
def start(
    tmp_path: Path, *extra: str, workers: int = 2, port: int = 0, stdout: Path | None = None
) -> Iterator[ServeProcess]:
    """`serve --workers N` on 127.0.0.1:PORT and a unix socket, metrics on a free port, kept in tmp_path/prom."""
    unix = f"unix:{tmp_path / 'd.sock'}" if len(str(tmp_path)) < 90 else f"unix:/tmp/cs-{os.getpid()}-w.sock"
    with serve_process(
        tmp_path, "--listen", f"127.0.0.1:{port}", "--listen", unix, "--workers", str(workers),
        "--metrics-listen", f"127.0.0.1:{free_port()}", "--grace-period", "5", *extra,
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}, stdout=stdout,
    ) as sidecar:  # fmt: skip
        yield sidecar


def decide_fresh(target: str, request: decision_pb2.DecideRequest) -> decision_pb2.DecideResponse:
    """One Decide on a new connection (a new channel: the kernel picks a worker per connection)."""
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        response: decision_pb2.DecideResponse = decision_pb2_grpc.DecisionServiceStub(ch).Decide(request, timeout=10)
        return response


def per_pid_decisions(prom: Path, pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        files = [str(p) for p in prom.glob(f"consent-sidecar-metrics-*/counter_{pid}.db")]  # the run's own directory
        total = 0.0
        for metric in MultiProcessCollector.merge(files, accumulate=False) if files else []:
            if metric.name == "consent_sidecar_decisions":
                total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
        out[pid] = total
    return out


def scrape(url: str) -> list[Any]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return list(text_string_to_metric_families(r.read().decode()))


GRANT = Req(consent=decision_pb2.Consent(category_preferences={"C0002": True}), destinations=["amplitude", "braze"])


# -- tests ----------------------------------------------------------------------------------------


def test_workers_share_the_port_and_serve_together(tmp_path: Path) -> None:
    with start(tmp_path) as sc:
        sc.wait_started()
        assert len(sc.worker_pids) == 2
        assert sc.unix in sc.started["listen"]
        for _ in range(40):
            r = decide_fresh(sc.tcp, GRANT)
            assert (list(r.allowed), list(r.blocked), r.policy.generation) == (["amplitude"], ["braze"], 1)
        r = decide_fresh(sc.unix, GRANT)  # the unix socket is served by the parent
        assert list(r.allowed) == ["amplitude"]
        # Every worker served some of the 40 connections (each counts its decisions in its own file).
        # Workers flush their counts about once a second: wait for all 40 requests x 2 destinations.
        prom = tmp_path / "prom"
        counts = poll(lambda: (c := per_pid_decisions(prom, sc.worker_pids)) and sum(c.values()) == 80 and c)
        assert all(counts.values()), counts
        # The endpoint (parent) adds up every process: 41 requests x 2 destinations.

        def total() -> float:
            return sum(
                s.value for f in scrape(sc.metrics_url) if f.name == "consent_sidecar_decisions"
                for s in f.samples if s.name == "consent_sidecar_decisions_total"
            )

        assert poll(lambda: total() == 82)
        generations = {
            s.labels["pid"]: s.value for f in scrape(sc.metrics_url) if f.name == "consent_sidecar_policy_generation"
            for s in f.samples
        }
        assert set(generations) == {str(p) for p in (sc.process.pid, *sc.worker_pids)}
        assert set(generations.values()) == {1.0}


def test_workers_reload_together_when_the_file_changes(tmp_path: Path) -> None:
    with start(tmp_path) as sc:
        sc.wait_started()
        assert list(decide_fresh(sc.tcp, GRANT).blocked) == ["braze"]
        mapping = tmp_path / "mappings.yaml"
        edited = tmp_path / "mappings.yaml.tmp"
        edited.write_text(MAPPING.replace("destinations: [google-ads, braze]", "destinations: [google-ads]"))
        os.replace(edited, mapping)  # braze is now unmapped: allowed

        def all_reloaded() -> bool:
            answers = [decide_fresh(sc.tcp, GRANT) for _ in range(12)]
            return all(r.policy.generation == 2 and list(r.blocked) == [] for r in answers)

        poll(all_reloaded)
        want = compile_index(load_mapping(str(mapping)).mapping).digest
        r = decide_fresh(sc.unix, GRANT)
        assert (r.policy.generation, r.policy.digest) == (2, want)

        def worker_generations() -> dict[str, float]:
            return {
                s.labels["pid"]: s.value for f in scrape(sc.metrics_url)
                if f.name == "consent_sidecar_policy_generation" for s in f.samples
            }

        poll(lambda: set(worker_generations().values()) == {2.0})
        assert poll(lambda: any(
            s.value == 1 for f in scrape(sc.metrics_url) if f.name == "consent_sidecar_reloads" for s in f.samples
            if s.name == "consent_sidecar_reloads_total"
        ))


def test_sigterm_drains_every_worker(tmp_path: Path) -> None:
    with start(tmp_path) as sc:
        sc.wait_started()
        pids = sc.worker_pids
        channel = grpc.insecure_channel(sc.tcp)
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        requests: list[decision_pb2.DecideRequest] = []
        cv = threading.Condition()

        def gen() -> Iterator[decision_pb2.DecideRequest]:
            for i in range(2):
                with cv:
                    cv.wait_for(lambda i=i: len(requests) > i, timeout=20)
                yield requests[i]

        responses = stub.DecideStream(gen(), timeout=30)
        with cv:
            requests.append(GRANT)
            cv.notify_all()
        assert list(next(responses).allowed) == ["amplitude"]
        sc.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the drain has begun: the open stream is still served
        with cv:
            requests.append(GRANT)
            cv.notify_all()
        assert list(next(responses).allowed) == ["amplitude"]
        assert list(responses) == []  # the stream ends cleanly
        channel.close()
        assert sc.process.wait(20) == 0
        for pid in pids:
            assert poll(lambda pid=pid: not alive(pid), timeout=10)
        assert sc.wait_line("stopped")


def test_a_worker_that_dies_stops_the_sidecar(tmp_path: Path) -> None:
    with start(tmp_path) as sc:
        sc.wait_started()
        os.kill(sc.worker_pids[0], signal.SIGKILL)
        assert sc.process.wait(30) == 4
        assert not alive(sc.worker_pids[1]) or poll(lambda: not alive(sc.worker_pids[1]), timeout=10)


def test_a_taken_port_fails_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with start(tmp_path, port=port) as sc:
            assert sc.process.wait(30) == 1
            errors = [line for line in sc.lines if line.get("event") == "cannot listen"]
            assert errors and "Address already in use" in errors[0]["error"]
            assert not any(line.get("event") == "sidecar started" for line in sc.lines)


async def test_reserve_tcp_refuses_a_port_served_with_reuseport_and_gives_a_real_port() -> None:
    import grpc.aio

    held, address = reserve_tcp("127.0.0.1:0")
    port = int(address.rpartition(":")[2])
    assert port > 0
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    try:
        assert server.add_insecure_port(address) == port  # a worker binds beside the reservation
        await server.start()
        held.close()
        with pytest.raises(OSError):
            reserve_tcp(address)  # another sidecar cannot take it, though the workers use SO_REUSEPORT
    finally:
        held.close()
        await server.stop(None)


def test_the_canonical_mapping_round_trips_to_the_same_digest() -> None:
    other = """\
version: 1
settings: {unknown_destinations: deny}
categories:
  - {id: C1, name: "Ünïcode name", destinations: [a, b.c-d], enabled: false}
  - {id: C2, name: Two, destinations: [a], shadow: true}
  - {id: C3, name: Three, destinations: [z, a]}
destinations:
  a: {resolution: any}
  only-here: {enforce: false}
"""
    for mapping in (load_mapping_text(MAPPING), load_mapping_text(other)):
        again = ConsentMapping.from_json_dict(json.loads(json.dumps(mapping.to_json_dict())))
        assert again.digest() == mapping.digest()
        assert again == mapping


def load_mapping_text(text: str) -> Any:
    from consent_core.mapping_file import parse_mapping

    return parse_mapping(text, "m.yaml")


def test_workers_write_decision_logs_to_the_parents_stdout(tmp_path: Path) -> None:
    out = tmp_path / "stdout.jsonl"
    with start(tmp_path, "--decision-log", "-", "--decision-log-rate", "0", stdout=out) as sc:
        sc.wait_started()
        for i in range(30):
            decide_fresh(sc.tcp, Req(destinations=[f"x-{i}", "amplitude"]))
        sc.process.send_signal(signal.SIGTERM)
        assert sc.process.wait(20) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]  # every line whole JSON
    assert sorted(line["allowed"][0] for line in lines) == sorted(f"x-{i}" for i in range(30))
    assert {line["rpc"] for line in lines} == {"Decide"}


def test_an_operators_metrics_directory_is_used_and_survives_the_run(tmp_path: Path) -> None:
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "keep.txt").write_text("the operator's")
    with start(tmp_path) as sc:
        sc.wait_started()
        runs = list(prom.glob("consent-sidecar-metrics-*"))  # the run's own directory, inside theirs
        assert len(runs) == 1 and runs[0].stat().st_mode & 0o777 == 0o700
        assert (prom / "keep.txt").read_text() == "the operator's"
        sc.process.send_signal(signal.SIGTERM)
        assert sc.process.wait(20) == 0
    assert (prom / "keep.txt").read_text() == "the operator's"
    assert not list(prom.glob("consent-sidecar-metrics-*"))
