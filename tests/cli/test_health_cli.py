"""`consent-sidecar health`: exit 0 only for SERVING, one clear line and exit 1 for anything else, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from consent_sidecar import cli
from consent_sidecar.cli.health import HEALTH_TIMEOUT

if TYPE_CHECKING:
    from conftest import RunningSidecar


async def health_cli(*argv: str, env: dict[str, str] | None = None) -> int:
    """The verb in a thread: it blocks on a sync channel while this test's loop serves the sidecar."""
    return await asyncio.to_thread(cli.run_cli, ["health", *argv], env or {})


@contextlib.asynccontextmanager
async def bare_server(status: int | None) -> AsyncIterator[str]:
    """A grpc.aio server on a free port: health answering `status`, or no health service at all (None)."""
    server = grpc.aio.server()
    if status is not None:
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        await servicer.set("", status)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_a_serving_sidecar_passes_over_tcp_and_unix(
    sidecar: RunningSidecar, transport: str, capsys: pytest.CaptureFixture[str]
) -> None:
    address = sidecar.tcp_address if transport == "tcp" else sidecar.unix_address
    assert await health_cli("--address", address) == 0
    out, err = capsys.readouterr()
    assert out == f"{address}: SERVING\n"
    assert err == ""


async def test_the_address_comes_from_its_variable(sidecar: RunningSidecar) -> None:
    assert await health_cli(env={"CONSENT_SIDECAR_ADDRESS": sidecar.tcp_address}) == 0


async def test_not_serving_fails_naming_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    async with bare_server(health_pb2.HealthCheckResponse.NOT_SERVING) as address:
        assert await health_cli("--address", address) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"consent-sidecar health: {address}: NOT_SERVING (starting, draining or unhealthy)\n"


async def test_a_draining_sidecar_is_not_serving(sidecar: RunningSidecar, capsys: pytest.CaptureFixture[str]) -> None:
    # What SIGTERM does first: health NOT_SERVING everywhere, so load balancers and probes stop sending.
    for listener in sidecar.sidecar._listeners:
        await listener.health.enter_graceful_shutdown()
    assert await health_cli("--address", sidecar.tcp_address) == 1
    assert "NOT_SERVING" in capsys.readouterr().err


async def test_nothing_listening_fails_quickly_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert await health_cli("--address", address, "--timeout", "5") == 1
    assert time.monotonic() - started < 4  # refused at once, not after the timeout
    err = capsys.readouterr().err
    assert err.startswith(f"consent-sidecar health: {address}: cannot reach it: ")
    assert "\n" not in err.rstrip("\n") and "Traceback" not in err


async def test_a_missing_unix_socket_fails_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await health_cli("--address", f"unix:{tmp_path}/nope.sock", "--timeout", "2") == 1
    assert "cannot reach it" in capsys.readouterr().err


async def test_a_silent_peer_fails_within_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    # Accepts TCP connections (the kernel's backlog) but never speaks HTTP/2.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        assert await health_cli("--address", address, "--timeout", "0.5") == 1
        elapsed = time.monotonic() - started
    assert elapsed < 3
    err = capsys.readouterr().err
    assert err.startswith(f"consent-sidecar health: {address}: ")
    assert "0.5s" in err or "cannot reach it" in err


async def test_a_server_without_the_health_service_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    async with bare_server(None) as address:
        assert await health_cli("--address", address) == 1
    assert "does not serve grpc.health.v1.Health" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--address", "nowhere"], "argument --address: invalid address 'nowhere'"),
        (["--timeout", "0"], "argument --timeout: invalid duration '0'"),
        (["--timeout", "soon"], "argument --timeout: invalid duration 'soon'"),
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run_cli(["health", *argv], {}) == 2
    assert needle in capsys.readouterr().err


def test_flags_have_variables_defaults_and_help() -> None:
    ref = {f.flag: f for f in cli.flag_reference() if f.verb == "health"}
    assert set(ref) == {"--address", "--timeout"}
    assert (ref["--address"].env, ref["--address"].default) == ("CONSENT_SIDECAR_ADDRESS", "127.0.0.1:50051")
    assert (ref["--timeout"].env, ref["--timeout"].default) == ("CONSENT_SIDECAR_TIMEOUT", HEALTH_TIMEOUT)
    assert all(f.help for f in ref.values())
