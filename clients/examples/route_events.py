#!/usr/bin/env python3
"""Route Segment events to the destinations their users consented to, asking the consent sidecar.

Reads Segment events as JSON lines (a file, or stdin), asks the sidecar in DecideBatch
chunks which destinations may receive each one, and appends each event to one JSON-lines
file per allowed destination in --out. Prints a summary at the end: events read, events
delivered and blocked per destination, and the lines that could not be routed.

    consent-sidecar serve --mappings examples/mappings.yaml --listen 127.0.0.1:50051 &
    python clients/examples/route_events.py events.jsonl --out routed/
    cat events.jsonl | python clients/examples/route_events.py --destinations amplitude,google-ads --out routed/

Exit status: 0 when every line was routed, 1 when some lines were not (bad JSON, or an
event the sidecar rejected), 2 on a usage error or when the sidecar could not be reached
with --failure-policy raise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from consent_client import ConsentClient, ConsentError, DecideResult, FailurePolicy, Request

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
MAX_ERRORS_SHOWN = 10


@dataclass
class Summary:
    """What a run did; printed at the end (as text, or JSON with --json)."""

    events: int = 0  # lines holding a JSON object
    routed: int = 0  # events decided (by the sidecar or the failure policy)
    degraded: int = 0  # events the failure policy decided because the sidecar was unreachable
    delivered: Counter[str] = field(default_factory=Counter)  # destination -> events written
    blocked: Counter[str] = field(default_factory=Counter)  # destination -> events withheld
    errors: list[str] = field(default_factory=list)  # "line N: why"
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "routed": self.routed,
            "degraded": self.degraded,
            "delivered": dict(sorted(self.delivered.items())),
            "blocked": dict(sorted(self.blocked.items())),
            "errors": len(self.errors),
            "error_lines": self.errors[:MAX_ERRORS_SHOWN],
            "seconds": round(self.seconds, 3),
        }

    def print_text(self, out: IO[str]) -> None:
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        print(f"events: {self.events} read, {self.routed} routed in {self.seconds:.2f}s ({rate:,.0f}/s)", file=out)
        if self.degraded:
            print(f"degraded: {self.degraded} decided by the failure policy (sidecar unreachable)", file=out)
        names = sorted(set(self.delivered) | set(self.blocked))
        if names:
            width = max(len(n) for n in names)
            print(f"{'destination':<{width}}  delivered  blocked", file=out)
            for n in names:
                print(f"{n:<{width}}  {self.delivered[n]:>9}  {self.blocked[n]:>7}", file=out)
        print(f"errors: {len(self.errors)}", file=out)
        for e in self.errors[:MAX_ERRORS_SHOWN]:
            print(f"  {e}", file=out)
        if len(self.errors) > MAX_ERRORS_SHOWN:
            print(f"  ... and {len(self.errors) - MAX_ERRORS_SHOWN} more", file=out)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def output_name(destination: str) -> str:
    """A file name for a destination id: instances `ga4/eu` become `ga4__eu`; nothing escapes --out."""
    name = _UNSAFE.sub("_", destination.replace("/", "__"))
    return ("_" + name if name.startswith(".") else name) + ".jsonl"


class Outputs:
    """One JSON-lines file per destination, opened on first use (truncated once per run)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[str, IO[str]] = {}

    def write(self, destination: str, line: str) -> None:
        f = self._files.get(destination)
        if f is None:
            f = (self.directory / output_name(destination)).open("w", encoding="utf-8")
            self._files[destination] = f
        f.write(line)
        f.write("\n")

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


Line = tuple[int, str, dict[str, Any]]  # (line number, the line, the event)


def read_events(lines: Iterable[str], summary: Summary) -> Iterator[Line]:
    """(line number, the line, the event) for each line holding a JSON object; the rest are errors."""
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError as e:
            summary.errors.append(f"line {number}: not JSON: {e}")
            continue
        if not isinstance(event, dict):
            summary.errors.append(f"line {number}: not a JSON object")
            continue
        summary.events += 1
        yield number, line, event


def chunked(items: Iterator[Line], size: int) -> Iterator[list[Line]]:
    chunk: list[Line] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def route(
    client: ConsentClient,
    lines: Iterable[str],
    outputs: Outputs,
    *,
    destinations: tuple[str, ...] = (),
    batch_size: int = 500,
) -> Summary:
    """Decides and writes every event; returns the summary."""
    summary = Summary()
    started = time.perf_counter()
    for chunk in chunked(read_events(lines, summary), batch_size):
        results: list[DecideResult] = client.decide_many(Request.for_event(ev, destinations) for _, _, ev in chunk)
        for (number, line, _), result in zip(chunk, results, strict=True):
            if result.error is not None:
                summary.errors.append(f"line {number}: {result.error}")
                continue
            summary.routed += 1
            summary.degraded += result.degraded
            for dest in result.allowed:
                outputs.write(dest, line)
                summary.delivered[dest] += 1
            for dest in result.blocked:
                summary.blocked[dest] += 1
    summary.seconds = time.perf_counter() - started
    return summary


def _destinations(value: str) -> tuple[str, ...]:
    ids = tuple(d.strip() for d in value.split(",") if d.strip())
    if not ids:
        raise argparse.ArgumentTypeError("give at least one destination id")
    return ids


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="route_events.py",
        description="Route Segment events (JSON lines) to the destinations their users consented to, "
        "asking the consent sidecar; one JSON-lines file per destination in --out.",
        epilog="Exit status: 0 every line routed; 1 some lines not routed (bad JSON or rejected by the sidecar); "
        "2 usage error, or the sidecar unreachable with --failure-policy raise.",
    )
    p.add_argument("input", nargs="?", default="-", help="JSON-lines file of Segment events (default: stdin)")
    p.add_argument("--out", required=True, type=Path, help="directory for the per-destination outputs (created)")
    p.add_argument("--target", default="127.0.0.1:50051", help="sidecar address, host:port or unix:/path "
                   "(default: %(default)s)")
    p.add_argument("--destinations", type=_destinations, default=(), metavar="ID[,ID...]",
                   help="destinations to route to (default: every destination the mapping knows)")
    p.add_argument("--batch-size", type=_positive, default=500, metavar="N",
                   help="events per DecideBatch call (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="deadline of each sidecar call, retries included (default: %(default)s)")
    p.add_argument("--failure-policy", choices=[f.value for f in FailurePolicy], default="fail_closed",
                   help="what decides when the sidecar is unreachable (default: %(default)s)")
    p.add_argument("--mappings", type=Path, metavar="FILE",
                   help="the mapping file, for --failure-policy embedded (and to let fail_closed know it)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ns = p.parse_args(argv)
    if ns.failure_policy == "embedded" and ns.mappings is None:
        p.error("--failure-policy embedded needs --mappings")
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    ns.out.mkdir(parents=True, exist_ok=True)
    outputs = Outputs(ns.out)
    source: IO[str] = sys.stdin if ns.input == "-" else open(ns.input, encoding="utf-8")  # noqa: SIM115
    try:
        with ConsentClient(
            ns.target, timeout=ns.timeout, failure_policy=ns.failure_policy, mappings_path=ns.mappings,
            batch_size=ns.batch_size,
        ) as client:
            summary = route(client, source, outputs, destinations=ns.destinations, batch_size=ns.batch_size)
    except ConsentError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        outputs.close()
        if source is not sys.stdin:
            source.close()
    if ns.json:
        print(json.dumps(summary.to_json(), sort_keys=True))
    else:
        summary.print_text(sys.stdout)
    return EXIT_SOME_FAILED if summary.errors else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
