"""The single write path: reloads are serialised, published changes audited as diff events + POLICY_RELOADED."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar import errors
from sidecar.audit import GENESIS_HASH, AuditLog, AuditRecord, verify
from sidecar.diff import AuditAction
from sidecar.model import Mapping
from sidecar.policy import PolicyStore, load_mapping_file
from sidecar.writer import PolicyWriter, file_actor

A = AuditAction
ACTOR = "file:mappings.yaml"

BASE = """\
version: 1
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude, mixpanel]
  - id: C0004
    name: Targeting Cookies
    destinations: [google-ads]
"""


def records(audit: AuditLog) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    token = None
    while token != "":
        page, token = audit.page(page_size=1000, page_token=token or "")
        out.extend(page)
    return out


def summary(rs: list[AuditRecord]) -> list[tuple[str, str, str, str]]:
    return [(r.actor, r.action.name, r.category_id, r.destination) for r in rs]


@dataclass
class Setup:
    path: Path
    store: PolicyStore
    audit: AuditLog
    writer: PolicyWriter

    def write(self, text: str) -> None:
        self.path.write_text(text, encoding="utf-8")

    def after_start(self) -> list[AuditRecord]:
        return records(self.audit)[1:]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    path = tmp_path / "mappings.yaml"
    path.write_text(BASE, encoding="utf-8")
    store = PolicyStore()
    store.load_initial(str(path))
    audit = AuditLog.open(tmp_path / "audit.db")
    writer = PolicyWriter(store, audit)
    await writer.start()
    yield Setup(path, store, audit, writer)
    await writer.aclose()
    audit.close()


# -- start ----------------------------------------------------------------------------------


async def test_start_writes_policy_reloaded_by_system_chained_from_zeros(setup: Setup) -> None:
    [first] = records(setup.audit)
    assert (first.sequence, first.actor, first.action) == (1, "system", A.POLICY_RELOADED)
    assert first.prev_hash == GENESIS_HASH
    assert f"generation 1 digest {setup.store.current.digest}" in first.detail
    assert first.category_id == first.destination == first.before_json == first.after_json == ""


def test_the_file_actor_is_the_basename() -> None:
    assert file_actor("/etc/consent/..data/mappings.yaml") == "file:mappings.yaml"
    assert file_actor("mappings.yaml") == "file:mappings.yaml"


def test_a_writer_needs_a_loaded_store(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "audit.db") as audit, pytest.raises(ValueError, match="loaded"):
        PolicyWriter(PolicyStore(), audit)


# -- published changes ----------------------------------------------------------------------


async def test_a_change_is_its_diff_events_then_one_policy_reloaded_in_one_transaction(setup: Setup) -> None:
    setup.write(BASE.replace("[amplitude, mixpanel]", "[amplitude, heap]"))
    result = await setup.writer.reload(ACTOR)
    assert result.ok and result.snapshot is not None and result.snapshot.generation == 2
    events = setup.after_start()
    assert summary(events) == [
        (ACTOR, "CATEGORY_UPDATED", "C0002", ""),
        (ACTOR, "MAPPING_CREATED", "C0002", "heap"),
        (ACTOR, "MAPPING_REMOVED", "C0002", "mixpanel"),
        (ACTOR, "POLICY_RELOADED", "", ""),
    ]
    assert len({r.time for r in events}) == 1  # one append: one transaction, one time
    assert [r.sequence for r in events] == [2, 3, 4, 5]
    assert '"mixpanel"' in events[0].before_json and '"heap"' in events[0].after_json
    assert f"generation 2 digest {result.snapshot.digest}" in events[-1].detail


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            lambda t: t + "  - id: C0009\n    name: New\n    destinations: [braze, heap]\n",
            [("CATEGORY_CREATED", "C0009", ""), ("MAPPING_CREATED", "C0009", "braze"),
             ("MAPPING_CREATED", "C0009", "heap")],
            id="created",
        ),
        pytest.param(
            lambda t: t.replace("    name: Targeting Cookies\n    destinations: [google-ads]\n", ""
                                ).replace("  - id: C0004\n", ""),
            [("CATEGORY_DELETED", "C0004", ""), ("MAPPING_REMOVED", "C0004", "google-ads")],
            id="deleted",
        ),
        pytest.param(
            lambda t: t.replace("name: Targeting Cookies", "name: Targeting Cookies\n    enabled: false"),
            [("CATEGORY_DISABLED", "C0004", "")],
            id="disabled",
        ),
        pytest.param(
            lambda t: t.replace("name: Targeting Cookies", "name: Ads"),
            [("CATEGORY_UPDATED", "C0004", "")],
            id="updated",
        ),
        pytest.param(
            lambda t: t.replace("name: Targeting Cookies", "name: Targeting Cookies\n    shadow: true"),
            [("CATEGORY_UPDATED", "C0004", "")],
            id="shadowed",
        ),
        pytest.param(
            lambda t: t + "destinations:\n  aws-s3: {enforce: false}\n",
            [],
            id="settings-only",
        ),
    ],
)
async def test_each_kind_of_hand_edit_is_audited(setup: Setup, edit: object, expected: list[tuple[str, ...]]) -> None:
    assert callable(edit)
    setup.write(edit(BASE))
    result = await setup.writer.reload(ACTOR)
    assert result.changed, result.error
    got = [(r.action.name, r.category_id, r.destination) for r in setup.after_start()]
    assert got == [*expected, ("POLICY_RELOADED", "", "")]


async def test_enabling_a_disabled_category_is_audited(setup: Setup) -> None:
    setup.write(BASE.replace("name: Targeting Cookies", "name: Targeting Cookies\n    enabled: false"))
    await setup.writer.reload(ACTOR)
    setup.write(BASE)
    await setup.writer.reload(ACTOR)
    assert [r.action.name for r in setup.after_start()][-2:] == ["CATEGORY_ENABLED", "POLICY_RELOADED"]


async def test_an_identical_resave_publishes_and_audits_nothing(setup: Setup) -> None:
    setup.write("# only a comment changed\n" + BASE)
    result = await setup.writer.reload(ACTOR)
    assert result.ok and not result.changed
    assert setup.store.current.generation == 1
    assert setup.after_start() == []


# -- rejected reloads -----------------------------------------------------------------------


BROKEN_ID = BASE.replace("id: C0004", "id: 4C")
BROKEN_NAME = BASE.replace("name: Targeting Cookies", "name: Performance Cookies")


async def test_a_rejected_reload_keeps_serving_and_audits_the_error_with_its_position(setup: Setup) -> None:
    setup.write(BROKEN_ID)
    result = await setup.writer.reload(ACTOR)
    assert not result.ok and setup.store.current.generation == 1
    assert setup.store.failed_reloads == 1
    [failed] = setup.after_start()
    assert (failed.actor, failed.action) == (ACTOR, A.POLICY_RELOAD_FAILED)
    assert f"{setup.path}:6:9: categories[1].id: must not start with a digit" in failed.detail
    assert failed.detail == setup.store.last_error


async def test_the_same_error_back_to_back_is_counted_but_audited_once(setup: Setup) -> None:
    setup.write(BROKEN_ID)
    for _ in range(3):
        await setup.writer.reload(ACTOR)
    assert setup.store.failed_reloads == 3
    assert [r.action for r in setup.after_start()] == [A.POLICY_RELOAD_FAILED]
    setup.write(BROKEN_NAME)  # a different breakage is new information
    await setup.writer.reload(ACTOR)
    assert [r.action for r in setup.after_start()] == [A.POLICY_RELOAD_FAILED] * 2
    assert "duplicate name" in setup.after_start()[-1].detail


async def test_reverting_a_broken_edit_records_that_the_failure_is_cleared(setup: Setup) -> None:
    setup.write(BROKEN_ID)
    await setup.writer.reload(ACTOR)
    setup.write(BASE)  # back to the serving content: nothing to publish, but the breakage ended
    result = await setup.writer.reload(ACTOR)
    assert result.ok and not result.changed and setup.store.last_error is None
    last = setup.after_start()[-1]
    assert (last.action, last.actor) == (A.POLICY_RELOADED, ACTOR)
    assert "unchanged; clears the reload failure" in last.detail
    # The same broken edit again later is a new breakage: audited again.
    setup.write(BROKEN_ID)
    await setup.writer.reload(ACTOR)
    assert setup.after_start()[-1].action is A.POLICY_RELOAD_FAILED


async def test_a_refused_candidate_changes_nothing(setup: Setup) -> None:
    setup.write(BROKEN_ID)
    assert await setup.writer.reload_if(ACTOR, lambda candidate: False) is None
    assert setup.store.failed_reloads == 0 and setup.store.last_error is None
    assert setup.after_start() == []


# -- serialisation and audit failures -------------------------------------------------------


async def test_reloads_never_overlap_and_the_audit_order_follows_generations(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text(BASE, encoding="utf-8")
    active = 0
    most = 0
    guard = threading.Lock()

    def loader(p: str) -> Mapping:
        nonlocal active, most
        with guard:
            active += 1
            most = max(most, active)
        try:
            return load_mapping_file(p)
        finally:
            with guard:
                active -= 1

    store = PolicyStore(loader=loader)
    store.load_initial(str(path))
    with AuditLog.open(tmp_path / "audit.db") as audit:
        writer = PolicyWriter(store, audit)
        await writer.start()

        async def edit_and_reload(i: int) -> None:
            path.write_text(BASE.replace("[google-ads]", f"[google-ads, d{i}]"), encoding="utf-8")
            await writer.reload(ACTOR)

        await asyncio.wait_for(asyncio.gather(*(edit_and_reload(i) for i in range(30))), 60)
        assert most == 1  # loads ran in worker threads, yet one at a time
        reloaded = [r for r in records(audit) if r.action is A.POLICY_RELOADED and r.actor == ACTOR]
        generations = [int(r.detail.split()[1]) for r in reloaded]
        assert generations == list(range(2, store.current.generation + 1))
        assert verify(audit.path).ok


async def test_an_audit_failure_keeps_the_reload_and_writes_its_events_with_the_next_append(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_append = setup.audit.append
    calls = 0

    def failing_once(entries: list[object]) -> list[AuditRecord]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise errors.Unavailable("disk full")
        return real_append(entries)  # type: ignore[arg-type]

    monkeypatch.setattr(setup.audit, "append", failing_once)
    setup.write(BASE.replace("[google-ads]", "[google-ads, braze]"))
    first = await setup.writer.reload(ACTOR)
    assert first.changed and setup.store.current.generation == 2  # the file is the truth: live anyway
    assert setup.writer.pending_events == 3 and setup.after_start() == []
    setup.write(BASE)
    await setup.writer.reload(ACTOR)
    assert setup.writer.pending_events == 0
    got = [(r.action.name, r.destination) for r in setup.after_start()]
    assert got == [
        ("CATEGORY_UPDATED", ""), ("MAPPING_CREATED", "braze"), ("POLICY_RELOADED", ""),  # held back: first
        ("CATEGORY_UPDATED", ""), ("MAPPING_REMOVED", "braze"), ("POLICY_RELOADED", ""),
    ]


async def test_start_fails_when_the_audit_log_refuses(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text(BASE, encoding="utf-8")
    store = PolicyStore()
    store.load_initial(str(path))
    audit = AuditLog.open(tmp_path / "audit.db")
    audit.close()
    with pytest.raises(errors.SidecarError, match="closed"):
        await PolicyWriter(store, audit).start()

