"""(j) How soon a running sidecar refuses a removed token: `principals remove` -> first UNAUTHENTICATED.

Starts `consent-sidecar serve` with an admin listener, then N times: `principals add` a member,
wait until its token is accepted, `principals remove` it, and time from the remove command's
return to the first GetPolicyStatus answered UNAUTHENTICATED (polling every 5 ms). Reports
p50, p90 and max. The watcher's debounce (100 ms) and settle step dominate.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from consent.v1 import admin_pb2, admin_pb2_grpc

MAPPINGS = Path(__file__).resolve().parent.parent / "examples" / "mappings.yaml"
CLI = str(Path(sys.executable).parent / "consent-sidecar")


def _accepted(stub: admin_pb2_grpc.AdminServiceStub, token: str) -> bool:
    try:
        stub.GetPolicyStatus(admin_pb2.GetPolicyStatusRequest(), metadata=[("authorization", f"Bearer {token}")],
                             timeout=5)
        return True
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAUTHENTICATED:  # type: ignore[attr-defined]
            raise
        return False


def _until(predicate: object, limit: float = 30.0) -> float:
    t0 = time.perf_counter()
    while not predicate():  # type: ignore[operator]
        if time.perf_counter() - t0 > limit:
            raise TimeoutError("no change within 30 s")
        time.sleep(0.005)
    return time.perf_counter() - t0


def run(runs: int = 20) -> list[float]:
    """Seconds from `principals remove` returning to the first refusal, one per run."""
    with tempfile.TemporaryDirectory(prefix="bench-principals-") as d:
        principals = Path(d) / "principals.yaml"
        subprocess.run([CLI, "principals", "add", "--principals", str(principals), "--id", "owner", "--role", "owner"],
                       check=True, capture_output=True)
        admin = f"unix:{d}/a.sock"
        serve = subprocess.Popen(
            [CLI, "serve", "--mappings", str(MAPPINGS), "--listen", f"unix:{d}/d.sock", "--admin-listen", admin,
             "--principals", str(principals), "--audit-db", f"{d}/audit.db", "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        out = []
        try:
            with grpc.insecure_channel(admin) as channel:
                stub = admin_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
                for i in range(runs):
                    add = [CLI, "principals", "add", "--principals", str(principals), "--id", f"m{i}", "--role",
                           "member"]
                    token = subprocess.run(add, check=True, capture_output=True, text=True).stdout.strip()
                    _until(lambda token=token: _try(stub, token))
                    subprocess.run([CLI, "principals", "remove", "--principals", str(principals), "--id", f"m{i}"],
                                   check=True, capture_output=True)
                    out.append(_until(lambda token=token: not _accepted(stub, token)))
        finally:
            serve.terminate()
            serve.wait(30)
        return out


def _try(stub: admin_pb2_grpc.AdminServiceStub, token: str) -> bool:
    try:
        return _accepted(stub, token)
    except grpc.RpcError:  # not listening yet
        return False


def format_result(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return (f"principals remove -> first UNAUTHENTICATED over {len(ms)} runs: "
            f"p50 {statistics.median(ms):.0f} ms, p90 {p90:.0f} ms, max {ms[-1]:.0f} ms")


if __name__ == "__main__":
    print(format_result(run()))
