"""SIGTERM with calls in flight: those received before it complete; health NOT_SERVING; new calls get UNAVAILABLE.

Real `serve` processes. The first test keeps the server busy with large DecideBatch calls sent
as raw bytes (no client-side encoding delays their arrival): once one is answered the others
have arrived and wait in gRPC core behind it, which is exactly where a plain
`server.stop(grace)` cancels them; with `--workers 2` SIGTERM goes to the parent. The second
holds a stream open so that the drain is still under way while it looks.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from consent.v1 import decision_pb2, decision_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving import serve_process

from .support import poll

BATCH_ENTRIES = 10_000
BATCHES = 6
GRACE = 20.0
DECIDE_BATCH = "/consent.v1.DecisionService/DecideBatch"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def raw_batch(k: int) -> bytes:
    """A batch of distinct events (no memoised answers: each takes the server real work)."""
    requests = [
        decision_pb2.DecideRequest(
            segment_event=json.dumps({
                "type": "track", "event": f"e-{k}-{i}",
                "context": {"consent": {"categoryPreferences": {"C0002": i % 2 == 0, "C0004": True}}},
            }).encode(),
            destinations=["amplitude", "google-ads", "braze", "x"],
        )
        for i in range(BATCH_ENTRIES)
    ]
    return decision_pb2.DecideBatchRequest(requests=requests).SerializeToString()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_completes_every_call_received_before_it(tmp_path: Path, workers: int) -> None:
    if workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("needs SO_REUSEPORT")
    batches = [raw_batch(k) for k in range(BATCHES)]
    # Each batch holds a worker's loop for seconds (longer on a loaded host): a generous worker
    # timeout keeps the unresponsive-worker replacement (tested elsewhere) out of this drain test.
    with serve_process(tmp_path, "--workers", str(workers), "--grace-period", str(GRACE),
                       "--worker-timeout", "120") as sc:
        sc.wait_started()
        with grpc.insecure_channel(sc.tcp) as channel:
            call = channel.unary_unary(DECIDE_BATCH)
            first = threading.Event()
            futures = [call.future(b, timeout=120) for b in batches]
            for f in futures:
                f.add_done_callback(lambda _: first.set())
            assert first.wait(120)  # the server works through them one at a time: the others wait
            assert sum(not f.done() for f in futures) >= 2, "the server was too fast to have a backlog"
            signalled = time.monotonic()
            sc.process.send_signal(signal.SIGTERM)
            codes = []
            for f in futures:
                try:
                    f.result(timeout=GRACE + 30)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
        assert codes == [grpc.StatusCode.OK] * BATCHES
        assert all(decision_pb2.DecideBatchResponse.FromString(f.result()).responses for f in futures)
        assert sc.process.wait(GRACE + 10) == 0
        assert time.monotonic() - signalled < GRACE  # it ended when the last call did, not at the deadline


def test_health_turns_not_serving_and_new_calls_are_refused_while_the_drain_goes_on(tmp_path: Path) -> None:
    grant = decision_pb2.DecideRequest(
        consent=decision_pb2.Consent(category_preferences={"C0002": True}), destinations=["amplitude"],
    )
    with serve_process(tmp_path, "--grace-period", str(GRACE)) as sc:
        sc.wait_started()
        requests: list[decision_pb2.DecideRequest] = [grant]
        more = threading.Condition()

        def feed() -> Iterator[decision_pb2.DecideRequest]:
            for sent in itertools.count():
                with more:
                    more.wait_for(lambda sent=sent: len(requests) > sent, timeout=60)
                    if len(requests) <= sent or requests[sent] is None:
                        return
                    request = requests[sent]
                yield request

        with grpc.insecure_channel(sc.tcp) as channel:
            stream = decision_pb2_grpc.DecisionServiceStub(channel).DecideStream(feed(), timeout=120)
            assert list(next(stream).allowed) == ["amplitude"]  # in flight
            sc.process.send_signal(signal.SIGTERM)

            def draining() -> grpc.Channel | None:
                ch = grpc.insecure_channel(sc.tcp, options=[("grpc.use_local_subchannel_pool", 1)])
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
                if r.status == NOT_SERVING:
                    return ch
                ch.close()
                return None

            with poll(draining, timeout=GRACE) as fresh:
                with pytest.raises(grpc.RpcError) as refused:
                    decision_pb2_grpc.DecisionServiceStub(fresh).Decide(grant, timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "shutting down" in str(refused.value.details())
            with more:  # the stream received before SIGTERM is still answered...
                requests.append(grant)
                more.notify_all()
            assert list(next(stream).allowed) == ["amplitude"]
            with more:  # ...until its client ends it, which ends the drain
                requests.append(None)  # type: ignore[arg-type]
                more.notify_all()
            assert list(stream) == []
            # The client's next call, made the moment its last answer came, is refused cleanly too
            # (UNAVAILABLE, which clients retry elsewhere), not cancelled by a server that stops.
            with pytest.raises(grpc.RpcError) as last:
                decision_pb2_grpc.DecisionServiceStub(channel).Decide(grant, timeout=10)
            assert last.value.code() == grpc.StatusCode.UNAVAILABLE
        assert sc.process.wait(GRACE) == 0
