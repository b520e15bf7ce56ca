"""The floor: an empty-handler grpc.aio DecisionService on the same proto and server options.

Decide returns an empty DecideResponse, DecideBatch one empty DecideResponse per entry, and
DecideStream one empty response per request. What it costs is gRPC + protobuf + asyncio alone:
the sidecar cannot beat it, so each sidecar figure is reported as a ratio to it.

    python -m bench.floor --listen unix:/tmp/floor.sock --listen 127.0.0.1:50099
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import grpc
import grpc.aio
from consent.v1 import decision_pb2, decision_pb2_grpc

__all__ = ["FloorServicer", "main"]

MAX_MESSAGE_BYTES = 4 << 20  # as the sidecar's default limit


class FloorServicer(decision_pb2_grpc.DecisionServiceServicer):
    async def Decide(
        self, request: decision_pb2.DecideRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> decision_pb2.DecideResponse:
        return decision_pb2.DecideResponse()

    async def DecideBatch(
        self, request: decision_pb2.DecideBatchRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> decision_pb2.DecideBatchResponse:
        response = decision_pb2.DecideBatchResponse()
        for _ in request.requests:
            response.responses.add()
        return response

    async def DecideStream(
        self,
        request_iterator: AsyncIterator[decision_pb2.DecideRequest],
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[decision_pb2.DecideResponse]:
        async for _ in request_iterator:
            yield decision_pb2.DecideResponse()


async def serve(addresses: list[str]) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    decision_pb2_grpc.add_DecisionServiceServicer_to_server(FloorServicer(), server)  # type: ignore[no-untyped-call]
    for address in addresses:
        if server.add_insecure_port(address) == 0 and not address.startswith("unix:"):
            raise SystemExit(f"floor: cannot listen on {address}")
    await server.start()
    print("floor: serving on " + " ".join(addresses), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", action="append", required=True, help="host:port or unix:/path; repeatable")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
