"""The write path never holds the event loop: Decide is answered while a change is validated and diffed,
and no full garbage collection runs in the middle of a mapping read.

Work that grows with the mapping (an admin edit's validation of the whole mapping, the diff of
a change into audit events) runs in a worker thread. Each test holds one such step (the real
function, wrapped to wait until released, bounded) and asks for a decision meanwhile, over
real gRPC against `serve()`: answered only if the held step is off the loop thread. On the
loop, the step would wait out its bound with nothing else running, and report it was never
released. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from consent.v1 import admin_pb2, decision_pb2, decision_pb2_grpc
from serving import BASE, OWNER, WAIT, Served, serving, until

from consent_sidecar.store import admin_edit, policy, writer
from consent_sidecar.store.collection import collection_paused

HOLD = 10.0  # seconds a held step waits for its release before going on regardless


class Held:
    """`fn`, but each call first waits (at most HOLD s) until `release` is set; `released` records whether it was."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.entered = threading.Event()
        self.release = threading.Event()
        self.released: list[bool] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        self.released.append(self.release.wait(HOLD))
        return self.fn(*args, **kwargs)


async def decided_while_held(sc: Served, held: Held) -> None:
    """Waits until `held` is entered, asks for a decision, then releases it."""
    assert await asyncio.to_thread(held.entered.wait, WAIT), "the held step never ran"
    try:
        stub = decision_pb2_grpc.DecisionServiceStub(sc.decision)  # type: ignore[no-untyped-call]
        r = await stub.Decide(decision_pb2.DecideRequest(destinations=["amplitude"]), timeout=WAIT)
        assert r.policy.generation == 1  # the change is not published while its step is held
    finally:
        held.release.set()


@pytest.mark.parametrize("step", ["apply_edit", "change_events"])
async def test_decide_is_answered_while_an_admin_write_prepares_its_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    held = Held(getattr(admin_edit, step))
    monkeypatch.setattr(admin_edit, step, held)
    async with serving(tmp_path) as sc:
        category = admin_pb2.Category(id="C0009", name="Held", destinations=["held-dest"])
        write = asyncio.ensure_future(sc.admin.CreateCategory(
            admin_pb2.CreateCategoryRequest(category=category), metadata=OWNER, timeout=WAIT))
        await decided_while_held(sc, held)
        await write
        assert held.released == [True], "the step ran on the loop thread: nothing else could run meanwhile"
        assert "held-dest" in await sc.known()


async def test_decide_is_answered_while_a_hand_edit_is_diffed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = Held(writer.change_events)
    monkeypatch.setattr(writer, "change_events", held)
    async with serving(tmp_path) as sc:
        sc.mapping.write_text(BASE.replace("[amplitude, mixpanel]", "[amplitude, mixpanel, hand-dest]"), "utf-8")
        await decided_while_held(sc, held)
        await until("the hand edit served", lambda: _serves(sc, "hand-dest"))
        assert held.released == [True], "the diff ran on the loop thread: nothing else could run meanwhile"


async def _serves(sc: Served, destination: str) -> bool:
    return destination in await sc.known()


# -- no full collection in the middle of a mapping read ----------------------------------------------
# A read builds millions of objects; a full collection midway walks them all holding the GIL, and the
# loop thread with it (store/collection.py). No timing: what is checked is that collection is paused.


def _spy(fn: Callable[..., Any], seen: list[bool]) -> Callable[..., Any]:
    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return fn(*args, **kwargs)

    return spy


async def test_an_admin_write_reads_the_mapping_with_collection_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(admin_edit, "load_mapping", _spy(admin_edit.load_mapping, seen))
    monkeypatch.setattr(admin_edit, "parse_mapping", _spy(admin_edit.parse_mapping, seen))
    assert gc.isenabled()
    async with serving(tmp_path) as sc:
        category = admin_pb2.Category(id="C0009", name="Paused", destinations=["paused-dest"])
        await sc.admin.CreateCategory(admin_pb2.CreateCategoryRequest(category=category), metadata=OWNER, timeout=WAIT)
        assert "paused-dest" in await sc.known()
    assert seen and not any(seen), seen  # the read, then the render's re-read
    assert gc.isenabled()  # and resumed after


async def test_a_hand_edit_is_loaded_with_collection_paused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(policy, "load_mapping_file", _spy(policy.load_mapping_file, seen))
    async with serving(tmp_path) as sc:
        sc.mapping.write_text(BASE.replace("[amplitude, mixpanel]", "[amplitude, mixpanel, hand-dest]"), "utf-8")
        await until("the hand edit served", lambda: _serves(sc, "hand-dest"))
    assert len(seen) >= 2 and not any(seen), seen  # the first load and the reload
    assert gc.isenabled()


def test_collection_resumes_when_the_last_overlapping_pause_ends() -> None:
    first, second = collection_paused(), collection_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # another read is still running
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_pause_never_enables_collection_someone_else_disabled() -> None:
    gc.disable()
    try:
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
