"""The one gRPC server builder: health and reflection on every server, message limits, binding and its failures."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from consent_core.limits import Limits
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from consent_sidecar.config import ServeConfig
from consent_sidecar.process.addresses import parse_address
from consent_sidecar.process.grpc_server import GrpcServer, ListenError, server_options

if TYPE_CHECKING:
    from conftest import StartSidecar

DECISION = "consent.v1.DecisionService"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
CONFIG = ServeConfig(mappings="mappings.yaml")


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    r = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(r.status)


# -- health and reflection, on every listener -----------------------------------------------


async def test_health_is_serving_overall_and_for_the_decision_service(start_sidecar: StartSidecar) -> None:
    async with start_sidecar(admin=True) as sc:
        for ch in (sc.tcp, sc.unix):
            assert await health_status(ch) == SERVING
            assert await health_status(ch, DECISION) == SERVING
        assert sc.admin is not None
        assert await health_status(sc.admin) == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:  # not served there
            await health_status(sc.admin, DECISION)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def reflect(address: str) -> tuple[list[str], list[str], list[str]]:
    """(services, DecisionService methods, allowed from a Decide call), all through reflection alone."""
    with grpc.insecure_channel(address) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = sorted(db.get_services())
        if DECISION not in services:
            return services, [], []
        pool = descriptor_pool.DescriptorPool(db)
        service = pool.FindServiceByName(DECISION)
        methods = [m.name for m in service.methods]
        # Call Decide with message classes built from the reflected descriptors: no generated code.
        method = service.methods_by_name["Decide"]
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        call = ch.unary_unary(
            f"/{DECISION}/Decide",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )
        response = call(request_cls(destinations=["amplitude", "google-ads"]), timeout=5)
        return services, methods, list(response.allowed)


async def test_reflection_lists_the_services_actually_served(start_sidecar: StartSidecar) -> None:
    async with start_sidecar(admin=True) as sc:
        # The sync reflection client blocks: run it off this loop, which is serving.
        services, methods, allowed = await asyncio.to_thread(reflect, sc.tcp_address)
        assert services == sorted([DECISION, HEALTH, REFLECTION])
        assert methods == ["Decide", "DecideBatch", "DecideStream"]
        assert allowed == ["amplitude", "google-ads"]
        services, _, _ = await asyncio.to_thread(reflect, sc.unix_address)
        assert DECISION in services
        assert sc.sidecar.admin_address is not None
        admin_services, _, _ = await asyncio.to_thread(reflect, sc.sidecar.admin_address)
        assert admin_services == sorted(["consent.v1.AdminService", HEALTH, REFLECTION])


async def test_message_limit_applies_to_health_too(start_sidecar: StartSidecar) -> None:
    # The limit is per server: a huge health request is refused like any other message.
    async with start_sidecar(limits=Limits(max_message_bytes=1024)) as sc:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health_status(sc.tcp, "x" * 4096)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await health_status(sc.tcp) == SERVING


# -- options and binding ---------------------------------------------------------------------


def test_options_carry_the_limits_and_turn_reuseport_on_only_when_asked() -> None:
    config = ServeConfig(
        mappings="m.yaml", limits=Limits(max_message_bytes=1234), max_connection_idle=2.5, max_concurrent_streams=7,
    )
    assert dict(server_options(config)) == {
        "grpc.max_receive_message_length": 1234,
        "grpc.max_send_message_length": 1234,
        "grpc.max_connection_idle_ms": 2500,
        "grpc.max_concurrent_streams": 7,
        "grpc.so_reuseport": 0,
    }
    assert dict(server_options(config, reuseport=True))["grpc.so_reuseport"] == 1


async def test_a_taken_port_names_the_listener_and_the_operating_systems_reason() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = GrpcServer("worker 3", [parse_address(f"127.0.0.1:{port}")], [], CONFIG)
        try:
            with pytest.raises(ListenError, match=rf"^cannot listen on 127\.0\.0\.1:{port} \(worker 3\): .*in use"):
                server.bind()
        finally:
            await server.stop(None)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
async def test_reuseport_servers_share_a_port_that_a_plain_server_cannot_take() -> None:
    first = GrpcServer("worker 0", [parse_address("127.0.0.1:0")], [], CONFIG, reuseport=True)
    first.bind()
    [address] = first.bound
    second = GrpcServer("worker 1", [parse_address(address)], [], CONFIG, reuseport=True)
    plain = GrpcServer("decision", [parse_address(address)], [], CONFIG)
    try:
        second.bind()  # as the --workers processes do
        assert second.bound == [address]
        with pytest.raises(ListenError, match=r"\(decision\): .*in use"):
            plain.bind()  # as a second sidecar on the same port would
        await first.start()
        await second.start()
        async with grpc.aio.insecure_channel(address) as channel:
            assert await health_status(channel) == SERVING
    finally:
        for server in (first, second, plain):
            await server.stop(None)


async def test_stop_marks_nothing_serving_first_and_removes_its_socket_file() -> None:
    with tempfile.TemporaryDirectory(prefix="cs-") as d:  # short: AF_UNIX paths are limited to ~107 bytes
        path = Path(d) / "g.sock"
        server = GrpcServer("decision", [parse_address(f"unix:{path}")], [], CONFIG)
        server.bind()
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
                assert await health_status(channel) == SERVING
                await server.enter_graceful_shutdown()
                assert await health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            await server.stop(None)
        assert not path.exists()


# -- idle connections and streams per connection, on every listener ----------------------------


async def wait_connectivity(channel: grpc.aio.Channel, state: grpc.ChannelConnectivity, within: float) -> None:
    """Waits (bounded) until the channel reaches `state` without asking it to connect."""
    async with asyncio.timeout(within):
        while (now := channel.get_state(try_to_connect=False)) != state:
            await channel.wait_for_state_change(now)


async def test_idle_connections_are_closed_on_every_listener(start_sidecar: StartSidecar) -> None:
    async with start_sidecar(admin=True, max_connection_idle=0.5) as sc:
        assert sc.admin is not None
        for ch in (sc.tcp, sc.unix, sc.admin):
            assert await health_status(ch) == SERVING
            assert ch.get_state() == grpc.ChannelConnectivity.READY
            # The server closes it (GOAWAY) once no call has run for 0.5 s; the client goes idle.
            await wait_connectivity(ch, grpc.ChannelConnectivity.IDLE, within=10)
            assert await health_status(ch) == SERVING  # and simply reconnects for the next call


async def test_concurrent_streams_per_connection_are_capped_on_every_listener(start_sidecar: StartSidecar) -> None:
    async with start_sidecar(admin=True, max_concurrent_streams=2) as sc:
        assert sc.admin is not None
        for ch in (sc.tcp, sc.admin):
            health = health_pb2_grpc.HealthStub(ch)
            request = health_pb2.HealthCheckRequest()
            open_streams = [health.Watch(request, timeout=30) for _ in range(2)]
            for stream in open_streams:
                assert (await stream.read()).status == SERVING  # two streams run on the one connection
            third = health.Watch(request, timeout=30)
            read = asyncio.ensure_future(third.read())
            done, _ = await asyncio.wait([read], timeout=1.0)
            assert not done, "a third concurrent stream ran on a connection capped at two"
            open_streams[0].cancel()  # a stream ends: the waiting one starts
            assert (await asyncio.wait_for(read, timeout=10)).status == SERVING
            for stream in (open_streams[1], third):
                stream.cancel()
