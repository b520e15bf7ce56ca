"""ConsentClient and AsyncConsentClient against a real sidecar, on TCP and a unix socket.

Covers the wire semantics through the client, retries (sidecar started late), deadlines (a
stopped sidecar process), every failure policy with the sidecar stopped, stream pipelining
and recovery. The sidecar is `consent_sidecar.process.server.serve` on its own event loop in a thread
(`ServerThread`), or the `consent-sidecar` console script where a process must be frozen.
Every wait is bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from consent_client import (
    AsyncConsentClient,
    ClientClosedError,
    ClientError,
    ConsentClient,
    ConsentError,
    DeadlineExceeded,
    DecideResult,
    EmbeddedDecider,
    FailurePolicy,
    InvalidArgument,
    Reason,
    Request,
    RetryPolicy,
    ServerError,
    Unavailable,
)
from consent_client import errors as client_errors

from consent_sidecar.config import ServeConfig
from consent_sidecar.process.server import serve

# An examples-like mapping: enforced, `any`, shadow, disabled and exempt destinations.
MAPPING = """\
version: 1
settings:
  unknown_destinations: allow
categories:
  - id: C0001
    name: Strictly Necessary
    destinations: [snowflake]
  - id: C0002
    name: Performance Cookies
    destinations: [google-analytics-4, amplitude, mixpanel]
  - id: C0003
    name: Functional Cookies
    destinations: [intercom, braze]
  - id: C0004
    name: Targeting Cookies
    destinations: [google-ads, braze, twitter-ads]
  - id: C0005
    name: Social Media Cookies
    destinations: [twitter-ads, facebook-pixel]
  - id: C0006
    name: Experimental Cookies
    shadow: true
    destinations: [amplitude, hotjar]
  - id: C0007
    name: Retired Cookies
    enabled: false
    destinations: [mixpanel, old-pixel]
destinations:
  aws-s3: {enforce: false}
  braze: {resolution: any}
"""

WAIT = 20.0  # upper bound of every wait on a thread, process or event in these tests


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def short_tempdir() -> Iterator[Path]:
    """A short directory for unix sockets (AF_UNIX paths are limited to ~107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="cc-") as d:
        yield Path(d)


class ServerThread:
    """The real sidecar (`consent_sidecar.process.server.serve`) on its own event loop in a background thread."""

    def __init__(self, mappings: Path, listen: Sequence[str]) -> None:
        self.config = ServeConfig(mappings=str(mappings), listen=tuple(listen), grace_period=0.2)
        self.exit_code: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()

    def start(self) -> ServerThread:
        self.exit_code = None
        self._started.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._started.wait(WAIT):
            raise RuntimeError("the sidecar did not start in time")
        if self.exit_code is not None:
            raise RuntimeError(f"the sidecar exited with {self.exit_code}")
        return self

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        ready, self._stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(serve(self.config, ready=ready, stop=self._stop, stderr=io.StringIO()))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            self.exit_code = task.result()
        self._started.set()
        code = await task
        waiter.cancel()
        self.exit_code = code

    def stop(self) -> None:
        if self._thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the sidecar did not stop in time"
        self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def serving_here(mappings: Path, listen: Sequence[str]) -> AsyncIterator[None]:
    """The sidecar as a task on the current event loop (for async tests)."""
    ready, stop = asyncio.Event(), asyncio.Event()
    config = ServeConfig(mappings=str(mappings), listen=tuple(listen), grace_period=0.2)
    task = asyncio.create_task(serve(config, ready=ready, stop=stop, stderr=io.StringIO()))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    assert ready.is_set(), f"the sidecar did not start: {task.result() if task.done() else 'timeout'}"
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mapping") / "mappings.yaml"
    path.write_text(MAPPING)
    return path


class Sidecar:
    def __init__(self, tcp: str, unix: str, mapping: Path) -> None:
        self.tcp, self.unix, self.mapping = tcp, unix, mapping

    def target(self, transport: str) -> str:
        return self.tcp if transport == "tcp" else self.unix


@pytest.fixture(scope="module")
def sidecar(mapping_file: Path) -> Iterator[Sidecar]:
    """One sidecar for the module, listening on TCP and on a unix socket."""
    with short_tempdir() as d:
        tcp, unix = f"127.0.0.1:{free_port()}", f"unix:{d / 'decide.sock'}"
        with ServerThread(mapping_file, [tcp, unix]):
            yield Sidecar(tcp, unix, mapping_file)


@pytest.fixture(params=["tcp", "unix"])
def target(request: pytest.FixtureRequest, sidecar: Sidecar) -> str:
    return sidecar.target(request.param)


@pytest.fixture
def client(target: str) -> Iterator[ConsentClient]:
    with ConsentClient(target, timeout=5.0, failure_policy="raise") as c:
        yield c


FULL = {"C0001": True, "C0002": True, "C0003": True, "C0004": True, "C0005": True}


# -- unit: retry policy, errors, requests ----------------------------------------------------------


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=1.0, multiplier=2.0, jitter=0.2)
    assert [policy.delay(n, lambda: 0.5) for n in (1, 2, 3, 4, 5, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.delay(1, lambda: 0.0) == pytest.approx(0.08)
    assert policy.delay(1, lambda: 1.0) == pytest.approx(0.12)
    assert policy.delay(9, lambda: 1.0) == pytest.approx(1.2)


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"initial_backoff": -1}, {"multiplier": 0.5}, {"jitter": 1.5}]
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_every_status_code_maps_to_its_own_error_class(code: grpc.StatusCode) -> None:
    err = client_errors.from_rpc_error(FakeRpcError(code, "why"), attempts=3)
    assert type(err) is not ConsentError
    assert err.code is code
    assert err.message == "why"
    assert err.attempts == 3
    assert str(err) == f"{code.name}: why"
    assert isinstance(err.__cause__, grpc.RpcError)
    assert isinstance(err, ClientError | ServerError)


def test_error_hierarchy_separates_caller_mistakes_from_sidecar_trouble() -> None:
    assert issubclass(InvalidArgument, ClientError)
    assert issubclass(client_errors.ResourceExhausted, ClientError)
    assert issubclass(Unavailable, ServerError)
    assert issubclass(DeadlineExceeded, ServerError)
    assert not issubclass(ConsentError, grpc.RpcError)


def test_requests_reject_ambiguous_input() -> None:
    with pytest.raises(ValueError, match="either consent or event"):
        Request(("a",), consent={}, event={"type": "track"})
    with pytest.raises(TypeError, match="single str"):
        Request("amplitude")  # type: ignore[arg-type]
    assert Request(["a", "b"]).destinations == ("a", "b")  # type: ignore[arg-type]


def test_embedded_failure_policy_needs_a_mapping() -> None:
    with pytest.raises(ValueError, match="mappings_path"):
        ConsentClient("127.0.0.1:1", failure_policy="embedded")
    with pytest.raises(ValueError):
        ConsentClient("127.0.0.1:1", failure_policy="sometimes")


def test_a_closed_client_refuses_calls() -> None:
    c = ConsentClient(f"127.0.0.1:{free_port()}")
    with c:
        pass
    with pytest.raises(ClientClosedError):
        c.decide(["amplitude"])
    with pytest.raises(ClientClosedError):
        c.stream([])
    c.close()  # idempotent


# -- the wire semantics through the client --------------------------------------------------------


def test_decide_over_tcp_and_unix(client: ConsentClient, mapping_file: Path) -> None:
    consent = {"C0001": True, "C0002": True, "C0004": False}
    result = client.decide(["amplitude", "google-ads", "aws-s3", "snowflake", "brand-new"], consent)
    assert result.allowed == ("amplitude", "aws-s3", "snowflake", "brand-new")
    assert result.blocked == ("google-ads",)
    assert result.decisions == ()
    assert not result.degraded and result.failure is None and result.ok
    assert result.policy is not None
    assert result.policy.generation >= 1
    assert result.policy.digest == EmbeddedDecider(mapping_file).policy.digest


def test_explain_gives_typed_reasons_in_request_order(client: ConsentClient) -> None:
    result = client.decide(
        ["google-ads", "amplitude", "aws-s3", "old-pixel", "braze", "hotjar"], {"C0002": True, "C0003": True},
        explain=True,
    )
    by = {d.destination: d for d in result.decisions}
    assert [d.destination for d in result.decisions] == ["google-ads", "amplitude", "aws-s3", "old-pixel", "braze",
                                                         "hotjar"]
    assert by["google-ads"].reason is Reason.DENIED
    assert by["google-ads"].missing_categories == ("C0004",)
    assert by["amplitude"].reason is Reason.GRANTED
    assert by["amplitude"].shadow_missing_categories == ("C0006",)
    assert by["aws-s3"].reason is Reason.EXEMPT
    assert by["old-pixel"].reason is Reason.UNMAPPED
    assert by["braze"].reason is Reason.GRANTED  # resolution any
    assert by["braze"].reason == "REASON_GRANTED"  # a str enum of the proto names
    assert by["hotjar"].reason is Reason.UNMAPPED


def test_no_consent_object_allows_all_and_empty_request_means_every_known_destination(client: ConsentClient) -> None:
    everything = client.decide([], None)
    assert everything.blocked == ()
    assert everything.allowed == tuple(sorted(everything.allowed))
    assert {"aws-s3", "snowflake", "old-pixel", "hotjar"} <= set(everything.allowed)
    granted_nothing = client.decide([], {})
    assert "google-ads" in granted_nothing.blocked and "aws-s3" in granted_nothing.allowed


def test_decide_event_reads_context_consent_and_honours_integrations(client: ConsentClient) -> None:
    event = {
        "type": "track",
        "event": "Order Completed",
        "context": {"consent": {"categoryPreferences": {"C0002": True, "C0004": True}}},
        "integrations": {"amplitude": False},
    }
    result = client.decide_event(event, ["amplitude", "google-ads", "mixpanel"], explain=True)
    assert result.allowed == ("google-ads", "mixpanel")
    assert result.blocked == ("amplitude",)
    assert result.decisions[0].reason is Reason.DISABLED_BY_EVENT
    raw = client.decide_event(b'{"type":"identify"}', ["google-ads"])  # raw JSON, no consent object
    assert raw.allowed == ("google-ads",)


def test_malformed_input_raises_invalid_argument_never_a_grpc_error(client: ConsentClient) -> None:
    with pytest.raises(InvalidArgument, match=r"destinations\[1\]") as info:
        client.decide(["amplitude", ""], {})
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert not isinstance(info.value, grpc.RpcError)
    with pytest.raises(InvalidArgument, match="categoryPreferences"):
        client.decide_event({"context": {"consent": {"categoryPreferences": {"C0002": "yes"}}}}, ["amplitude"])
    for bad in ("yes", 1, None):  # strict booleans, like the embedded decider
        with pytest.raises(InvalidArgument, match=r"consent\.category_preferences\.C0002: must be a boolean"):
            client.decide(["amplitude"], {"C0002": bad})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        client.decide("amplitude")  # type: ignore[arg-type]


def test_decide_many_keeps_order_chunks_and_reports_bad_entries_inline(target: str) -> None:
    requests: list[Any] = [
        Request(("amplitude", "google-ads"), {"C0002": True}),
        Request(("amplitude",), {"C0002": True}, explain=True),
        Request(("",), {}),  # invalid on the sidecar
        {"type": "track", "context": {"consent": {"categoryPreferences": {"C0004": True}}}},  # every destination
        Request(("amplitude",), {"C0002": "no"}),  # type: ignore[dict-item]  # cannot even be encoded
        Request(("google-ads",), None),
        Request.for_event({"type": "track", "integrations": {"All": False}}, ["aws-s3"]),
    ]
    with ConsentClient(target, timeout=5.0, batch_size=3, failure_policy="raise") as c:
        results = c.decide_many(requests)
        singles = [c.decide_request(r) if i not in (2, 4) else None for i, r in enumerate(requests)]
    assert len(results) == len(requests)
    assert results[0].allowed == ("amplitude",) and results[0].blocked == ("google-ads",)
    assert results[1].decisions[0].reason is Reason.GRANTED
    assert results[2].error is not None and "requests[" in results[2].error and "destinations[0]" in results[2].error
    assert not results[2].ok
    with pytest.raises(InvalidArgument):
        results[2].raise_for_error()
    assert "google-ads" in results[3].allowed and "amplitude" in results[3].blocked
    assert results[4].error is not None and "consent" in results[4].error
    assert results[5].allowed == ("google-ads",)
    assert results[6].blocked == ("aws-s3",)
    for i, single in enumerate(singles):
        if single is not None:
            assert (results[i].allowed, results[i].blocked, results[i].decisions) == (
                single.allowed, single.blocked, single.decisions,
            )


def workload(n: int) -> list[Request]:
    dests = ("amplitude", "google-ads", "braze", "aws-s3", "twitter-ads", "snowflake", "x/eu")
    out = []
    for i in range(n):
        consent = None if i % 7 == 0 else {k: bool((i >> j) & 1) for j, k in enumerate(sorted(FULL))}
        out.append(Request(dests[: 1 + i % len(dests)], consent, explain=i % 5 == 0))
    return out


def test_sync_stream_answers_in_order_within_a_bounded_window(client: ConsentClient) -> None:
    reqs = workload(300)
    reqs[17] = Request(("",), {})  # an invalid entry does not break the stream
    expected = client.decide_many(reqs)
    consumed = 0

    def source() -> Iterator[Request]:
        nonlocal consumed
        for r in reqs:
            consumed += 1
            yield r

    got: list[DecideResult] = []
    with client.stream(source(), window=8) as results:
        for r in results:
            got.append(r)
            assert consumed - len(got) <= 8  # read-ahead never exceeds the window
    assert len(got) == len(reqs)
    assert got[17].error is not None
    strip = [(r.allowed, r.blocked, r.decisions, r.error is None) for r in got]
    assert strip == [(r.allowed, r.blocked, r.decisions, r.error is None) for r in expected]


def test_sync_stream_of_nothing_yields_nothing(client: ConsentClient) -> None:
    with client.stream([]) as results:
        assert list(results) == []


def test_sync_stream_can_be_left_early(client: ConsentClient) -> None:
    with client.stream(workload(50), window=4) as results:
        first = next(iter(results))
    assert first.ok
    assert client.decide(["amplitude"], {"C0002": True}).allowed == ("amplitude",)


# -- async client ------------------------------------------------------------------------------


async def test_async_client_decides_like_the_sync_one(target: str, client: ConsentClient) -> None:
    reqs = workload(40)
    expected = client.decide_many(reqs)
    async with AsyncConsentClient(target, timeout=5.0, failure_policy="raise", batch_size=7) as ac:
        one = await ac.decide(["amplitude", "google-ads"], {"C0002": True})
        ev = await ac.decide_event({"type": "track", "integrations": {"google-ads": False}}, ["google-ads"])
        many = await ac.decide_many(reqs)
        with pytest.raises(InvalidArgument):
            await ac.decide([""])
    assert (one.allowed, one.blocked) == (("amplitude",), ("google-ads",))
    assert ev.blocked == ("google-ads",)
    assert [(r.allowed, r.blocked, r.decisions) for r in many] == [
        (r.allowed, r.blocked, r.decisions) for r in expected
    ]


def _client_connections_to(port: int) -> int:
    """Established TCP connections whose far end is `port` (Linux's /proc/net/tcp and tcp6:
    gRPC's sockets are dual-stack, 127.0.0.1 shows as a v4-mapped IPv6 address)."""
    rows = [line.split() for name in ("tcp", "tcp6") for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]]
    return sum(1 for row in rows if row[3] == "01" and int(row[2].rsplit(":", 1)[1], 16) == port)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
@pytest.mark.parametrize("connections", [1, 3])
async def test_calls_take_turns_over_the_connections_asked_for(mapping_file: Path, connections: int) -> None:
    """`serve --workers N` gives each connection to one worker: the client must really open N."""
    sync_port, async_port = free_port(), free_port()
    with ServerThread(mapping_file, [f"127.0.0.1:{sync_port}", f"127.0.0.1:{async_port}"]):
        with ConsentClient(f"127.0.0.1:{sync_port}", connections=connections, failure_policy="raise") as c:
            for _ in range(2 * connections):
                assert c.decide(["amplitude"], FULL).allowed == ("amplitude",)
            with c.stream([Request(("amplitude",), FULL)]) as results:
                assert [r.allowed for r in results] == [("amplitude",)]
            assert _client_connections_to(sync_port) == connections
        async with AsyncConsentClient(f"127.0.0.1:{async_port}", connections=connections,
                                      failure_policy="raise") as ac:
            answers = await asyncio.gather(*(ac.decide(["amplitude"], FULL) for _ in range(2 * connections)))
            assert {r.allowed for r in answers} == {("amplitude",)}
            assert _client_connections_to(async_port) == connections


def test_connections_must_be_positive() -> None:
    with pytest.raises(ValueError, match="connections"):
        ConsentClient("127.0.0.1:1", connections=0)


async def test_async_stream_pipelines_concurrent_calls_and_matches_by_order(
    target: str, client: ConsentClient
) -> None:
    reqs = workload(400)
    expected = client.decide_many(reqs)
    async with AsyncConsentClient(target, timeout=5.0, failure_policy="raise") as ac, ac.stream(window=16) as s:
        got = await asyncio.gather(*(s.decide_request(r) for r in reqs))
        bad = await s.decide([""])
        assert len(s._pending) == 0
    assert [(r.allowed, r.blocked, r.decisions) for r in got] == [
        (r.allowed, r.blocked, r.decisions) for r in expected
    ]
    assert bad.error is not None and "destinations[0]" in bad.error


# -- retries -------------------------------------------------------------------------------------


def test_unavailable_is_retried_until_a_late_sidecar_answers(mapping_file: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    first_failure = threading.Event()
    retries: list[tuple[int, str]] = []

    def on_retry(attempt: int, err: ConsentError, delay: float) -> None:
        retries.append((attempt, type(err).__name__))
        first_failure.set()

    retry = RetryPolicy(max_attempts=200, initial_backoff=0.02, max_backoff=0.1)
    with (
        ConsentClient(target, timeout=WAIT, retry=retry, on_retry=on_retry, failure_policy="raise") as c,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        pending = pool.submit(c.decide, ["google-ads"], {"C0004": False})
        assert first_failure.wait(WAIT), "the client never saw the sidecar missing"
        with ServerThread(mapping_file, [target]):
            result = pending.result(timeout=WAIT)
    assert result.blocked == ("google-ads",)
    assert not result.degraded
    assert retries and all(name == "Unavailable" for _, name in retries)


def test_retries_are_bounded_and_counted() -> None:
    calls: list[int] = []
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)
    with ConsentClient(
        f"127.0.0.1:{free_port()}", timeout=WAIT, retry=retry, failure_policy="raise",
        on_retry=lambda attempt, err, delay: calls.append(attempt),
    ) as c, pytest.raises(Unavailable) as info:
        c.decide(["amplitude"], {})
    assert info.value.attempts == 3
    assert calls == [1, 2]


def test_retries_stop_at_the_deadline() -> None:
    retry = RetryPolicy(max_attempts=10_000, initial_backoff=0.05, max_backoff=0.05)
    # The last attempt may itself run out of time while gRPC is still connecting: then the
    # truthful error is DEADLINE_EXCEEDED rather than the UNAVAILABLE of the attempts before.
    with (
        ConsentClient(f"127.0.0.1:{free_port()}", timeout=1.0, retry=retry, failure_policy="raise") as c,
        pytest.raises((Unavailable, DeadlineExceeded)) as info,
    ):
        c.decide(["amplitude"], {})
    assert 1 < info.value.attempts < 10_000


async def test_async_retries_until_a_late_sidecar_answers(mapping_file: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    failed = asyncio.Event()
    retry = RetryPolicy(max_attempts=200, initial_backoff=0.02, max_backoff=0.1)
    async with AsyncConsentClient(
        target, timeout=WAIT, retry=retry, failure_policy="raise", on_retry=lambda *_: failed.set()
    ) as ac:
        pending = asyncio.create_task(ac.decide(["amplitude"], {"C0002": True}))
        await asyncio.wait_for(failed.wait(), WAIT)
        async with serving_here(mapping_file, [target]):
            result = await asyncio.wait_for(pending, WAIT)
    assert result.allowed == ("amplitude",) and not result.degraded


# -- deadlines -----------------------------------------------------------------------------------


@contextlib.contextmanager
def sidecar_process(mapping: Path, listen: str) -> Iterator[subprocess.Popen[bytes]]:
    """`consent-sidecar serve` as a child process (so it can be frozen with SIGSTOP)."""
    exe = shutil.which("consent-sidecar", path=str(Path(sys.executable).parent)) or "consent-sidecar"
    proc = subprocess.Popen(
        [exe, "serve", "--mappings", str(mapping), "--listen", listen, "--grace-period", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        with grpc.insecure_channel(listen) as ch:
            grpc.channel_ready_future(ch).result(timeout=WAIT)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT)


def test_a_frozen_sidecar_exceeds_the_deadline(mapping_file: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    with (
        sidecar_process(mapping_file, target) as proc,
        ConsentClient(target, timeout=0.3, failure_policy="raise") as raising,
        ConsentClient(target, timeout=0.3) as closed,
    ):
        assert raising.decide(["google-ads"], {"C0004": True}, timeout=WAIT).allowed == ("google-ads",)
        assert closed.decide(["google-ads"], {"C0004": True}, timeout=WAIT).allowed == ("google-ads",)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(DeadlineExceeded) as info:
                raising.decide(["google-ads"], {"C0004": True})
            assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            assert info.value.attempts == 1  # a deadline is never retried
            with pytest.raises(DeadlineExceeded):
                raising.decide(["google-ads"], {"C0004": True}, timeout=0.05)  # per-call override
            degraded = closed.decide(["google-ads"], {"C0004": True})
            assert degraded.degraded and degraded.blocked == ("google-ads",)
            assert degraded.failure is not None and degraded.failure.startswith("DEADLINE_EXCEEDED")
            with closed.stream([Request(("google-ads",), {"C0004": True})] * 3, timeout=0.3) as results:
                streamed = list(results)
            assert [r.degraded for r in streamed] == [True, True, True]
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert raising.decide(["google-ads"], {"C0004": True}, timeout=WAIT).allowed == ("google-ads",)


def test_a_deadline_must_be_positive(client: ConsentClient) -> None:
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="timeout"):
            client.decide(["amplitude"], {}, timeout=bad)


# -- failure policies with the sidecar stopped ------------------------------------------------


@pytest.fixture(scope="module")
def stopped(mapping_file: Path) -> Iterator[str]:
    """A target whose sidecar answered once and then stopped."""
    target = f"127.0.0.1:{free_port()}"
    with ServerThread(mapping_file, [target]), ConsentClient(target, timeout=WAIT, failure_policy="raise") as c:
        assert c.decide(["amplitude"], {}).blocked == ("amplitude",)
    yield target


FAST_RETRY = RetryPolicy(max_attempts=2, initial_backoff=0.001, max_backoff=0.001)
ASKED = ["google-ads", "amplitude", "aws-s3", "old-pixel", "brand-new", "braze"]
CONSENT = {"C0002": True, "C0004": True}


def _dead_client(target: str, policy: str, mapping: Path | None = None) -> ConsentClient:
    return ConsentClient(target, timeout=2.0, retry=FAST_RETRY, failure_policy=policy, mappings_path=mapping)


def test_fail_closed_without_a_mapping_blocks_every_requested_destination(stopped: str) -> None:
    with _dead_client(stopped, "fail_closed") as c:
        assert c.failure_policy is FailurePolicy.FAIL_CLOSED
        r = c.decide(ASKED, CONSENT, explain=True)
        assert r.degraded and r.failure is not None and r.failure.startswith("UNAVAILABLE")
        assert r.allowed == () and r.blocked == tuple(ASKED)
        assert {d.reason for d in r.decisions} == {Reason.UNSPECIFIED}
        assert r.policy is None
        assert c.decide([], None).allowed == ()  # nothing known, nothing allowed
        with pytest.raises(InvalidArgument):  # still validated like the sidecar would
            c.decide([""], {})


def test_default_policy_is_fail_closed(stopped: str) -> None:
    with ConsentClient(stopped, timeout=2.0, retry=FAST_RETRY) as c:
        r = c.decide(["amplitude"], None)
    assert r.degraded and r.blocked == ("amplitude",)


def test_fail_closed_with_a_mapping_blocks_only_what_may_require_consent(stopped: str, mapping_file: Path) -> None:
    with _dead_client(stopped, "fail_closed", mapping_file) as c:
        r = c.decide(ASKED, CONSENT, explain=True)
        assert r.degraded
        assert r.allowed == ("aws-s3", "old-pixel", "brand-new")  # exempt, disabled-only, unknown (allow)
        assert r.blocked == ("google-ads", "amplitude", "braze")
        ev = c.decide_event({"type": "track", "integrations": {"aws-s3": False}}, ["aws-s3", "old-pixel"])
        assert ev.blocked == ("aws-s3",) and ev.allowed == ("old-pixel",)
        assert r.policy == EmbeddedDecider(mapping_file).policy


def test_fail_open_allows_every_requested_destination_but_obeys_integrations(stopped: str) -> None:
    with _dead_client(stopped, "fail_open") as c:
        r = c.decide(ASKED, {}, explain=True)
        assert r.degraded and r.allowed == tuple(ASKED) and r.blocked == ()
        assert {d.reason for d in r.decisions} == {Reason.UNSPECIFIED}
        ev = c.decide_event({"type": "track", "integrations": {"braze": False}}, ["braze", "amplitude"], explain=True)
        assert ev.allowed == ("amplitude",) and ev.blocked == ("braze",)
        assert ev.decisions[0].reason is Reason.DISABLED_BY_EVENT


def test_embedded_policy_answers_like_the_mapping(stopped: str, mapping_file: Path) -> None:
    local = EmbeddedDecider(mapping_file)
    with _dead_client(stopped, "embedded", mapping_file) as c:
        r = c.decide(ASKED, CONSENT, explain=True)
        many = c.decide_many([Request(tuple(ASKED), CONSENT), Request(("",), {})])
    expected = local.decide(ASKED, CONSENT, explain=True)
    assert r.degraded
    assert (r.allowed, r.blocked, r.decisions, r.policy) == (
        expected.allowed, expected.blocked, expected.decisions, expected.policy,
    )
    assert many[0].degraded and many[0].allowed == expected.allowed
    assert many[1].error is not None


def test_raise_policy_raises_unavailable(stopped: str) -> None:
    with _dead_client(stopped, "raise") as c, pytest.raises(Unavailable) as info:
        c.decide(ASKED, CONSENT)
    assert info.value.attempts == FAST_RETRY.max_attempts


def test_batches_and_streams_fall_back_per_entry(stopped: str) -> None:
    with _dead_client(stopped, "fail_open") as c:
        many = c.decide_many([Request(("a",), {}), Request(("",), {}), Request(("b",), None)])
        assert [r.allowed for r in many] == [("a",), (), ("b",)]
        assert [r.degraded for r in many] == [True, False, True]
        assert many[1].error is not None
        with c.stream([Request(("a",), {}), Request(("b",), {})], window=1) as results:
            streamed = list(results)
        assert [(r.allowed, r.degraded) for r in streamed] == [(("a",), True), (("b",), True)]


async def test_async_failure_policies(stopped: str, mapping_file: Path) -> None:
    async with AsyncConsentClient(stopped, timeout=2.0, retry=FAST_RETRY) as closed, \
            AsyncConsentClient(stopped, timeout=2.0, retry=FAST_RETRY, failure_policy="raise") as raising:
        r = await closed.decide(["amplitude", "aws-s3"], {"C0002": True})
        assert r.degraded and r.blocked == ("amplitude", "aws-s3")
        many = await closed.decide_many([Request(("a",), {})] * 3)
        assert all(m.degraded for m in many)
        async with closed.stream(window=4) as s:
            streamed = await asyncio.gather(*(s.decide(["x"], {}) for _ in range(5)))
        assert all(m.degraded and m.blocked == ("x",) for m in streamed)
        with pytest.raises(Unavailable):
            await raising.decide(["amplitude"], {})


# -- recovery after the sidecar comes back ----------------------------------------------------


def test_a_connected_client_degrades_while_the_sidecar_is_down_then_recovers(mapping_file: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    server = ServerThread(mapping_file, [target]).start()
    patient = RetryPolicy(max_attempts=1000, initial_backoff=0.02, max_backoff=0.1)
    try:
        with ConsentClient(target, timeout=0.5, retry=patient) as c:
            assert not c.decide(["amplitude"], {"C0002": True}, timeout=WAIT).degraded
            server.stop()
            down = c.decide(["amplitude"], {"C0002": True})  # retried until the 0.5 s deadline, then fail_closed
            assert down.degraded and down.blocked == ("amplitude",)
            assert down.failure is not None and down.failure.startswith("UNAVAILABLE")
            server.start()
            # Same client, same channel: it reconnects within the retry budget of a longer deadline.
            up = c.decide(["amplitude"], {"C0002": True}, timeout=WAIT)
            assert not up.degraded and up.allowed == ("amplitude",)
    finally:
        server.stop()


def test_sync_stream_resends_in_flight_requests_after_a_restart(mapping_file: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    server = ServerThread(mapping_file, [target]).start()
    reqs = workload(120)
    retried: list[str] = []
    try:
        retry = RetryPolicy(max_attempts=100, initial_backoff=0.02, max_backoff=0.1)
        with ConsentClient(
            target, timeout=WAIT, retry=retry, failure_policy="raise", on_retry=lambda a, e, d: retried.append(str(e))
        ) as c:
            expected = c.decide_many(reqs)

            def source() -> Iterator[Request]:
                for i, r in enumerate(reqs):
                    if i == 60:  # the sidecar restarts with requests in flight
                        server.stop()
                        server.start()
                    yield r

            with c.stream(source(), window=16) as results:
                got = list(results)
    finally:
        server.stop()
    assert [(r.allowed, r.blocked, r.decisions) for r in got] == [
        (r.allowed, r.blocked, r.decisions) for r in expected
    ]
    assert not any(r.degraded for r in got)
    assert retried and retried[0].startswith("UNAVAILABLE")  # the stream broke and was reopened


async def test_async_stream_reopens_after_a_restart(mapping_file: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    retry = RetryPolicy(max_attempts=100, initial_backoff=0.02, max_backoff=0.1)
    async with AsyncConsentClient(target, timeout=WAIT, retry=retry) as ac:
        async with serving_here(mapping_file, [target]):
            s = ac.stream(window=8)
            assert not (await s.decide(["amplitude"], {"C0002": True})).degraded
        # Stopped: the stream cannot be reopened within the retry budget of a short deadline.
        down = await s.decide(["amplitude"], {"C0002": True}, timeout=0.5)
        assert down.degraded and down.blocked == ("amplitude",)
        async with serving_here(mapping_file, [target]):
            up = await s.decide(["amplitude"], {"C0002": True})
            assert not up.degraded and up.allowed == ("amplitude",)
            await s.close()
        with pytest.raises(ClientClosedError):
            await s.decide(["amplitude"])


async def test_a_cancelled_caller_does_not_break_the_shared_stream(target: str, client: ConsentClient) -> None:
    reqs = workload(60)
    expected = client.decide_many(reqs)
    async with AsyncConsentClient(target, timeout=WAIT, failure_policy="raise") as ac, ac.stream(window=8) as s:
        tasks = [asyncio.create_task(s.decide_request(r)) for r in reqs]
        await asyncio.sleep(0)  # let them start: some are queued, some waiting for the window
        for t in tasks[::7]:
            t.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
    for i, (got, want) in enumerate(zip(done, expected, strict=True)):
        if i % 7 == 0:
            assert isinstance(got, asyncio.CancelledError)
        else:  # every other caller gets its own answer: order matching survived the cancellations
            assert isinstance(got, DecideResult) and not got.degraded
            assert (got.allowed, got.blocked, got.decisions) == (want.allowed, want.blocked, want.decisions)


def test_a_batch_of_only_unencodable_entries_needs_no_sidecar() -> None:
    with ConsentClient(f"127.0.0.1:{free_port()}", failure_policy="raise") as c:
        results = c.decide_many([Request(("amplitude",), {"C0002": "x"})])  # type: ignore[dict-item]
    assert results[0].error is not None
