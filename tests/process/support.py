"""What the process-level tests share: a real `consent-sidecar serve` process, its JSON log lines, bounded polls.

`serve_process(tmp_path, *flags)` starts `python -m consent_sidecar serve` with a mapping in
tmp_path (SAMPLE_MAPPING unless one is there already), JSON logs on stderr (read by a thread),
and stops it (SIGTERM, then SIGKILL) with every worker it started. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from samples import SAMPLE_MAPPING

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(check: Callable[[], T], timeout: float = 15.0, interval: float = 0.05) -> T:
    """`check()` until it returns something truthy (returned), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")
        time.sleep(interval)  # poll interval, not synchronisation: the loop re-checks the condition


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] != "Z"
    return True


class ServeProcess:
    """A running `serve`: the process, its log lines as parsed JSON, and where it listens once started."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.started: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": raw.rstrip()}
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_line(self, event: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        """The first log line with this event (and these field values), waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {event!r} log line; last lines: {self.lines[-10:]}")
                self._cond.wait(min(left, 0.2))

    def wait_started(self, timeout: float = 120.0) -> ServeProcess:
        self.started = self.wait_line("sidecar started", timeout)
        return self

    @property
    def tcp(self) -> str:
        return str(next(a for a in self.started["listen"] if not a.startswith("unix:")))

    @property
    def worker_pids(self) -> list[int]:
        return list(self.started.get("workers", []))


@contextlib.contextmanager
def serve_process(
    tmp_path: Path, *flags: str, env: dict[str, str] | None = None, mapping: str = SAMPLE_MAPPING
) -> Iterator[ServeProcess]:
    """`serve --mappings tmp_path/mappings.yaml --audit-db tmp_path/audit.db --log-format json FLAGS`."""
    path = tmp_path / "mappings.yaml"
    if not path.exists():
        path.write_text(mapping)
    argv = [
        sys.executable, "-m", "consent_sidecar", "serve", "--mappings", str(path),
        "--audit-db", str(tmp_path / "audit.db"), "--log-format", "json", *flags,
    ]
    if "--listen" not in flags:
        argv += ["--listen", "127.0.0.1:0"]
    full_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    process = subprocess.Popen(
        argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
        env=full_env, cwd=ROOT,
    )
    sidecar = ServeProcess(process)
    try:
        yield sidecar
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Every worker it started, replacements included: none may outlive the test.
        pids = set(sidecar.worker_pids)
        pids.update(int(line["pid"]) for line in sidecar.lines if line.get("event") == "worker restarted")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
