"""Shared fixtures: mapping files written into tmp_path, and a real sidecar on loopback TCP and a unix socket.

`start_sidecar(...)` is the general form (any mapping, limits or config); the `sidecar` and
`channel` fixtures are its defaults. Test modules import nothing from here (tests/ is not a
package): they take fixtures, and name types under TYPE_CHECKING only. Servers bind port 0 and
report the real port: no races.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from consent_core.limits import Limits
from samples import SAMPLE_MAPPING

from consent_sidecar.audit import AuditLog
from consent_sidecar.config import ServeConfig
from consent_sidecar.process.server import Sidecar
from consent_sidecar.services.admin import DEFAULT_WATCH_BUFFER
from consent_sidecar.store.policy import PolicyStore
from consent_sidecar.store.writer import PolicyWriter

TRANSPORTS = ("tcp", "unix")

# AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer than that.
_MAX_SOCKET_DIR = 80


def write_mapping(directory: Path, text: str = SAMPLE_MAPPING, name: str = "mappings.yaml") -> Path:
    """Writes a mapping file into `directory` and returns its path."""
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for unix sockets: tmp_path when its path is short enough, else a short temp dir."""
    if len(str(tmp_path)) <= _MAX_SOCKET_DIR:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="cs-") as d:
        yield Path(d)


@dataclasses.dataclass
class RunningSidecar:
    """A started sidecar and client channels to each of its transports."""

    sidecar: Sidecar
    store: PolicyStore
    config: ServeConfig
    mapping_path: Path
    tcp_address: str
    unix_address: str
    tcp: grpc.aio.Channel
    unix: grpc.aio.Channel
    admin: grpc.aio.Channel | None = None
    audit: AuditLog | None = None  # admin=True: the audit trail AdminService reads (tmp_path/audit.db)
    writer: PolicyWriter | None = None  # admin=True: the write path, its start event already audited

    def channel(self, transport: str) -> grpc.aio.Channel:
        return self.tcp if transport == "tcp" else self.unix


@contextlib.asynccontextmanager
async def running_sidecar(
    tmp_path: Path,
    mapping: str = SAMPLE_MAPPING,
    *,
    limits: Limits | None = None,
    admin: bool = False,
    watch_buffer: int = DEFAULT_WATCH_BUFFER,
    **config: Any,
) -> AsyncIterator[RunningSidecar]:
    """Starts a sidecar on 127.0.0.1:0 and a unix socket (plus an admin listener if asked); stops it after.

    With admin=True the admin listener serves AdminService over an audit log in tmp_path/audit.db
    (its start event written, as `serve` does; no file watcher), `watch_buffer` live events per
    WatchAuditEvents client.
    """
    path = write_mapping(tmp_path, mapping)
    with socket_dir(tmp_path) as sockets:
        unix_address = f"unix:{sockets / 'decision.sock'}"
        cfg = ServeConfig(
            mappings=str(path),
            listen=("127.0.0.1:0", unix_address),
            admin_listen="127.0.0.1:0" if admin else None,
            limits=limits or Limits(),
            grace_period=1.0,
            **config,
        )
        store = PolicyStore(mapping_limits=cfg.mapping_limits, memo_bytes=cfg.memo_bytes)
        store.load_initial(cfg.mappings)
        audit = writer = None
        if admin:
            audit = AuditLog.open(tmp_path / "audit.db")
            writer = PolicyWriter(store, audit)
            await writer.start()
        sidecar = Sidecar(cfg, store, audit=audit, writer=writer, watch_buffer=watch_buffer)
        await sidecar.start()
        tcp_address = sidecar.addresses[0]
        channels = [grpc.aio.insecure_channel(tcp_address), grpc.aio.insecure_channel(unix_address)]
        if sidecar.admin_address is not None:
            channels.append(grpc.aio.insecure_channel(sidecar.admin_address))
        try:
            yield RunningSidecar(
                sidecar, store, cfg, path, tcp_address, unix_address, channels[0], channels[1],
                channels[2] if admin else None, audit, writer,
            )
        finally:
            for ch in channels:
                await ch.close()
            await sidecar.stop(None)
            if audit is not None:
                audit.close()


@pytest.fixture
def mapping_path(tmp_path: Path) -> Path:
    """SAMPLE_MAPPING written to tmp_path/mappings.yaml."""
    return write_mapping(tmp_path)


StartSidecar = Callable[..., contextlib.AbstractAsyncContextManager[RunningSidecar]]


@pytest.fixture
def start_sidecar(tmp_path: Path) -> StartSidecar:
    """`running_sidecar` bound to this test's tmp_path: `async with start_sidecar(limits=...) as sc:`."""
    return functools.partial(running_sidecar, tmp_path)


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[RunningSidecar]:
    """A sidecar serving SAMPLE_MAPPING with default limits."""
    async with running_sidecar(tmp_path) as running:
        yield running


@pytest.fixture(params=TRANSPORTS)
def channel(request: pytest.FixtureRequest, sidecar: RunningSidecar) -> grpc.aio.Channel:
    """A channel to the `sidecar` fixture, once over TCP and once over the unix socket."""
    ch: grpc.aio.Channel = sidecar.channel(request.param)
    return ch


# -- test tiers ---------------------------------------------------------------------------------
#
# `make test-fast` runs `-m "not slow and not integration"`: the pure and in-process tests, for
# the edit-test loop. A test is `integration` when it starts processes or builds packages:
# whole modules listed here, or any test that takes a fixture listed here (new process-starting
# fixtures belong in that list). Modules may also mark themselves (`pytestmark`).
INTEGRATION_MODULES = frozenset(
    {
        "cli/test_admin_verbs.py",  # every operator verb against a child-process sidecar (one per test)
        "cli/test_main.py",  # the console script in child processes
        "console/test_console_browser.py",  # headless Chromium
        "console/test_console_cli.py",  # the console verb's processes, HTTPS and admin TLS
        "clients/test_route_events.py",  # the example pipeline against a child-process sidecar
        "process/test_server.py",  # run() in child processes: signals, drain, exit codes
        "process/test_workers.py",  # serve --workers N
        "store/test_crash.py",  # SIGKILL loops
        "store/test_live_policy.py",  # the watcher under edit storms
        "test_bench_workers.py",  # the workers benchmark row, end to end
        "test_deploy.py",  # the Kubernetes pod's settings on a real process
        "test_docs.py",  # every shell and Python block of the docs
        "test_packaging.py",  # wheels and the image's steps
    }
)
INTEGRATION_FIXTURES = frozenset({"wheel_venv", "wheels", "etcd_cluster", "dedicated_cluster"})  # real etcd members


# In-process tests of a second or more each (timed with `--durations=0`): `slow`, so the edit-test
# loop stays about a minute on two cores. They are long by nature (hypothesis over thousands of
# documents, waits for an idle timeout or a polling interval, thousands of distinct requests).
SLOW_TESTS = frozenset(
    {
        "cli/test_inspect.py::test_a_progress_bar_goes_to_stderr_on_a_terminal",
        "cli/test_inspect.py::test_counts_equal_the_sidecars_own_decisions_on_a_sample",
        "cli/test_inspect.py::test_gzip_files_and_stdin_read_as_the_plain_file",
        "clients/adapters/test_gpp_hostile.py::test_mutated_valid_strings_only_raise_consent_format_error",
        "clients/test_aio.py::test_async_stream_reopens_after_a_restart",
        "clients/test_client.py::test_a_frozen_sidecar_exceeds_the_deadline",
        "clients/test_embedded.py::test_concurrent_decisions_during_reloads_see_whole_policies",
        "clients/test_embedded.py::test_embedded_answers_exactly_like_the_sidecar",
        "console/test_bench_console.py::test_the_categories_page_of_1000_categories_renders_within_budget",
        "core/mapping_file/test_c_composer.py::test_any_document_reads_the_same_on_both_paths",
        "core/mapping_file/test_editor.py::test_any_sequence_of_edits_re_reads_as_intended_and_keeps_the_file_comments",
        "core/test_index.py::test_index_equals_reference_on_random_mappings",
        "core/test_native.py::test_granted_equals_the_pure_loop_or_declines",
        "core/test_native.py::test_the_pass_equals_the_reference",
        "core/test_split.py::test_a_mask_that_blocks_nothing_skips_the_pass_but_not_the_checks",
        "core/test_split.py::test_the_pass_and_the_tables_equal_the_reference",
        "core/test_split.py::test_validation_in_the_pass_raises_what_check_destinations_raises",
        "observe/test_metrics.py::test_idle_connections_cost_no_thread_and_are_closed_after_the_idle_timeout",
        "observe/test_metrics.py::test_serve_exposes_metrics_on_metrics_listen_and_counts_reloads_and_audit",
        "process/test_deadline.py::test_sigterm_with_a_write_stuck_on_a_fifo_exits_within_grace_plus_two_seconds",
        "process/test_drain.py::test_health_turns_not_serving_and_new_calls_are_refused_while_the_drain_goes_on",
        "process/test_grpc_server.py::test_concurrent_streams_per_connection_are_capped_on_every_listener",
        "process/test_grpc_server.py::test_idle_connections_are_closed_on_every_listener",
        "services/test_admin_bounds.py::test_a_category_of_4000_destinations_adds_audit_text_linear_in_them",
        "services/test_admin_write_file.py::test_own_writes_are_neither_published_nor_audited_again_by_the_watcher",
        "services/test_admin_write_fuzz.py::test_arbitrary_writes_get_documented_codes_and_the_server_keeps_serving",
        "services/test_decision.py::test_stream_handles_many_messages_with_backpressure",
        "services/test_decision_native.py::test_any_batch_is_declined_or_decided_as_the_python_path",
        "services/test_decision_native.py::test_mutated_and_truncated_batches_are_declined_or_decided_as_the_python_path",
        "services/test_decision_native.py::test_native_counts_are_the_python_paths_tallies",
        "services/test_decision_native.py::test_native_counts_of_any_batch_are_the_python_paths_or_declined",
        "services/test_decision_native.py::test_plain_batches_are_decided_natively_as_the_python_path",
        "services/test_decision_memory.py::test_many_distinct_large_consent_maps_keep_the_memos_within_their_budget",
        "store/test_audit_first.py::test_a_hand_edit_the_audit_refuses_stays_pending_then_is_served_and_audited_once",
        "store/test_watch.py::test_an_edit_the_events_reported_is_not_reloaded_again_by_the_content_check",
        "store/test_watch_polling.py::test_a_rotated_token_stops_working_within_2_s",
        "store/test_watch_polling.py::test_edits_with_equal_size_and_mtime_go_live_within_2_s",
        "test_scale.py::test_the_large_mapping_decides_as_the_reference",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        module = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        if module in INTEGRATION_MODULES or INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        if f"{module}::{item.name.partition('[')[0]}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
