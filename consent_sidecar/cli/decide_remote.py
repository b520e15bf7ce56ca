"""`consent-sidecar decide --address ADDR`: the local `decide`, asked of a running sidecar's DecisionService.

Sends one DecideRequest (the `--consent` object, or the `--event` file as `segment_event`) to a
`--listen` address, no token, and prints the same JSON as the local verb. A refusal is
`CODE: message` on stderr and exit 1 (consent_sidecar.cli.connection's wording). Must never
need a token nor retry.
"""

from __future__ import annotations

import argparse
import sys

from consent_sidecar.cli import connection
from consent_sidecar.cli.local import print_decision

__all__ = ["run_decide_remote"]


def run_decide_remote(ns: argparse.Namespace, event: bytes | None) -> int:
    import grpc
    from consent.v1 import decision_pb2, decision_pb2_grpc

    request = decision_pb2.DecideRequest(destinations=ns.destinations, explain=ns.explain)
    if event is not None:
        request.segment_event = event
    elif ns.consent is not None:
        request.consent.SetInParent()  # set even when empty: the event carries a consent object
        request.consent.category_preferences.update(ns.consent)
    with grpc.insecure_channel(ns.address) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            answer = stub.Decide(request, timeout=connection.ADMIN_TIMEOUT)
        except grpc.RpcError as e:
            print(connection.refusal(e), file=sys.stderr)
            return connection.EXIT_REFUSED
    reason = decision_pb2.Reason
    decisions: list[dict[str, object]] = [
        {
            "destination": d.destination, "allowed": d.allowed, "reason": reason.Name(d.reason),
            "required_categories": list(d.required_categories), "missing_categories": list(d.missing_categories),
            "shadow_missing_categories": list(d.shadow_missing_categories),
        }
        for d in answer.decisions
    ] if ns.explain else []
    print_decision(list(answer.allowed), list(answer.blocked), decisions)
    return 0
