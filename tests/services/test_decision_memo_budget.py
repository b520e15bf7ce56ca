"""The memo budget as an operator sets it (`--memo-bytes`) and sees it (consent_sidecar_memo_* metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from consent.v1 import decision_pb2
from consent_core.index import DEFAULT_MEMO_BYTES
from consent_core.limits import Limits
from prometheus_client import generate_latest
from samples import SAMPLE_MAPPING

from consent_sidecar import cli
from consent_sidecar.observe.metrics import Metrics, Recorder
from consent_sidecar.services import decision
from consent_sidecar.store.policy import PolicyStore

if TYPE_CHECKING:
    from conftest import StartSidecar

Req = decision_pb2.DecideRequest


class _Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()


def _metric(metrics: Metrics, name: str) -> float:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_the_memo_bytes_flag_reads_sizes_and_defaults_to_the_cores_budget() -> None:
    flag = {(f.verb, f.flag): f for f in cli.flag_reference()}[("serve", "--memo-bytes")]
    assert (flag.default, flag.env) == (DEFAULT_MEMO_BYTES, "CONSENT_SIDECAR_MEMO_BYTES")
    parser = cli.build_parser()
    for value, size in (("8MiB", 8 << 20), ("65536", 65536), ("0", 0), ("1g", 1 << 30)):
        assert parser.parse_args(["serve", "--mappings", "m", "--memo-bytes", value]).memo_bytes == size


async def test_every_snapshot_the_server_compiles_gets_the_configured_budget(
    start_sidecar: StartSidecar, tmp_path: Path
) -> None:
    async with start_sidecar(memo_bytes=1 << 20) as sc:
        assert sc.store.current.index.memo_bytes == 1 << 20
        sc.mapping_path.write_text(SAMPLE_MAPPING.replace("Targeting Cookies", "Ads"))
        result = await sc.store.reload_async()
        assert result.changed and sc.store.current.index.memo_bytes == 1 << 20


async def test_memo_bytes_and_evictions_are_exported(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text(SAMPLE_MAPPING)
    store = PolicyStore(memo_bytes=64 << 10)  # small: distinct requests evict soon
    store.load_initial(str(path))
    metrics = Metrics()
    recorder = Recorder(metrics)
    service = decision.DecisionService(store, Limits(), recorder=recorder)
    ctx: Any = _Context()
    consent = decision_pb2.Consent(category_preferences={"C0002": True})
    for i in range(3_000):
        await service.decide_bytes(Req(consent=consent, destinations=[f"tool-{i % 1500}", "amplitude"])
                                   .SerializeToString(), ctx)  # fmt: skip
    recorder.flush()
    held = _metric(metrics, "consent_sidecar_memo_bytes")
    budget = _metric(metrics, "consent_sidecar_memo_budget_bytes")
    evicted = _metric(metrics, "consent_sidecar_memo_evictions_total")
    assert 0 < held <= budget
    assert budget == (64 << 10) + 3 * 2 * ((64 << 10) // 8)  # the index's, and the answers' 3 memos of 2 generations
    assert evicted > 0
    recorder.flush()
    assert _metric(metrics, "consent_sidecar_memo_evictions_total") == evicted  # counted once

    path.write_text(SAMPLE_MAPPING.replace("Targeting Cookies", "Ads"))
    assert (await store.reload_async()).changed  # a new snapshot: new memos, counted from zero
    await service.decide_bytes(Req(destinations=["amplitude"]).SerializeToString(), ctx)
    recorder.flush()
    assert _metric(metrics, "consent_sidecar_memo_evictions_total") == evicted
    assert _metric(metrics, "consent_sidecar_memo_bytes") < held
