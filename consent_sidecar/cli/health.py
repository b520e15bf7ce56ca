"""`consent-sidecar health`: grpc.health.v1 Check against a running sidecar; exit 0 only when SERVING.

One clear line and exit 1 for anything else (unreachable, not serving, not a sidecar), bounded
by `--timeout`, connecting included. Must never retry past the timeout nor need a token.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final

from consent_sidecar.cli import values
from consent_sidecar.cli.flags import PROG, Verbs, verb

__all__ = ["HEALTH_ADDRESS", "HEALTH_TIMEOUT", "register", "run_health"]

HEALTH_ADDRESS: Final = "127.0.0.1:50051"  # `health` asks here unless --address says otherwise
HEALTH_TIMEOUT: Final = 3.0  # seconds `health` waits for an answer, connecting included


def register(verbs: Verbs) -> None:
    p = verb(verbs, "health", run_health,
             "ask a running sidecar's grpc.health.v1 Check; exit 0 only when it answers SERVING")
    p.add_argument("--address", type=values.address, default=HEALTH_ADDRESS, metavar="ADDR",
                   help="the sidecar's address, host:port or unix:/path (plaintext: a --listen address)")
    p.add_argument("--timeout", type=values.positive_seconds, default=HEALTH_TIMEOUT, metavar="SECONDS",
                   help="give up (exit 1) when no answer comes within this many seconds, connecting included")


def run_health(ns: argparse.Namespace) -> int:
    # Imported here: only this verb and serve need gRPC.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address: str = ns.address
    timeout: float = ns.timeout
    status_names = health_pb2.HealthCheckResponse.ServingStatus
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            details = (e.details() if isinstance(e, grpc.Call) else None) or str(e)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                why = f"no answer within {timeout:g}s (--timeout)"
            elif code == grpc.StatusCode.UNAVAILABLE:
                why = f"cannot reach it: {details}"
            elif code == grpc.StatusCode.UNIMPLEMENTED:
                why = "it does not serve grpc.health.v1.Health (not a consent sidecar address?)"
            else:
                why = f"{code.name if code is not None else 'error'}: {details}"
            print(f"{PROG} health: {address}: {why}", file=sys.stderr)
            return 1
    name = status_names.Name(answer.status) if answer.status in status_names.values() else str(answer.status)
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"{PROG} health: {address}: {name} (starting, draining or unhealthy)", file=sys.stderr)
        return 1
    print(f"{address}: {name}")
    return 0
