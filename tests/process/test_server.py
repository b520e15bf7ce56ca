"""The server process: listeners (TCP, IPv6, unix) as served, start failures, run() and the SIGTERM drain."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import grpc.aio
import pytest
import structlog
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core.errors import SidecarError, StartupError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving import ServeProcess, serve_process

from consent_sidecar.auth.gate import TLSConfigError
from consent_sidecar.config import ServeConfig
from consent_sidecar.observe import logs
from consent_sidecar.observe.observability import ObservabilityError
from consent_sidecar.process.grpc_server import ListenError
from consent_sidecar.process.server import EXIT_LISTEN, EXIT_MAPPING, EXIT_OK, serve
from consent_sidecar.process.workers import WorkerError

DECISION = "consent.v1.DecisionService"
SERVING = health_pb2.HealthCheckResponse.SERVING

BROKEN_MAPPING = """\
version: 1
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude]
  - id: 4bad
    name: Targeting Cookies
    destinations: [google-ads]
"""


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    r = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(r.status)


# -- listener addresses, served ------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_any_number_of_listen_addresses_including_ipv6(tmp_path: Path, mapping_path: Path) -> None:
    with socket.socket(socket.AF_INET6) as s6, socket.socket() as s4:
        s6.bind(("::1", 0))
        s4.bind(("127.0.0.1", 0))
        free6, free4 = s6.getsockname()[1], s4.getsockname()[1]
    listen = (f"127.0.0.1:{free4}", f"[::1]:{free6}", f"unix:{short_socket(tmp_path)}")
    async with serving(ServeConfig(mappings=str(mapping_path), listen=listen)) as addresses:
        for address in addresses:
            async with grpc.aio.insecure_channel(address) as ch:
                assert await health_status(ch, DECISION) == SERVING


# -- in-process serve(): start failures and socket files ------------------------------------


def exists(path: str | Path) -> bool:
    """A stat on a local temp dir: instant, so fine to call from async tests."""
    return os.path.lexists(path)


def write_text(path: str | Path, text: str) -> None:
    Path(path).write_text(text)


def read_text(path: str | Path) -> str:
    return Path(path).read_text()


def short_socket(tmp_path: Path, name: str = "s.sock") -> str:
    path = tmp_path / name
    if len(str(path)) > 100:  # AF_UNIX limit
        path = Path(f"/tmp/cs-{os.getpid()}-{time.monotonic_ns()}-{name}")
    return str(path)


@contextlib.asynccontextmanager
async def serving(config: ServeConfig) -> AsyncIterator[list[str]]:
    """Runs serve() until the block exits; yields the configured addresses once the sidecar is ready."""
    ready, stop = asyncio.Event(), asyncio.Event()
    err = io.StringIO()
    task = asyncio.create_task(serve(config, ready=ready, stop=stop, stderr=err))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait((task, waiter), timeout=10, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    assert ready.is_set(), f"sidecar did not start: {err.getvalue()}"
    try:
        yield list(config.listen)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, timeout=10) == EXIT_OK


async def serve_failing(config: ServeConfig) -> tuple[int, str]:
    """serve() that is expected to fail before listening: (exit code, stderr)."""
    err = io.StringIO()
    code = await asyncio.wait_for(serve(config, stop=asyncio.Event(), stderr=err), timeout=10)
    return code, err.getvalue()


async def test_a_broken_mapping_fails_start_with_positions_and_opens_nothing(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    write_text(path, BROKEN_MAPPING)
    sock = short_socket(tmp_path)
    code, err = await serve_failing(ServeConfig(mappings=str(path), listen=(f"unix:{sock}",)))
    assert code == EXIT_MAPPING
    assert f"{path}:6:9: categories[1].id: must not start with a digit" in err
    assert not exists(sock)


async def test_a_missing_mapping_file_fails_start(tmp_path: Path) -> None:
    code, err = await serve_failing(ServeConfig(mappings=str(tmp_path / "nope.yaml"), listen=("127.0.0.1:0",)))
    assert code == EXIT_MAPPING
    assert "nope.yaml" in err


async def test_a_taken_port_fails_start_with_a_clear_error(mapping_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, err = await serve_failing(ServeConfig(mappings=str(mapping_path), listen=(f"127.0.0.1:{port}",)))
    assert code == EXIT_LISTEN
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "in use" in err.lower()


async def test_one_unbindable_address_opens_none_of_them(tmp_path: Path, mapping_path: Path) -> None:
    sock = short_socket(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, _ = await serve_failing(
            ServeConfig(mappings=str(mapping_path), listen=(f"unix:{sock}", f"127.0.0.1:{port}"))
        )
    assert code == EXIT_LISTEN
    assert not exists(sock)


async def test_a_stale_socket_file_is_replaced_and_removed_on_exit(tmp_path: Path, mapping_path: Path) -> None:
    sock = short_socket(tmp_path)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sock)  # left behind, as by a crashed sidecar: nobody listens on it
    stale.close()
    assert exists(sock)
    config = ServeConfig(mappings=str(mapping_path), listen=(f"unix:{sock}",))
    async with serving(config), grpc.aio.insecure_channel(f"unix:{sock}") as ch:
        assert await health_status(ch, DECISION) == SERVING
    assert not exists(sock)


async def test_a_live_socket_is_not_stolen(tmp_path: Path, mapping_path: Path) -> None:
    sock = short_socket(tmp_path)
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(sock)
        live.listen()
        code, err = await serve_failing(ServeConfig(mappings=str(mapping_path), listen=(f"unix:{sock}",)))
        assert code == EXIT_LISTEN
        assert "in use" in err
        assert exists(sock)
    os.unlink(sock)


async def test_a_malformed_listen_address_fails_start_with_exit_1(mapping_path: Path) -> None:
    code, err = await serve_failing(ServeConfig(mappings=str(mapping_path), listen=("127.0.0.1:0", "nohost")))
    assert code == EXIT_LISTEN
    assert err == "error: listen address 'nohost': expected host:port or unix:/path\n"


def test_every_failure_to_start_is_a_startup_error_of_the_core() -> None:
    for error in (ListenError, WorkerError, ObservabilityError, TLSConfigError):
        assert issubclass(error, StartupError) and issubclass(error, SidecarError), error


async def test_a_regular_file_at_the_socket_path_is_not_deleted(tmp_path: Path, mapping_path: Path) -> None:
    sock = short_socket(tmp_path)
    write_text(sock, "precious")
    code, err = await serve_failing(ServeConfig(mappings=str(mapping_path), listen=(f"unix:{sock}",)))
    assert code == EXIT_LISTEN
    assert "is not a socket" in err
    assert read_text(sock) == "precious"


# -- the real process: serve, signals, drain ------------------------------------------------

def sidecar_process(tmp_path: Path, listen: str, grace: float = 10.0) -> AbstractContextManager[ServeProcess]:
    """`consent-sidecar serve` of tmp_path/mappings.yaml in a child process, on `listen` only."""
    return serve_process(tmp_path, "--listen", listen, "--grace-period", str(grace))


async def wait_until(proc: subprocess.Popen[str], channel: grpc.aio.Channel, serving: bool, deadline: float) -> None:
    """Polls health until it is (or is no longer) SERVING; fails if the process exits or the deadline passes."""
    while True:
        assert proc.poll() is None or not serving, f"sidecar exited with {proc.returncode}"
        try:
            ok = await health_status(channel, DECISION) == SERVING
        except grpc.aio.AioRpcError:
            ok = False
        if ok == serving:
            return
        assert time.monotonic() < deadline, "timed out waiting for the sidecar's health to change"
        await asyncio.sleep(0.05)  # poll interval, not synchronisation: the loop re-checks state


async def test_run_fails_with_exit_2_and_positions_on_a_broken_mapping(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    write_text(path, BROKEN_MAPPING)
    sock = short_socket(tmp_path)
    with sidecar_process(tmp_path, f"unix:{sock}") as sc:
        assert sc.process.wait(timeout=30) == EXIT_MAPPING
    err = sc.stderr_text()
    assert f"{path}:6:9: categories[1].id: must not start with a digit" in err
    assert not exists(sock)


async def test_sigterm_drains_an_in_flight_stream_then_exits_0(tmp_path: Path, mapping_path: Path) -> None:
    sock = short_socket(tmp_path)
    grace = 20.0
    with sidecar_process(tmp_path, f"unix:{sock}", grace=grace) as sc:
        async with grpc.aio.insecure_channel(f"unix:{sock}") as probe, grpc.aio.insecure_channel(f"unix:{sock}") as ch:
            # Every wait has a deadline: startup is bounded by it, not by a sleep.
            await wait_until(sc.process, probe, serving=True, deadline=time.monotonic() + 30)
            call = decision_pb2_grpc.DecisionServiceStub(ch).DecideStream(timeout=60)
            request = decision_pb2.DecideRequest(
                consent=decision_pb2.Consent(category_preferences={"C0002": True}),
                destinations=["amplitude", "google-ads"],
            )
            await call.write(request)
            first = await call.read()
            assert list(first.allowed) == ["amplitude"]  # the stream is in flight

            signalled = time.monotonic()
            sc.process.send_signal(signal.SIGTERM)
            # Health goes NOT_SERVING (or new RPCs are refused) once shutdown has begun...
            await wait_until(sc.process, probe, serving=False, deadline=signalled + 10)
            # ...while the in-flight stream keeps being answered until the client finishes it.
            for _ in range(3):
                await call.write(request)
                r = await call.read()
                assert list(r.blocked) == ["google-ads"]
            await call.done_writing()
            assert await call.read() == grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK

        code = await asyncio.to_thread(sc.process.wait, 15)
        elapsed = time.monotonic() - signalled
    assert code == EXIT_OK
    assert elapsed < grace  # the drain ended when the last RPC did, not at the grace deadline
    assert not exists(sock)
    events = {str(e.get("event")): e for e in sc.lines}
    started = events["sidecar started"]
    assert started["policy_generation"] == 1 and len(str(started["policy_digest"])) == 64
    assert started["listen"] == [f"unix:{sock}"]
    assert "shutting down" in events and "stopped" in events
    # The mapping's content is never logged.
    assert "Performance Cookies" not in sc.stderr_text()


async def test_sigterm_cuts_a_stream_that_outlives_the_grace_period(tmp_path: Path, mapping_path: Path) -> None:
    sock = short_socket(tmp_path)
    with sidecar_process(tmp_path, f"unix:{sock}", grace=0.5) as sc:
        async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
            await wait_until(sc.process, ch, serving=True, deadline=time.monotonic() + 30)
            call = decision_pb2_grpc.DecisionServiceStub(ch).DecideStream(timeout=60)
            await call.write(decision_pb2.DecideRequest(destinations=["amplitude"]))
            assert list((await call.read()).allowed) == ["amplitude"]
            sc.process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(sc.process.wait, 15)  # never finishing the stream
            assert code == EXIT_OK
            with pytest.raises(grpc.aio.AioRpcError):
                await asyncio.wait_for(call.read(), timeout=10)


async def test_a_second_sigterm_stops_draining_at_once(tmp_path: Path, mapping_path: Path) -> None:
    sock = short_socket(tmp_path)
    with sidecar_process(tmp_path, f"unix:{sock}", grace=60.0) as sc:
        async with grpc.aio.insecure_channel(f"unix:{sock}") as probe, grpc.aio.insecure_channel(f"unix:{sock}") as ch:
            await wait_until(sc.process, probe, serving=True, deadline=time.monotonic() + 30)
            call = decision_pb2_grpc.DecisionServiceStub(ch).DecideStream(timeout=120)
            await call.write(decision_pb2.DecideRequest(destinations=["amplitude"]))
            assert list((await call.read()).allowed) == ["amplitude"]
            sc.process.send_signal(signal.SIGTERM)
            await wait_until(sc.process, probe, serving=False, deadline=time.monotonic() + 10)
            sc.process.send_signal(signal.SIGTERM)  # the operator insists: abort the in-flight stream
            code = await asyncio.to_thread(sc.process.wait, 15)  # far below the 60 s grace period
            assert code == EXIT_OK
            with pytest.raises(grpc.aio.AioRpcError):
                await asyncio.wait_for(call.read(), timeout=10)
    events = [e.get("event") for e in sc.lines]
    assert "second signal: aborting in-flight RPCs" in events


# -- logging --------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "consent-sidecar"]:
        root.removeHandler(handler)


@pytest.mark.usefixtures("restore_logging")
def test_logs_are_json_lines_and_never_carry_tokens_or_consent() -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    log = logs.get_logger("sidecar.test", policy_generation=3)
    log.info("decided", authorization="Bearer s3cret", consent={"C0002": True}, destination="amplitude")
    log.debug("hidden at info")
    logging.getLogger("grpc").warning("from the stdlib")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["decided", "from the stdlib"]
    assert lines[0]["policy_generation"] == 3 and lines[0]["destination"] == "amplitude"
    assert "s3cret" not in out.getvalue() and "C0002" not in out.getvalue()
    assert lines[1]["level"] == "warning"


@pytest.mark.usefixtures("restore_logging")
def test_bad_log_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        logs.configure("loud", "json", stream=io.StringIO())
    with pytest.raises(ValueError, match="unknown log format"):
        logs.configure("info", "xml", stream=io.StringIO())


# -- TLS of the admin listener ---------------------------------------------------------------------


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates")
async def test_a_certificate_and_key_that_do_not_pair_are_a_tls_error_naming_both_before_anything_opens(
    tmp_path: Path, mapping_path: Path
) -> None:
    cert, _ = _self_signed(tmp_path, "one")
    _, other_key = _self_signed(tmp_path, "two")
    principals = tmp_path / "p.yaml"
    digest = hashlib.sha256(b"owner-token").hexdigest()
    principals.write_text(f"principals:\n  - id: a\n    role: owner\n    token_sha256: {digest}\n")
    config = ServeConfig(
        mappings=str(mapping_path), listen=("127.0.0.1:0",), admin_listen="127.0.0.1:0", principals=str(principals),
        admin_tls_cert=str(cert), admin_tls_key=str(other_key), audit_db=str(tmp_path / "audit.db"),
    )
    code, err = await serve_failing(config)
    assert code == EXIT_LISTEN
    assert "TLS configuration error" in err and str(cert) in err and str(other_key) in err
    assert "do not match" in err and "bind" not in err
    assert not exists(tmp_path / "audit.db")  # refused before anything was opened
