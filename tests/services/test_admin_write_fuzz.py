"""AdminService writes of arbitrary input: only documented codes, a server that keeps serving, a file that checks."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2, admin_pb2_grpc
from consent_core.mapping_file import load_mapping
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_sidecar.audit import verify
from consent_sidecar.cli import run_cli

from .admin_support import OWNER, WAIT, Admin, Category, Code, admin_sidecar, mask

# -- arbitrary input ---------------------------------------------------------------------------

DOCUMENTED = {
    Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS, Code.ABORTED, Code.FAILED_PRECONDITION,
}  # fmt: skip  # (an owner's write on a healthy disk; UNAVAILABLE/INTERNAL only when persisting fails)


class Background:
    """An admin sidecar on its own event loop thread, for synchronous clients (hypothesis drives them)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ready = threading.Event()
        self.admin: Admin | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced by the fixture
            self.error = e
            self.ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with admin_sidecar(self.directory) as admin:
            self.admin = admin
            self.ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=WAIT)


@pytest.fixture(scope="module")
def background() -> Iterator[Background]:
    with tempfile.TemporaryDirectory(prefix="cs-hyp-") as d:
        bg = Background(Path(d))
        bg.thread.start()
        assert bg.ready.wait(WAIT)
        if bg.error is not None:
            raise bg.error
        yield bg
        bg.stop()


_text = st.text(st.characters(codec="utf-8"), max_size=40)
_ids = st.one_of(st.sampled_from(["C0002", "C0004", "C0003", "C0099", "", "X1"]), _text)
_names = st.one_of(st.sampled_from(["Performance Cookies", "Targeting Cookies", "Functional Cookies", "N"]), _text)
_dests = st.lists(st.one_of(st.sampled_from(["amplitude", "braze", "x", "a/b", ""]), _text), max_size=6)
_category = st.builds(
    lambda i, n, d, e, s, t: Category(id=i, name=n, destinations=d, shadow=s, etag=t, **({} if e is None else
                                                                                      {"enabled": e})),
    _ids, _names, _dests, st.one_of(st.none(), st.booleans()), st.booleans(), _text,
)  # fmt: skip
_etag = st.one_of(st.just(""), _text)
_paths = st.lists(st.one_of(st.sampled_from(["id", "name", "destinations", "shadow", "enabled", ""]), _text),
                  max_size=4)  # fmt: skip
_writes = st.one_of(
    st.tuples(st.just("CreateCategory"), st.builds(lambda c: admin_pb2.CreateCategoryRequest(category=c), _category)),
    st.tuples(st.just("UpdateCategory"), st.builds(
        lambda i, c, p, t: admin_pb2.UpdateCategoryRequest(category_id=i, category=c, update_mask=mask(*p), etag=t),
        _ids, _category, _paths, _etag)),
    st.tuples(st.just("DisableCategory"), st.builds(
        lambda i, n, t: admin_pb2.DisableCategoryRequest(category_id=i, confirm_name=n, etag=t), _ids, _names, _etag)),
    st.tuples(st.just("EnableCategory"), st.builds(
        lambda i, t: admin_pb2.EnableCategoryRequest(category_id=i, etag=t), _ids, _etag)),
    st.tuples(st.just("DeleteCategory"), st.builds(
        lambda i, n, t: admin_pb2.DeleteCategoryRequest(category_id=i, confirm_name=n, etag=t), _ids, _names, _etag)),
)  # fmt: skip


@settings(max_examples=250, deadline=None)
@given(write=_writes)
def test_arbitrary_writes_get_documented_codes_and_the_server_keeps_serving(
    background: Background, write: tuple[str, Any]
) -> None:
    admin = background.admin
    assert admin is not None and admin.sidecar.admin_address is not None
    rpc, request_ = write
    before, generation = admin.path.read_bytes(), admin.store.current.generation
    with grpc.insecure_channel(admin.sidecar.admin_address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            getattr(stub, rpc)(request_, metadata=OWNER, timeout=10)
        except grpc.RpcError as e:
            assert e.details(), "every error carries a message"
            assert e.code() in DOCUMENTED, f"{rpc}: {e.code()} {e.details()}"
            assert (admin.path.read_bytes(), admin.store.current.generation) == (before, generation)
        listed = stub.ListCategories(admin_pb2.ListCategoriesRequest(), metadata=OWNER, timeout=10)
    assert len(listed.categories) == len(admin.store.current.index.mapping.categories)
    assert load_mapping(admin.path).mapping == admin.store.current.index.mapping


@pytest.mark.parametrize(
    ("cid", "name"),
    [
        ("C0009", "a\u00a0b"),  # (control characters such as DEL, tab or NEL are refused: test_hostile_input)
        ("C0009", "x\ufffe"),
        ("C0009", "two  spaces, \"quotes\" and 'single'"),
        ("C0009", "- dash: colon # hash"),
        ("C-09", "yes"),
        (":", "Colon"),
        ("C0009", "next\u2026line"),
    ],
)
async def test_an_owner_can_create_any_valid_id_and_name(admin: Admin, cid: str, name: str) -> None:
    created = await admin.call(
        "CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id=cid, name=name, destinations=["a"]))
    )
    assert (created.id, created.name) == (cid, name)


def test_after_arbitrary_writes_the_file_checks_and_the_trail_verifies(background: Background) -> None:
    admin = background.admin
    assert admin is not None
    assert run_cli(["check", str(admin.path)]) == 0
    assert verify(admin.audit.path).ok


# The README's owner session (now the `consent-sidecar categories` verbs) and the Python admin example
# (docs/pipeline-integration.md) are run by tests/test_docs.py.
