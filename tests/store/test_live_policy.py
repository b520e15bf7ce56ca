"""Live policy end to end over gRPC: `serve` watching the mapping file, every way it is replaced, audited.

Each test runs the real `serve()` (audit log, writer, watcher, both listeners on unix sockets)
and observes it only through the wire: Decide's PolicyVersion, GetPolicyStatus and the audit
trail. Every wait polls observable state under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from consent.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc
from consent_core.mapping_file import parse_mapping
from samples import TWO_CATEGORIES

from consent_sidecar.auth.principals import hash_token
from consent_sidecar.cli import run_cli
from consent_sidecar.config import ServeConfig
from consent_sidecar.process.server import AUDIT_DB_NAME, EXIT_AUDIT, EXIT_OK, serve

P = admin_pb2.AuditAction
WAIT = 30.0  # upper bound of every wait, in seconds (the contract's target is 1 s; CI machines are slow)
ACTOR = "file:mappings.yaml"
TOKEN = "reader-token"  # a member: the admin reads need a bearer token once authentication is on
AUTH = (("authorization", f"Bearer {TOKEN}"),)

BASE = TWO_CATEGORIES


def with_destinations(*destinations: str) -> str:
    return BASE.replace("[amplitude, mixpanel]", "[" + ", ".join(destinations) + "]")


def write_principals(directory: Path) -> Path:
    path = directory / "principals.yaml"
    path.write_text(f"principals:\n  - id: reader\n    role: member\n    token_sha256: {hash_token(TOKEN)}\n",
                    encoding="utf-8")
    return path


def digest_of(text: str) -> str:
    return parse_mapping(text, "expected").digest()


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """A directory for unix sockets (AF_UNIX paths are short; pytest's tmp_path may not be)."""
    with tempfile.TemporaryDirectory(prefix="cs-") as d:
        yield Path(d)


@dataclass
class Live:
    path: Path  # the mapping file as given to serve
    audit_db: Path
    decision: grpc.aio.Channel
    admin_channel: grpc.aio.Channel

    @property
    def decide_stub(self) -> decision_pb2_grpc.DecisionServiceStub:
        return decision_pb2_grpc.DecisionServiceStub(self.decision)

    @property
    def admin(self) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.admin_channel)

    async def decide(self) -> decision_pb2.DecideResponse:
        return await self.decide_stub.Decide(decision_pb2.DecideRequest(), timeout=5)  # every known destination

    async def status(self) -> admin_pb2.PolicyStatus:
        return await self.admin.GetPolicyStatus(admin_pb2.GetPolicyStatusRequest(), timeout=5, metadata=AUTH)

    async def events(self, after: int = 1) -> list[admin_pb2.AuditEvent]:
        r = await self.admin.ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(after_sequence=after, page_size=1000), timeout=5, metadata=AUTH)
        return list(r.events)

    async def events_when(
        self, check: Callable[[list[admin_pb2.AuditEvent]], bool], after: int = 1
    ) -> list[admin_pb2.AuditEvent]:
        """The audit events after `after` once `check` holds for them (a change is live just before
        its events are durable: the writer publishes, then appends)."""

        async def poll() -> list[admin_pb2.AuditEvent] | None:
            events = await self.events(after)
            return events if check(events) else None

        events: list[admin_pb2.AuditEvent] = await self.until("audit events", poll)
        return events

    async def until(self, what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
        """Polls the async `check()` until it returns something truthy; fails naming `what` at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            value = await check()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def until_generation(self, generation: int) -> decision_pb2.DecideResponse:
        async def check() -> decision_pb2.DecideResponse | None:
            r = await self.decide()
            return r if r.policy.generation >= generation else None

        r: decision_pb2.DecideResponse = await self.until(f"generation {generation}", check)
        return r

    async def until_failed_reloads(self, n: int) -> admin_pb2.PolicyStatus:
        async def check() -> admin_pb2.PolicyStatus | None:
            s = await self.status()
            return s if s.failed_reloads >= n else None

        s: admin_pb2.PolicyStatus = await self.until(f"{n} failed reloads", check)
        return s


def summary(events: list[admin_pb2.AuditEvent]) -> list[tuple[str, str, str, str]]:
    return [(e.actor, P.Name(e.action).removeprefix("AUDIT_ACTION_"), e.category_id, e.destination) for e in events]


@contextlib.asynccontextmanager
async def live_sidecar(
    mapping: Path, *, text: str | None = BASE, audit_db: Path | None = None
) -> AsyncIterator[Live]:
    if text is not None:
        await asyncio.to_thread(mapping.write_text, text, encoding="utf-8")
    with short_dir() as sockets:
        config = ServeConfig(
            mappings=str(mapping),
            listen=(f"unix:{sockets / 'd.sock'}",),
            admin_listen=f"unix:{sockets / 'a.sock'}",
            principals=str(write_principals(sockets)),
            audit_db=str(audit_db) if audit_db is not None else None,
            grace_period=2.0,
        )
        ready, stop = asyncio.Event(), asyncio.Event()
        stderr = io.StringIO()
        task = asyncio.create_task(serve(config, ready=ready, stop=stop, stderr=stderr))
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({task, waiter}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        assert ready.is_set(), f"serve did not start: {stderr.getvalue()}"
        decision = grpc.aio.insecure_channel(config.listen[0])
        admin = grpc.aio.insecure_channel(config.admin_listen or "")
        try:
            yield Live(mapping, Path(audit_db or mapping.parent / AUDIT_DB_NAME), decision, admin)
        finally:
            await decision.close()
            await admin.close()
            stop.set()
            assert await asyncio.wait_for(task, WAIT) == EXIT_OK


# -- every way the file gets replaced -------------------------------------------------------


async def test_an_in_place_write_goes_live_and_is_audited(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "mappings.yaml") as live:
        assert (await live.decide()).policy.generation == 1
        live.path.write_text(with_destinations("amplitude", "heap"), encoding="utf-8")
        r = await live.until_generation(2)
        assert r.policy.digest == digest_of(with_destinations("amplitude", "heap"))
        assert list(r.allowed) == ["amplitude", "google-ads", "heap"]
        assert summary(await live.events_when(lambda es: len(es) >= 4)) == [
            (ACTOR, "CATEGORY_UPDATED", "C0002", ""),
            (ACTOR, "MAPPING_CREATED", "C0002", "heap"),
            (ACTOR, "MAPPING_REMOVED", "C0002", "mixpanel"),
            (ACTOR, "POLICY_RELOADED", "", ""),
        ]
        s = await live.status()
        assert (s.reloads, s.failed_reloads, s.policy.generation) == (1, 0, 2)


async def test_an_editor_temp_and_rename_goes_live_and_is_audited(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "mappings.yaml") as live:
        tmp = tmp_path / ".mappings.yaml.swp"
        tmp.write_text(BASE + "  - id: C0009\n    name: Analytics\n    destinations: [heap]\n", encoding="utf-8")
        os.replace(tmp, live.path)
        await live.until_generation(2)
        assert summary(await live.events_when(lambda es: len(es) >= 3)) == [
            (ACTOR, "CATEGORY_CREATED", "C0009", ""),
            (ACTOR, "MAPPING_CREATED", "C0009", "heap"),
            (ACTOR, "POLICY_RELOADED", "", ""),
        ]


async def test_a_configmap_data_symlink_swap_goes_live_and_is_audited(tmp_path: Path) -> None:
    # The kubelet's atomic writer: mappings.yaml -> ..data/mappings.yaml, ..data -> ..<timestamp>/
    cm = tmp_path / "cm"
    (cm / "..2026_01").mkdir(parents=True)
    (cm / "..2026_01" / "mappings.yaml").write_text(BASE, encoding="utf-8")
    os.symlink("..2026_01", cm / "..data")
    os.symlink("..data/mappings.yaml", cm / "mappings.yaml")
    # A ConfigMap volume is read-only: the audit database lives elsewhere (--audit-db).
    async with live_sidecar(cm / "mappings.yaml", text=None, audit_db=tmp_path / "audit.db") as live:
        (cm / "..2026_02").mkdir()
        (cm / "..2026_02" / "mappings.yaml").write_text(
            BASE.replace("name: Targeting Cookies", "name: Targeting Cookies\n    enabled: false"), encoding="utf-8")
        os.symlink("..2026_02", cm / "..data_tmp")
        os.replace(cm / "..data_tmp", cm / "..data")
        r = await live.until_generation(2)
        assert list(r.blocked) == []  # nothing left enforced without a consent object anyway
        assert summary(await live.events_when(lambda es: len(es) >= 2)) == [
            (ACTOR, "CATEGORY_DISABLED", "C0004", ""),
            (ACTOR, "POLICY_RELOADED", "", ""),
        ]
        assert not (cm / AUDIT_DB_NAME).exists()


async def test_a_deleted_file_keeps_the_last_policy_until_it_is_recreated(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "mappings.yaml") as live:
        live.path.unlink()
        s = await live.until_failed_reloads(1)
        assert s.policy.generation == 1 and str(live.path) in s.last_error
        r = await live.decide()
        assert r.policy.generation == 1 and list(r.allowed) == ["amplitude", "google-ads", "mixpanel"]
        [failed] = await live.events_when(lambda es: len(es) >= 1)
        assert (failed.actor, failed.action) == (ACTOR, P.AUDIT_ACTION_POLICY_RELOAD_FAILED)
        assert failed.detail == s.last_error
        live.path.write_text(with_destinations("braze"), encoding="utf-8")
        r = await live.until_generation(2)
        assert list(r.allowed) == ["braze", "google-ads"]
        s = await live.status()
        assert (s.last_error, s.HasField("last_error_at")) == ("", False)
        recreated = await live.events_when(lambda es: bool(es) and es[-1].action == P.AUDIT_ACTION_POLICY_RELOADED,
                                           after=2)
        assert f"generation 2 digest {r.policy.digest}" in recreated[-1].detail


async def test_an_invalid_edit_keeps_serving_and_reports_its_position_until_a_good_edit(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "mappings.yaml") as live:
        live.path.write_text(BASE.replace("id: C0004", "id: 4C"), encoding="utf-8")
        s = await live.until_failed_reloads(1)
        assert f"{live.path}:6:9: categories[1].id: must not start with a digit" in s.last_error
        assert s.HasField("last_error_at") and s.policy.generation == 1
        assert (await live.decide()).policy.generation == 1  # the last good policy keeps deciding
        [failed] = await live.events_when(lambda es: len(es) >= 1)
        assert (failed.actor, failed.action, failed.detail) == (ACTOR, P.AUDIT_ACTION_POLICY_RELOAD_FAILED,
                                                                 s.last_error)
        live.path.write_text(with_destinations("amplitude"), encoding="utf-8")
        await live.until_generation(2)
        s = await live.status()
        assert (s.reloads, s.failed_reloads, s.last_error, s.HasField("last_error_at")) == (1, 1, "", False)


async def test_a_truncated_write_is_never_published(tmp_path: Path) -> None:
    full = with_destinations("amplitude", "mixpanel", "heap")
    cut = full.index("heap") - 3  # inside the flow list: the first part is not valid YAML
    async with live_sidecar(tmp_path / "mappings.yaml") as live:
        # A slow writer: the first part sits on disk for a while, long enough to be read.
        with open(live.path, "w", encoding="utf-8") as f:
            f.write(full[:cut])
            f.flush()
            await asyncio.sleep(0.1)  # the writer being slow, not synchronisation
            f.write(full[cut:])
        r = await live.until_generation(2)
        assert r.policy.digest == digest_of(full)
        s = await live.status()
        assert (s.policy.generation, s.failed_reloads) == (2, 0)
        events = await live.events_when(lambda es: P.AUDIT_ACTION_POLICY_RELOADED in [e.action for e in es])
        assert P.AUDIT_ACTION_POLICY_RELOAD_FAILED not in [e.action for e in events]


async def test_an_identical_resave_publishes_nothing(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "mappings.yaml") as live:
        live.path.write_text("# a comment only\n" + BASE, encoding="utf-8")
        live.path.write_text(with_destinations("amplitude", "heap"), encoding="utf-8")  # a marker edit after it
        await live.until_generation(2)
        assert (await live.status()).policy.generation == 2  # the re-save did not count


# -- the edit storm -------------------------------------------------------------------------


async def test_an_edit_storm_loses_no_rpc_and_ends_on_the_last_content(tmp_path: Path) -> None:
    edits = 300
    texts = [with_destinations("amplitude", f"dest-{i}") for i in range(edits)]
    async with live_sidecar(tmp_path / "mappings.yaml") as live:
        stop = asyncio.Event()
        seen: list[list[int]] = [[] for _ in range(4)]
        failures: list[BaseException] = []

        async def client(k: int) -> None:
            stub = live.decide_stub
            request = decision_pb2.DecideRequest(
                consent=decision_pb2.Consent(category_preferences={"C0002": True}), destinations=["amplitude"])
            while not stop.is_set():
                try:
                    r = await stub.Decide(request, timeout=10)
                except grpc.aio.AioRpcError as e:
                    failures.append(e)
                    return
                assert list(r.allowed) == ["amplitude"]
                seen[k].append(r.policy.generation)

        def storm() -> None:
            # Bursts of 30 saves 2 ms apart, with a pause after each burst: the watcher coalesces
            # a burst into one reload (it waits for the file to settle), so the pauses are what
            # lets intermediate versions go live while the clients are calling. Pacing the
            # simulated operator, not synchronisation.
            for i, text in enumerate(texts):
                tmp = tmp_path / f".edit-{i}"
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, live.path)
                time.sleep(0.15 if i % 30 == 29 else 0.002)

        clients = [asyncio.create_task(client(k)) for k in range(len(seen))]
        try:
            await asyncio.wait_for(asyncio.to_thread(storm), WAIT)
            expected = digest_of(texts[-1])

            async def final() -> bool:
                return (await live.decide()).policy.digest == expected

            await live.until("the last edit to be live", final)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*clients), WAIT)
        assert failures == []
        for generations in seen:
            assert generations, "a client made no call"
            assert generations == sorted(generations)  # monotonic per client
        status = await live.status()
        assert status.failed_reloads == 0  # temp+rename never exposes a torn file
        assert status.policy.generation > 2  # the storm went live in several steps while clients called
        r = await live.decide()
        assert list(r.allowed) == ["amplitude", "dest-299", "google-ads"]
        def reloads(es: list[admin_pb2.AuditEvent]) -> list[admin_pb2.AuditEvent]:
            return [e for e in es if e.action == P.AUDIT_ACTION_POLICY_RELOADED]

        last = status.policy.generation
        reloaded = reloads(await live.events_when(lambda es: len(reloads(es)) >= last - 1))
        assert [int(e.detail.split()[1]) for e in reloaded] == list(range(2, last + 1))
        assert all(e.actor == ACTOR for e in reloaded)
    # The chain verifies afterwards, through the command line.
    assert run_cli(["audit", "verify", "--audit-db", str(live.audit_db)], environ={}) == 0


# -- the audit database at start ------------------------------------------------------------


async def test_the_audit_database_defaults_to_next_to_the_mapping_file(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "mappings.yaml") as live:
        r = await live.admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(), timeout=5, metadata=AUTH)
        assert [(e.sequence, e.actor, e.action) for e in r.events] == [(1, "system", P.AUDIT_ACTION_POLICY_RELOADED)]
        assert r.events[0].prev_hash == "0" * 64
    assert (tmp_path / AUDIT_DB_NAME).is_file()
    # A restart continues the same chain with another start event.
    async with live_sidecar(tmp_path / "mappings.yaml") as live:
        r = await live.admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(), timeout=5, metadata=AUTH)
        assert [(e.sequence, e.actor) for e in r.events] == [(1, "system"), (2, "system")]
        assert r.events[1].prev_hash == r.events[0].hash


async def test_an_audit_database_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "mappings.yaml").write_text(BASE, encoding="utf-8")
    bad = tmp_path / "no-such-dir" / "audit.db"
    err = io.StringIO()
    config = ServeConfig(mappings=str(tmp_path / "mappings.yaml"), listen=("127.0.0.1:0",), audit_db=str(bad))
    assert await asyncio.wait_for(serve(config, stop=asyncio.Event(), stderr=err), WAIT) == EXIT_AUDIT
    message = err.getvalue()
    assert str(bad) in message and "--audit-db" in message


# -- SIGHUP ---------------------------------------------------------------------------------

_RUN = (
    "import sys\n"
    "from consent_sidecar.config import ServeConfig\n"
    "from consent_sidecar.process.server import run\n"
    "sys.exit(run(ServeConfig(mappings=sys.argv[1], listen=(sys.argv[2],), admin_listen=sys.argv[3],"
    " principals=sys.argv[4], log_format='json')))\n"
)


def start_process(tmp_path: Path, *argv: str) -> subprocess.Popen[bytes]:
    """`run()` in a child process, as the CLI calls it; stderr (JSON log lines) to tmp_path/stderr.log."""
    with open(tmp_path / "stderr.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-c", _RUN, *argv], stdout=subprocess.DEVNULL, stderr=log)


async def test_sighup_forces_a_reload(tmp_path: Path) -> None:
    # The mapping is a symlink into a directory the sidecar does not watch, so editing the
    # target raises no event in the watched directory: only SIGHUP can pick the edit up.
    (tmp_path / "real").mkdir()
    (tmp_path / "conf").mkdir()
    target = tmp_path / "real" / "policy.yaml"
    target.write_text(BASE, encoding="utf-8")
    os.symlink(target, tmp_path / "conf" / "mappings.yaml")
    with short_dir() as sockets:
        decision_address, admin_address = f"unix:{sockets / 'd.sock'}", f"unix:{sockets / 'a.sock'}"
        proc = start_process(tmp_path, str(tmp_path / "conf" / "mappings.yaml"), decision_address, admin_address,
                             str(write_principals(tmp_path)))
        try:
            async with grpc.aio.insecure_channel(decision_address) as d, grpc.aio.insecure_channel(admin_address) as a:
                live = Live(tmp_path / "conf" / "mappings.yaml", tmp_path / "conf" / AUDIT_DB_NAME, d, a)

                async def up() -> bool:
                    assert proc.poll() is None, f"sidecar exited: {(tmp_path / 'stderr.log').read_text()}"
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        return (await live.decide()).policy.generation == 1
                    return False

                await live.until("the sidecar to serve", up)
                target.write_text(with_destinations("amplitude", "heap"), encoding="utf-8")
                proc.send_signal(signal.SIGHUP)
                r = await live.until_generation(2)
                assert "heap" in r.allowed
                # SIGHUP on a broken file: a failed reload each time, audited once.
                target.write_text(BASE.replace("id: C0004", "id: 4C"), encoding="utf-8")
                proc.send_signal(signal.SIGHUP)
                await live.until_failed_reloads(1)
                proc.send_signal(signal.SIGHUP)
                s = await live.until_failed_reloads(2)
                assert s.policy.generation == 2
                def failures(es: list[admin_pb2.AuditEvent]) -> list[admin_pb2.AuditEvent]:
                    return [e for e in es if e.action == P.AUDIT_ACTION_POLICY_RELOAD_FAILED]

                failed = failures(await live.events_when(lambda es: len(failures(es)) >= 1))
                assert len(failed) == 1 and failed[0].actor == ACTOR
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == EXIT_OK
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    events = (tmp_path / "stderr.log").read_text()
    assert '"event": "SIGHUP: reloading the mapping file"' in events

