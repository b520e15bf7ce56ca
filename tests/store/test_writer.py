"""The single write path: reloads are serialised, published changes audited as diff events + POLICY_RELOADED."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from consent_core import errors
from consent_core.model import ConsentMapping
from samples import TWO_CATEGORIES

from consent_sidecar.audit import GENESIS_HASH, AuditAction, AuditLog, AuditRecord, NewEvent, verify
from consent_sidecar.store.policy import PolicyStore, load_mapping_file
from consent_sidecar.store.writer import PolicyWriter, file_actor

A = AuditAction
ACTOR = "file:mappings.yaml"

BASE = TWO_CATEGORIES


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
    s = Setup(path, store, audit, writer)
    yield s
    for w, a in ((writer, audit), (s.writer, s.audit)):  # and those of a restart()
        await w.aclose()
        a.close()


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


async def test_every_change_logs_the_audit_head_it_left(setup: Setup) -> None:
    from structlog.testing import capture_logs

    setup.write(BASE.replace("[google-ads]", "[google-ads, braze]"))
    with capture_logs() as logged:
        await setup.writer.reload(ACTOR)
    last = records(setup.audit)[-1]
    [line] = [e for e in logged if e["event"] == "policy reloaded"]
    assert line["log_level"] == "info"
    assert (line["audit_head_sequence"], line["audit_head_hash"]) == (last.sequence, last.hash)
    assert line["policy_generation"] == 2


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
    generation = setup.store.current.generation
    setup.write(BROKEN_ID)
    await setup.writer.reload(ACTOR)
    setup.write(BASE)  # back to the serving content: nothing to publish, but the breakage ended
    result = await setup.writer.reload(ACTOR)
    assert result.ok and not result.changed and setup.store.last_error is None
    assert setup.store.current.generation == generation  # the generation counts policies published, not edits
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

    def loader(p: str) -> ConsentMapping:
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


def refusing(setup: Setup, monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """The audit log refuses the next `times` appends (disk full); returns a list counting every call."""
    real_append = setup.audit.append
    calls: list[int] = []

    def append(entries: list[NewEvent]) -> list[AuditRecord]:
        calls.append(len(entries))
        if len(calls) <= times:
            raise errors.Unavailable("audit log: injected: disk full")
        return real_append(entries)

    monkeypatch.setattr(setup.audit, "append", append)
    return calls


async def test_a_hand_edit_is_served_only_once_its_events_are_written(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing(setup, monkeypatch, times=2)
    setup.write(BASE.replace("[google-ads]", "[google-ads, braze]"))
    for _ in range(2):  # the audit refuses: the edit stays pending, nothing is served
        pending = await setup.writer.reload(ACTOR)
        assert (pending.ok, pending.pending, pending.snapshot) == (False, True, None)
        assert setup.store.current.generation == 1
        assert "braze" not in setup.store.current.index.known_destinations
        assert setup.store.last_error is not None
        assert "the edit is not served: its audit events could not be written (audit log: injected: disk full)" in (
            setup.store.last_error
        )
    assert setup.after_start() == []
    served = await setup.writer.reload(ACTOR)  # the retry: recorded, then served, once
    assert served.ok and not served.pending and served.snapshot is not None and served.snapshot.generation == 2
    assert setup.store.last_error is None and "braze" in setup.store.current.index.known_destinations
    got = [(r.action.name, r.destination) for r in setup.after_start()]
    assert got == [("CATEGORY_UPDATED", ""), ("MAPPING_CREATED", "braze"), ("POLICY_RELOADED", "")]
    assert f"generation 2 digest {served.snapshot.digest}" in setup.after_start()[-1].detail
    assert last_policy(setup) == setup.store.current.index.mapping
    assert verify(setup.audit.path).ok


async def test_a_rejection_the_trail_refuses_is_recorded_when_retried(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing(setup, monkeypatch, times=1)
    setup.write(BROKEN_ID)
    first = await setup.writer.reload(ACTOR)
    assert (first.ok, first.pending) == (False, True) and setup.after_start() == []
    again = await setup.writer.reload(ACTOR)  # not "the same breakage again": it is not in the trail yet
    assert (again.ok, again.pending) == (False, False)
    assert [r.action for r in setup.after_start()] == [A.POLICY_RELOAD_FAILED]
    assert setup.store.current.generation == 1


async def test_start_removes_temp_files_of_writes_killed_before_their_rename(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text(BASE, encoding="utf-8")
    left = [tmp_path / ".mappings.yaml.k3j_9x0a.tmp", tmp_path / ".mappings.yaml.aaaaaaaa.tmp"]
    kept = [tmp_path / ".mappings.yaml.keep.tmp", tmp_path / ".other.yaml.abcdefgh.tmp", tmp_path / "mappings.tmp"]
    for p in [*left, *kept]:
        p.write_text("half a mapping")
    (tmp_path / ".mappings.yaml.dir12345.tmp").mkdir()  # not a file: not ours
    store = PolicyStore()
    store.load_initial(str(path))
    with AuditLog.open(tmp_path / "audit.db") as audit:
        writer = PolicyWriter(store, audit)
        await writer.start()
        await writer.aclose()
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in kept) and (tmp_path / ".mappings.yaml.dir12345.tmp").is_dir()


async def test_start_fails_when_the_audit_log_refuses(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text(BASE, encoding="utf-8")
    store = PolicyStore()
    store.load_initial(str(path))
    audit = AuditLog.open(tmp_path / "audit.db")
    audit.close()
    with pytest.raises(errors.SidecarError, match="closed"):
        await PolicyWriter(store, audit).start()



# -- the policy kept in the trail, and changes found at start -------------------------------


async def restart(setup: Setup) -> Setup:
    """Stop the sidecar (writer and log closed) and start a new one on the same file and trail."""
    await setup.writer.aclose()
    setup.audit.close()
    store = PolicyStore()
    store.load_initial(str(setup.path))
    audit = AuditLog.open(setup.audit.path)
    writer = PolicyWriter(store, audit)
    await writer.start()
    setup.store, setup.audit, setup.writer = store, audit, writer
    return setup


def last_policy(setup: Setup) -> ConsentMapping:
    last = setup.audit.last_published_policy()
    assert last is not None
    rebuilt = ConsentMapping.from_json_dict(json.loads(last.canonical))
    assert rebuilt.digest() == last.digest
    return rebuilt


async def test_every_published_policy_is_kept_with_its_policy_reloaded(setup: Setup) -> None:
    assert last_policy(setup) == setup.store.current.index.mapping  # the start's
    setup.write(BASE.replace("[google-ads]", "[google-ads, braze]"))
    await setup.writer.reload(ACTOR)
    last = setup.audit.last_published_policy()
    assert last is not None and last.sequence == records(setup.audit)[-1].sequence
    assert last_policy(setup) == setup.store.current.index.mapping
    setup.write(BROKEN_ID)
    await setup.writer.reload(ACTOR)  # a failure publishes nothing
    assert last_policy(setup) == setup.store.current.index.mapping
    setup.write(BASE.replace("[google-ads]", "[google-ads, braze]"))
    await setup.writer.reload(ACTOR)  # "clears the reload failure": the serving policy again
    assert setup.audit.last_published_policy().sequence == records(setup.audit)[-1].sequence  # type: ignore[union-attr]
    assert verify(setup.audit.path).ok


async def test_an_unchanged_restart_writes_only_the_start_event(setup: Setup) -> None:
    setup.write("# a comment-only edit while stopped\n" + BASE)
    await restart(setup)
    assert summary(records(setup.audit)) == [("system", "POLICY_RELOADED", "", "")] * 2


async def test_hand_edits_while_stopped_are_audited_at_the_next_start(setup: Setup) -> None:
    await setup.writer.aclose()
    setup.write(
        BASE.replace("[amplitude, mixpanel]", "[amplitude, heap]").replace("name: Targeting Cookies", "name: Ads")
        + "  - id: C0009\n    name: New\n    destinations: [braze]\n"
    )
    await restart(setup)
    found = records(setup.audit)[1:]
    # Every start opens with its POLICY_RELOADED (docs/reference.md §7); what changed meanwhile follows it.
    assert summary(found) == [
        ("system", "POLICY_RELOADED", "", ""),
        (ACTOR, "CATEGORY_UPDATED", "C0002", ""),
        (ACTOR, "MAPPING_CREATED", "C0002", "heap"),
        (ACTOR, "MAPPING_REMOVED", "C0002", "mixpanel"),
        (ACTOR, "CATEGORY_UPDATED", "C0004", ""),
        (ACTOR, "CATEGORY_CREATED", "C0009", ""),
        (ACTOR, "MAPPING_CREATED", "C0009", "braze"),
    ]
    assert len({r.time for r in found}) == 1  # one transaction with the start event
    assert all(r.detail.startswith("found at start: the mapping file differs from the last published policy")
               for r in found[1:])  # fmt: skip
    assert "while the sidecar was not running" in found[1].detail
    start = found[0]
    assert f"generation 1 digest {setup.store.current.digest}; start, from mappings.yaml" in start.detail
    assert "6 category changes found at start" in start.detail
    assert '"mixpanel"' in found[1].before_json and '"heap"' in found[1].after_json
    assert last_policy(setup) == setup.store.current.index.mapping
    assert verify(setup.audit.path).ok
    await restart(setup)  # found once: the next start has nothing to add
    assert summary(records(setup.audit)[len(found) + 1 :]) == [("system", "POLICY_RELOADED", "", "")]


async def test_a_settings_only_edit_while_stopped_is_named_by_the_start_event(setup: Setup) -> None:
    setup.write(BASE + "destinations:\n  aws-s3: {enforce: false}\n")
    await restart(setup)
    [_, start] = records(setup.audit)
    assert (start.actor, start.action) == ("system", A.POLICY_RELOADED)
    assert "0 category changes found at start" in start.detail


async def test_a_trail_without_a_stored_policy_starts_as_before(setup: Setup) -> None:
    # The last POLICY_RELOADED carries no policy: a trail from before they were kept (or an older binary's start).
    setup.audit.append([NewEvent("system", A.POLICY_RELOADED, detail="generation 1 digest x; start")])
    setup.write(BASE.replace("[google-ads]", "[google-ads, braze]"))
    await restart(setup)
    last = records(setup.audit)[-1]
    assert summary(records(setup.audit)[2:]) == [("system", "POLICY_RELOADED", "", "")]
    assert last.detail.endswith("; start, from mappings.yaml")


async def test_a_stored_policy_that_does_not_rebuild_is_not_diffed(setup: Setup) -> None:
    await setup.writer.aclose()
    setup.audit.close()
    conn = sqlite3.connect(setup.audit.path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER policies_no_update")
        conn.execute("UPDATE policies SET canonical = replace(canonical, '\"version\":1', '\"version\":\"1\"')")
    finally:
        conn.close()
    setup.write(BASE.replace("[google-ads]", "[google-ads, braze]"))
    await restart(setup)
    start = records(setup.audit)[-1]
    assert summary(records(setup.audit)[1:]) == [("system", "POLICY_RELOADED", "", "")]
    assert "could not be read back (version: must be an integer" in start.detail
