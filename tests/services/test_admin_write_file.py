"""AdminService writes and the mapping file: a persistence failure changes nothing, the watcher does not
republish the sidecar's own writes, and every comment survives many edits."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2
from consent_core import errors
from consent_core.mapping_file import load_mapping, saver

from consent_sidecar.audit import AuditAction, verify
from consent_sidecar.cli import run_cli
from consent_sidecar.store.policy import ReloadResult
from consent_sidecar.store.watch import MappingWatcher

from .admin_support import MAPPING, OWNER, WAIT, A, Admin, Category, Code, expect, mask

# -- persistence failures change nothing -----------------------------------------------------


def _refuse(error: int) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(error, "injected: " + errno.errorcode[error])

    return refuse


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        # The directory refuses the temp file (a read-only volume; root ignores chmod, so injected).
        ("mkstemp", errno.EROFS, "injected: EROFS"),
        # The disk fails the fsync of the new content.
        ("fsync", errno.EIO, "injected: EIO"),
        # The rename fails (e.g. the file became a mount point).
        ("replace", errno.EBUSY, "injected: EBUSY"),
    ],
)
async def test_a_write_that_cannot_be_persisted_is_unavailable_and_changes_nothing(
    admin: Admin, monkeypatch: pytest.MonkeyPatch, target: str, error: int, message: str
) -> None:
    before = admin.path.read_bytes()
    snap = admin.store.current
    if target == "mkstemp":
        monkeypatch.setattr(saver.tempfile, "mkstemp", _refuse(error))
    else:
        real = getattr(saver.os, target)

        def fail_on_mapping(*args: Any, **kwargs: Any) -> Any:  # SQLite's own fsyncs do not come through here
            if target == "replace" or _is_temp_of(args[0], admin.path):
                raise OSError(error, "injected: " + errno.errorcode[error])
            return real(*args, **kwargs)

        monkeypatch.setattr(saver.os, target, fail_on_mapping)
    await expect(
        Code.UNAVAILABLE,
        admin.call("DisableCategory",
                   admin_pb2.DisableCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")),
        rf"^cannot write the mapping file .*mappings\.yaml: ({message}); nothing changed$",
    )  # fmt: skip
    monkeypatch.undo()
    assert admin.path.read_bytes() == before
    assert sorted(p.name for p in admin.path.parent.iterdir() if p.name.startswith(".mappings")) == []
    assert admin.store.current is snap
    assert admin.last_sequence() == 1
    assert (await admin.get("C0002")).enabled
    # and the next write goes through
    off = await admin.call(
        "DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")
    )
    assert not off.enabled


def _is_temp_of(fd: Any, path: Path) -> bool:
    """True for a file descriptor of atomic_write's temp file next to `path`."""
    try:
        target = Path(f"/proc/self/fd/{fd}").resolve()
    except (OSError, TypeError):
        return False
    return target.parent == path.parent.resolve() and target.name.startswith(f".{path.name}.")


async def test_an_audit_failure_after_the_write_restores_the_file_and_publishes_nothing(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = admin.path.read_bytes()
    snap = admin.store.current

    def refuse(entries: Any) -> Any:
        raise errors.Unavailable("audit log: injected: database is locked")

    monkeypatch.setattr(admin.audit, "append", refuse)
    await expect(
        Code.UNAVAILABLE,
        admin.call("DeleteCategory",
                   admin_pb2.DeleteCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")),
        r"^cannot record the edit in the audit log \(audit log: injected: database is locked\); it was not "
        r"applied: the mapping file and the serving policy are as before$",
    )  # fmt: skip
    monkeypatch.undo()
    assert admin.path.read_bytes() == before
    assert admin.store.current is snap  # never published, not even for a moment: the generation did not move
    assert admin.last_sequence() == 1
    assert (await admin.get("C0002")).name == "Performance Cookies"
    await admin.call(
        "DeleteCategory", admin_pb2.DeleteCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")
    )
    assert admin.events(after=1)[0].action == A.CATEGORY_DELETED
    assert verify(admin.audit.path).ok


async def test_a_write_whose_caller_has_gone_is_not_applied_after_its_deadline(admin: Admin) -> None:
    before = admin.path.read_bytes()
    request = admin_pb2.CreateCategoryRequest(category=Category(id="C0009", name="Late", destinations=["late"]))
    async with admin.writer._lock:  # the write path is busy (a slow reload, a stuck disk): the call queues
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await admin.stub.CreateCategory(request, metadata=OWNER, timeout=0.5)
        assert info.value.code() == Code.DEADLINE_EXCEEDED
    await asyncio.wait_for(admin.writer.aclose(), WAIT)  # the queued write got the lock and gave up
    assert admin.path.read_bytes() == before
    assert admin.store.current.generation == 1
    assert admin.store.current.index.mapping.category("C0009") is None
    assert admin.last_sequence() == 1


# -- the watcher and the sidecar's own writes -----------------------------------------------


async def test_own_writes_are_neither_published_nor_audited_again_by_the_watcher(admin: Admin) -> None:
    results: list[ReloadResult] = []
    changed = asyncio.Condition()

    def on_result(result: ReloadResult) -> None:
        results.append(result)

        async def notify() -> None:
            async with changed:
                changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    watcher = MappingWatcher(admin.writer, str(admin.path), debounce_ms=20, step_ms=5, settle_ms=5, retry_ms=20,
                             on_result=on_result)  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await asyncio.wait_for(watcher.watching.wait(), WAIT)
        writes = 6
        for i in range(writes):
            await admin.call(
                "UpdateCategory",
                admin_pb2.UpdateCategoryRequest(
                    category_id="C0002", category=Category(destinations=["amplitude", f"d{i}"]),
                    update_mask=mask("destinations"),
                ),
            )  # fmt: skip
            await asyncio.sleep(0.05)  # let the watcher see some writes one by one (not a synchronisation)
        assert admin.store.current.generation == 1 + writes
        # A hand edit after them: once it is live, the watcher has handled every event before it.
        text = admin.path.read_text()
        admin.path.write_text(text.replace("name: Targeting Cookies", "name: Ads"))
        async with changed:
            await asyncio.wait_for(changed.wait_for(lambda: any(r.changed for r in results)), WAIT)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)
    assert admin.store.current.generation == 1 + writes + 1  # each write published once, the hand edit once
    events = admin.events(after=1)
    by_actor: dict[str, list[AuditAction]] = {}
    for e in events:
        by_actor.setdefault(e.actor, []).append(e.action)
    # each admin write: MAPPING_CREATED d_i, MAPPING_REMOVED d_{i-1} (or mixpanel), POLICY_RELOADED -- once
    assert by_actor["alice"].count(A.POLICY_RELOADED) == writes
    assert by_actor["alice"].count(A.CATEGORY_UPDATED) == writes
    assert by_actor["file:mappings.yaml"] == [A.CATEGORY_UPDATED, A.POLICY_RELOADED]
    assert [r.changed for r in results].count(True) == 1


# -- comment preservation ----------------------------------------------------------------------


def comments(text: str) -> list[str]:
    return [line[line.index("#"):].strip() for line in text.splitlines() if "#" in line]


async def test_a_commented_file_survives_20_mixed_edits_with_every_comment_intact(admin: Admin) -> None:
    original = comments(MAPPING)  # no edit below removes a commented item, so every comment must stay
    steps: list[tuple[str, Any]] = [
        ("CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id="C0005", name="Social",
                                                                            destinations=["facebook"]))),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0002", category=Category(name="Performance"),
                                                          update_mask=mask("name"))),
        ("DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0004", confirm_name="Targeting Cookies")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0004",
                                                          category=Category(destinations=["google-ads", "braze",
                                                                                          "criteo"]),
                                                          update_mask=mask("destinations"))),
        ("CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id="C0006", name="Email",
                                                                            destinations=["braze", "sendgrid"],
                                                                            shadow=True))),
        ("EnableCategory", admin_pb2.EnableCategoryRequest(category_id="C0004")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0003", category=Category(shadow=False),
                                                          update_mask=mask("shadow"))),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0005", category=Category(id="C0050"),
                                                          update_mask=mask("id"))),
        ("DeleteCategory", admin_pb2.DeleteCategoryRequest(category_id="C0006", confirm_name="Email")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0002",
                                                          category=Category(destinations=["mixpanel", "amplitude"]),
                                                          update_mask=mask("destinations"))),
        ("DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0003", confirm_name="Functional Cookies")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0004",
                                                          category=Category(destinations=["google-ads", "braze"]),
                                                          update_mask=mask("destinations"))),
        ("CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id="C0007", name="Chat: 'support'",
                                                                            destinations=["intercom"]))),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0002", category=Category(
            id="C0002", name="Performance Cookies", destinations=["amplitude", "mixpanel"]))),
        ("EnableCategory", admin_pb2.EnableCategoryRequest(category_id="C0003")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0007", category=Category(shadow=True),
                                                          update_mask=mask("shadow"))),
        ("DeleteCategory", admin_pb2.DeleteCategoryRequest(category_id="C0050", confirm_name="Social")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0004",
                                                          category=Category(destinations=["google-ads", "braze",
                                                                                          "taboola"]),
                                                          update_mask=mask("destinations"))),
        ("DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0007", confirm_name="Chat: 'support'")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0003", category=Category(shadow=True),
                                                          update_mask=mask("shadow"))),
    ]  # fmt: skip
    assert len(steps) == 20
    for rpc, request_ in steps:
        await admin.call(rpc, request_)
        text = admin.path.read_text()
        assert [c for c in original if c in comments(text)] == original, f"a comment was lost by {rpc}"
    assert admin.store.current.generation == 21
    assert run_cli(["check", str(admin.path)]) == 0
    final = load_mapping(admin.path).mapping
    assert [c.id for c in final.categories] == ["C0002", "C0004", "C0003", "C0007"]
    assert admin.path.read_text().startswith(MAPPING.split("  # Advertising")[0])  # C0002 reverted: byte for byte
    assert verify(admin.audit.path).ok
