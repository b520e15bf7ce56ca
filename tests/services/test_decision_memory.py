"""DecisionService's per-snapshot memos: bounded in bytes under hostile traffic, and out of the way
of traffic that does not repeat. The handlers are called in-process (no network)."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from consent.v1 import decision_pb2
from consent_core.index import DEFAULT_MEMO_BYTES, compile
from consent_core.limits import Limits
from consent_core.mapping_file import load_mapping
from samples import SAMPLE_MAPPING

from consent_sidecar.services import decision
from consent_sidecar.store.policy import PolicyStore

Req = decision_pb2.DecideRequest


class _Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()


def _service(tmp_path: Path, memo_bytes: int = DEFAULT_MEMO_BYTES) -> decision.DecisionService:
    path = tmp_path / "mappings.yaml"
    path.write_text(SAMPLE_MAPPING)
    store = PolicyStore()
    store.publish(compile(load_mapping(str(path)).mapping, memo_bytes=memo_bytes))
    return decision.DecisionService(store, Limits())


def _batch(requests: list[Req]) -> bytes:
    return decision_pb2.DecideBatchRequest(requests=requests).SerializeToString()


async def test_requests_that_never_repeat_turn_the_memos_off_and_repeats_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The memos serve the Python batch path (the native one, when built, takes plain batches first
    # unless metrics or the decision log are on): this is about that path.
    monkeypatch.setattr(decision, "_native_batch", None)
    service = _service(tmp_path)
    ctx: Any = _Context()
    consent = decision_pb2.Consent(category_preferences={"C0002": True})
    n = 0
    for _ in range(12):  # 1,200 distinct requests
        batch = [Req(consent=consent, destinations=[f"tool-{n + i}", "amplitude"]) for i in range(100)]
        n += 100
        await service.decide_batch_bytes(_batch(batch), ctx)
    st = service._served()
    assert st.raw.off
    assert not st.consent.off  # one consent object again and again: its memo pays
    same = _batch([Req(consent=consent, destinations=[f"tool-{i}", "amplitude"]) for i in range(100)])
    for _ in range(80):  # the same batch again and again: sampled batches hit, the memo turns on
        await service.decide_batch_bytes(same, ctx)
    assert not st.raw.off
    hits = st.raw.hits
    await service.decide_batch_bytes(same, ctx)  # on: every call is served from the memo
    assert st.raw.hits == hits + 100


@pytest.mark.parametrize("path", ["python", "native"])
async def test_many_distinct_large_consent_maps_keep_the_memos_within_their_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Hostile traffic: ~60 KB consent objects (just under what one entry may weigh), each one new.

    8,190 of them took the sidecar from 53 to 596 MB when the consent memo was bounded in entries.
    The Python path keeps them in its consent memo (which must evict); the native one keeps nothing."""
    if path == "python":
        monkeypatch.setattr(decision, "_native_batch", None)
        monkeypatch.setattr(decision, "_native_request", None)
    elif decision._native_request is None:
        pytest.skip("consent_core._native not built or CONSENT_CORE_PURE=1")
    budget = 2 << 20  # the memos' generations: 256 KiB each
    service = _service(tmp_path, memo_bytes=budget)
    ctx: Any = _Context()
    filler = {f"unknown-{j:05d}-{'x' * 12}": j % 2 == 0 for j in range(2_000)}  # ~60 KB encoded
    assert 50 << 10 < decision_pb2.Consent(category_preferences=filler).ByteSize() < 64 << 10
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(300):  # ~18 MB of consent objects in all
            consent = decision_pb2.Consent(category_preferences={**filler, f"nonce-{i}": True})
            unary = Req(consent=consent, destinations=["amplitude", f"t{i}"]).SerializeToString()
            await service.decide_bytes(unary, ctx)
            await service.decide_batch_bytes(_batch([Req(consent=consent, destinations=["google-ads"])] * 3), ctx)
        del consent, unary
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    st = service._served()
    for stats in (*st.memo_stats(), st.index.memo_stats()):
        assert stats.bytes <= stats.budget
    if path == "python":
        assert st.consent.evictions > 0
    assert retained < 3 * budget  # coarse: what the memos may hold, plus slack; 18 MB went through
