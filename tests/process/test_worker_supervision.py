"""`serve --workers`: a mapping of any size the limits allow, nothing on a command line, a stuck worker replaced.

Real processes throughout: the sidecar, its workers, signals (SIGSTOP freezes a worker the way a
wedged event loop would), the kernel spreading fresh connections across the workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from consent.v1 import decision_pb2, decision_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from serving import serve_process

from .support import alive, free_port, poll

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")

CATEGORIES = 50
PER_CATEGORY = 3_000
DISTINCT = 100_000  # the default limit of distinct destinations
WORKERS_HEALTH = "consent-sidecar/workers"


def large_mapping(renamed: str = "") -> str:
    """50 categories x 3,000 of 100,000 distinct destinations: about 4 MiB of YAML, 3 MiB as JSON."""
    lines = ["version: 1", "categories:"]
    for c in range(CATEGORIES):
        lines += [f"  - id: C{c:04d}", f"    name: Category {c}{renamed if c == 0 else ''}", "    destinations:"]
        lines += [f"      - destination-{(c * 2_000 + i) % DISTINCT:06d}" for i in range(PER_CATEGORY)]
    return "\n".join(lines) + "\n"


def decide_fresh(target: str, request: decision_pb2.DecideRequest) -> decision_pb2.DecideResponse:
    """One Decide on a new connection (the kernel picks a worker per connection)."""
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        response: decision_pb2.DecideResponse = decision_pb2_grpc.DecisionServiceStub(ch).Decide(request, timeout=30)
        return response


GRANT = decision_pb2.DecideRequest(
    consent=decision_pb2.Consent(category_preferences={"C0000": True}), destinations=["destination-000001"],
)


@pytest.mark.slow
def test_workers_start_and_reload_a_mapping_of_megabytes_that_no_command_line_shows(tmp_path: Path) -> None:
    text = large_mapping()
    assert len(text) > 3 << 20  # far beyond the 128 KiB one command-line argument may hold
    (tmp_path / "mappings.yaml").write_text(text)
    with serve_process(tmp_path, "--workers", "2", "--grace-period", "5") as sc:
        sc.wait_started(timeout=240)
        # destination-000001 is in C0000 and C0049: granting only C0000 blocks it.
        answers = [decide_fresh(sc.tcp, GRANT) for _ in range(8)]
        assert {(tuple(a.blocked), a.policy.generation) for a in answers} == {(("destination-000001",), 1)}

        for pid in (sc.process.pid, *sc.worker_pids):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert len(cmdline) < 1024, cmdline[:200]
            assert b"destination-" not in cmdline and b"Category" not in cmdline and b"C0000" not in cmdline

        edited = tmp_path / "mappings.yaml.new"
        edited.write_text(large_mapping(renamed=" (renamed)"))
        os.replace(edited, tmp_path / "mappings.yaml")

        def every_worker_reloaded() -> bool:
            return all(decide_fresh(sc.tcp, GRANT).policy.generation == 2 for _ in range(8))

        poll(every_worker_reloaded, timeout=240, interval=0.5)
        sc.process.send_signal(signal.SIGTERM)
        assert sc.process.wait(30) == 0


def parent_health(unix: str, service: str) -> int | None:
    try:
        with grpc.insecure_channel(unix) as ch:
            request = health_pb2.HealthCheckRequest(service=service)
            return int(health_pb2_grpc.HealthStub(ch).Check(request, timeout=5).status)
    except grpc.RpcError:
        return None


def restarts(metrics: str) -> float:
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as r:
        families = list(text_string_to_metric_families(r.read().decode()))
    return sum(
        s.value for f in families if f.name == "consent_sidecar_worker_restarts"
        for s in f.samples if s.name.endswith("_total") and s.labels.get("reason") == "unresponsive"
    )


@pytest.mark.slow
def test_an_unresponsive_worker_is_killed_replaced_and_reported(tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    unix = f"unix:{tmp_path / 'd.sock'}" if len(str(tmp_path)) < 90 else f"unix:/tmp/cs-{os.getpid()}-sup.sock"
    prom = tmp_path / "prom"
    prom.mkdir(mode=0o700)
    flags = (
        "--workers", "2", "--worker-timeout", "1", "--listen", "127.0.0.1:0", "--listen", unix,
        "--metrics-listen", metrics,
    )
    with serve_process(tmp_path, *flags, env={"PROMETHEUS_MULTIPROC_DIR": str(prom)}) as sc:
        sc.wait_started()
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        assert parent_health(unix, WORKERS_HEALTH) == serving
        stuck = sc.worker_pids[0]
        os.kill(stuck, signal.SIGSTOP)  # alive, holding its share of the port, answering nothing

        detected = sc.wait_line("worker unresponsive: killing and replacing it", timeout=30, pid=stuck)
        assert detected["worker"] == 0
        # While it is down (a replacement takes a second: a fresh interpreter) the parent says so.
        assert poll(lambda: parent_health(unix, WORKERS_HEALTH) == not_serving, timeout=30, interval=0.02)
        replaced = sc.wait_line("worker restarted", timeout=60, previous_pid=stuck)
        assert replaced["pid"] != stuck and alive(replaced["pid"])
        assert poll(lambda: not alive(stuck), timeout=10)
        assert poll(lambda: parent_health(unix, WORKERS_HEALTH) == serving, timeout=30)
        assert poll(lambda: restarts(metrics) == 1, timeout=10)
        # Every connection is served again, whichever worker the kernel hands it to.
        started = time.monotonic()
        for _ in range(12):
            assert list(decide_fresh(sc.tcp, GRANT).allowed) == ["destination-000001"]
        assert time.monotonic() - started < 30
        sc.process.send_signal(signal.SIGTERM)
        assert sc.process.wait(30) == 0


def test_workers_outlive_no_parent_even_when_their_logs_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "mappings.yaml").write_text("version: 1\ncategories: []\n")
    argv = [
        sys.executable, "-m", "consent_sidecar", "serve", "--mappings", str(tmp_path / "mappings.yaml"),
        "--listen", "127.0.0.1:0", "--workers", "2", "--audit-db", str(tmp_path / "audit.db"), "--log-format", "json",
    ]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    workers: list[int] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if '"sidecar started"' in line:
                workers = json.loads(line)["workers"]
                break
        assert len(workers) == 2
        process.stderr.close()  # whoever read the logs is gone: every log line now hits a broken pipe
        process.kill()  # and so is the parent, without a word to its workers
        process.wait(10)
        for pid in workers:
            assert poll(lambda pid=pid: not alive(pid), timeout=20), f"worker {pid} outlived its parent"
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
