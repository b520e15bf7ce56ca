"""`consent-sidecar inspect`: the Source Debugger, offline: what the pipeline will do with a file of events.

Opens the inputs (JSON Lines files, `.gz` files, `-` for stdin) one after the other, feeds them
to `consent_sidecar.inspection.Inspector` (the server's validation and compiled index), shows a
progress bar on stderr when stderr is a terminal, and prints the report: a summary table
(default) or the JSON report. Exit 0 when the inputs were read (invalid lines are part of the
report), 1 when a mapping or an input cannot be read, 2 for usage errors. Must never decide
anything itself nor hold more than one line of an input at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from consent_sidecar.cli import connection, output
from consent_sidecar.cli.flags import PROG, Verbs, verb
from consent_sidecar.cli.local import load_index

__all__ = ["register", "run_inspect"]

_BUFFER = 1 << 20


def register(verbs: Verbs) -> None:
    p = verb(verbs, "inspect", run_inspect,
             "report what a mapping does with Segment events (JSON Lines files, .gz, or - for stdin), offline")
    p.add_argument("--mappings", required=True, metavar="FILE", help="the mapping file that decides")
    p.add_argument("--against", metavar="FILE",
                   help="a second mapping file: also count the decisions that would change under it")
    p.add_argument("--destinations", metavar="D,...",
                   help="comma-separated destinations to decide (default: every destination the mapping knows)")
    connection.add_output_flag(p)
    p.add_argument("events", nargs="+", metavar="EVENTS", help="JSON Lines files of Segment events; .gz; - = stdin")


def _destinations(ns: argparse.Namespace) -> list[str] | None:
    if ns.destinations is None:
        return None
    items = [d.strip() for d in ns.destinations.split(",")]
    if not all(items):
        parser: argparse.ArgumentParser = ns.parser
        parser.error(f"argument --destinations: empty item in {ns.destinations!r}")
    return items


@contextlib.contextmanager
def _open(path: str) -> Iterator[tuple[IO[bytes], Callable[[], int]]]:
    """The input as a binary stream, and where in it the reader is (bytes of the file on disk)."""
    if path == "-":
        stdin = sys.stdin.buffer
        yield stdin, lambda: 0
        return
    raw = open(path, "rb", buffering=_BUFFER)  # noqa: SIM115 - closed below
    try:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz, raw.tell  # type: ignore[misc]
        else:
            yield raw, raw.tell
    finally:
        raw.close()


def _progress_bar(paths: list[str]) -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    total = None
    if "-" not in paths:
        with contextlib.suppress(OSError):
            total = sum(os.path.getsize(p) for p in paths)
    try:  # a terminal that reports no size (0 x 0) would get no bar at all
        size = os.get_terminal_size(sys.stderr.fileno())
        columns, rows = size.columns or 80, size.lines or 24
    except OSError:
        columns, rows = 80, 24
    return tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, desc="inspect", leave=False,
                ncols=columns, nrows=rows)


def run_inspect(ns: argparse.Namespace) -> int:
    from consent_core.errors import InvalidArgument

    from consent_sidecar.inspection import Inspector

    parser: argparse.ArgumentParser = ns.parser
    if ns.events.count("-") > 1:
        parser.error("stdin (-) can be read only once")
    destinations = _destinations(ns)
    index = load_index(ns.mappings)
    if index is None:
        return 1
    against = None
    if ns.against is not None:
        against = load_index(ns.against)
        if against is None:
            return 1
    try:
        inspector = Inspector(index, destinations, against=against)
    except InvalidArgument as e:
        parser.error(f"argument --destinations: {e}")
    bar = _progress_bar(ns.events)
    done = 0  # bytes of the inputs already finished
    try:
        for path in ns.events:
            try:
                with _open(path) as (stream, position):
                    def progress(position: Callable[[], int] = position, base: int = done) -> None:
                        bar.update(base + position() - bar.n)

                    inspector.feed(stream, progress if bar is not None else None)
                    done += position()
            except OSError as e:  # gzip.BadGzipFile included
                where = "stdin" if path == "-" else path
                print(f"{PROG} inspect: {where}: cannot read: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
                return 1
            except EOFError as e:  # a truncated .gz
                print(f"{PROG} inspect: {path}: cannot read: {e}", file=sys.stderr)
                return 1
    finally:
        if bar is not None:
            bar.close()
    report = inspector.report()
    if ns.output == "json":
        print(output.dumps(report))
    else:
        print(_table(report))
    return 0


def _table(r: dict[str, Any]) -> str:
    invalid = str(r["invalid"])
    if r["invalid_lines"]:
        more = ", ..." if r["invalid"] > len(r["invalid_lines"]) else ""
        invalid += f" (lines {', '.join(map(str, r['invalid_lines']))}{more})"
    rows: list[tuple[object, ...]] = [
        ("events", r["events"]),
        ("invalid", invalid),
        ("with consent", r["with_consent"]),
        ("without consent", r["without_consent"]),
        ("  consent object without categoryPreferences", r["consent_without_preferences"]),
        ("preference updated", r["preference_updated"]),
    ]
    for cid, u in r["unknown_categories"].items():
        hint = f"; did you mean {u['did_you_mean']}?" if u["did_you_mean"] else ""
        rows.append(("unknown category", f"{cid} ({u['events']} events{hint})"))
    for cid in r["unused_categories"]:
        rows.append(("unused category", f"{cid} (no event mentions it: its destinations are blocked "
                                        "for every consenting user)"))
    lines = [output.table(("", ""), rows).split("\n", 1)[1], ""]
    changes = r.get("changes")
    headers = ["DESTINATION", "ALLOWED", "BLOCKED"]
    if changes is not None:
        headers += ["ALLOWED->BLOCKED", "BLOCKED->ALLOWED"]
    rows = []
    for d, counts in r["destinations"].items():
        row: list[object] = [d, counts["allowed"], counts["blocked"]]
        if changes is not None:
            row += [changes[d]["allowed_to_blocked"], changes[d]["blocked_to_allowed"]]
        rows.append(tuple(row))
    lines.append(output.table(headers, rows))
    return "\n".join(lines)
