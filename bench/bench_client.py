"""`python -m bench.bench_client`: client-side throughput of consent_client, one run, ratios to unary.

Measures events decided per second by the Python client against a real sidecar: unary
`decide()`, `decide_many()` (DecideBatch chunks), the sync `stream()` and the async stream
(pipelined DecideStream), all in one run and interleaved round by round; and the embedded
decider (no network). Prints medians and each mode's ratio to unary `decide()` measured in
the same round. Standalone (not run by `make test`).

The sidecar runs as a `consent-sidecar serve` subprocess pinned to core 0 (taskset, when
there are two cores or more); this process, the load generator, pins itself to core 1. The
workload is bench.workload: 5,000 events with 20 destinations each, realistic consent mix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CLIENT_CPU = 1
SERVER_CPU = 0


def _pin_self() -> str:
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:
        return "not pinned (no sched_setaffinity here)"
    if allowed == {CLIENT_CPU}:
        return f"client already pinned to core {CLIENT_CPU}, sidecar to core {SERVER_CPU}"
    if CLIENT_CPU not in allowed or len(allowed) < 2:
        return f"not pinned (cores available: {sorted(allowed)})"
    os.sched_setaffinity(0, {CLIENT_CPU})
    return f"client pinned to core {CLIENT_CPU}, sidecar to core {SERVER_CPU}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _sidecar(mappings: Path, listen: list[str], workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    cli = Path(sys.executable).parent / "consent-sidecar"
    argv = [str(cli), "serve", "--mappings", str(mappings), "--log-level", "warning"]
    argv += [x for address in listen for x in ("--listen", address)]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        argv = ["taskset", "-c", str(SERVER_CPU), *argv]
    log = workdir / "sidecar.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Row:
    name: str
    rates: list[float]  # events/s per round
    ratios: list[float]  # rate / unary rate of the same round

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios) if self.ratios else float("nan")


def _timed(seconds: float, step: Callable[[], int]) -> float:
    """Calls `step` (which decides some events and returns how many) until `seconds` pass; events/s."""
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while (now := time.perf_counter()) < end:
        n += step()
    return n / (now - start)


def run(seconds: float = 1.5, rounds: int = 3, transport: str = "unix", window: int = 256, batch: int = 500) -> int:
    """Runs every mode and prints the table; the entry point for `python -m bench` too."""
    pinning = _pin_self()  # before grpc starts threads
    from consent_client import AsyncConsentClient, ConsentClient, EmbeddedDecider, Request

    from bench import workload as workload_module

    workload = workload_module.build()
    reqs = [Request(e.destinations, e.preferences) for e in workload.events]
    print(f"workload: {workload.describe()}")
    print(f"cpu: {pinning}; {os.cpu_count()} cores; python {sys.version.split()[0]}; transport {transport}; "
          f"{rounds} rounds of {seconds:g} s per mode; stream window {window}; decide_many chunk {batch}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        workdir = Path(tmp)
        mappings = workload.write_mapping(workdir)
        unix, tcp = f"unix:{workdir / 'decide.sock'}", f"127.0.0.1:{_free_port()}"
        target = unix if transport == "unix" else tcp
        with _sidecar(mappings, [unix, tcp], workdir) as proc:
            import grpc

            with grpc.insecure_channel(target) as ch:
                try:
                    grpc.channel_ready_future(ch).result(timeout=30)
                except grpc.FutureTimeoutError:
                    print((workdir / "sidecar.log").read_text()[-2000:], file=sys.stderr)
                    raise SystemExit(f"the sidecar did not come up (exit {proc.poll()})") from None

            client = ConsentClient(target, timeout=10.0, failure_policy="raise", batch_size=batch)
            embedded = EmbeddedDecider(mappings)
            # Sanity: the client, over the wire, agrees with the embedded decider before anything is timed.
            sample = reqs[:200]
            remote = client.decide_many(sample)
            local = embedded.decide_many(sample)
            assert [(r.allowed, r.blocked) for r in remote] == [(r.allowed, r.blocked) for r in local]
            assert remote[0].policy is not None and remote[0].policy.digest == embedded.policy.digest

            cyc = itertools.cycle(reqs)

            def unary() -> int:
                client.decide_request(next(cyc))
                return 1

            def many() -> int:
                chunk = list(itertools.islice(cyc, batch))
                client.decide_many(chunk)
                return len(chunk)

            def sync_stream(secs: float) -> float:
                n = 0
                start = time.perf_counter()
                end = start + secs
                with client.stream(cyc, window=window) as results:
                    for _ in results:
                        n += 1
                        if n % 256 == 0 and time.perf_counter() >= end:
                            break
                return n / (time.perf_counter() - start)

            async def async_stream(secs: float) -> float:
                async with (
                    AsyncConsentClient(target, timeout=10.0, failure_policy="raise") as ac,
                    ac.stream(window=window) as s,
                ):
                    n = 0
                    start = time.perf_counter()
                    end = start + secs
                    while time.perf_counter() < end:
                        chunk = list(itertools.islice(cyc, 2 * window))
                        await asyncio.gather(*(s.decide_request(r) for r in chunk))
                        n += len(chunk)
                    return n / (time.perf_counter() - start)

            def embedded_one() -> int:
                embedded.decide_request(next(cyc))
                return 1

            modes: dict[str, Callable[[], float]] = {
                "unary decide()": lambda: _timed(seconds, unary),
                f"decide_many() x{batch}": lambda: _timed(seconds, many),
                f"stream() sync, window {window}": lambda: sync_stream(seconds),
                f"stream() async, window {window}": lambda: asyncio.run(async_stream(seconds)),
                "embedded decide_request()": lambda: _timed(seconds, embedded_one),
            }
            _timed(min(0.3, seconds), unary)
            _timed(min(0.3, seconds), many)

            rows = {name: Row(name, [], []) for name in modes}
            for r in range(rounds):
                rates = {name: fn() for name, fn in modes.items()}
                base = rates["unary decide()"]
                for name, rate in rates.items():
                    rows[name].rates.append(rate)
                    rows[name].ratios.append(rate / base)
                print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n}={v:,.0f}/s" for n, v in rates.items()),
                      file=sys.stderr, flush=True)
            client.close()

    print()
    width = max(len(n) for n in rows)
    print(f"{'mode':<{width}}  {'events/s':>12}  {'x unary':>8}")
    for row in rows.values():
        print(f"{row.name:<{width}}  {row.rate:>12,.0f}  {row.ratio:>7.1f}x")
    print(f"\n(events/s: median of {rounds} rounds; x unary: median of same-round ratios to unary decide(); "
          f"{len(workload.events[0].destinations)} destinations per event)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_client", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.5, help="measured seconds per mode and round (default 1.5)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--transport", choices=["unix", "tcp"], default="unix", help="how to reach the sidecar")
    p.add_argument("--window", type=int, default=256, help="stream in-flight window (default 256)")
    p.add_argument("--batch", type=int, default=500, help="decide_many chunk size (default 500)")
    p.add_argument("--quick", action="store_true", help="one short round: a smoke test")
    a = p.parse_args(argv)
    if a.quick:
        a.seconds, a.rounds = 0.3, 1
    return run(a.seconds, a.rounds, a.transport, a.window, a.batch)


if __name__ == "__main__":
    sys.exit(main())
