"""(i) `consent-sidecar inspect`: events per second on one core, and peak memory against the file's length.

Generates JSON Lines of realistic Segment track events (about 0.9 KB each: context with page,
library, user agent; consent from a handful of vectors, some without consent, a few with
`integrations`, preference events, misspelt ids and invalid lines), then runs
`consent-sidecar inspect` on them in a child process pinned to one core, reading its wall
time and peak RSS (`ru_maxrss` of the child). Runs two sizes so that flat memory shows: the
peak RSS of 1,000,000 events next to that of 100,000.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAPPINGS = Path(__file__).resolve().parent.parent / "examples" / "mappings.yaml"
GOAL = 200_000  # events per second

_CONSENTS: list[dict[str, Any] | None] = [
    {"C0001": True, "C0002": True, "C0003": True, "C0004": True, "C0005": True},
    {"C0001": True, "C0002": True, "C0003": False, "C0004": False, "C0005": False},
    {"C0001": True, "C0002": False, "C0003": False, "C0004": False, "C0005": False},
    {"C0001": True, "C0002": True, "C0003": True, "C0004": False, "C0005": False},
    {"C0001": True, "c0002": True, "C0004": True},  # a misspelt (lower-case) id
    {},  # a consent object granting nothing
    None,  # no consent object
]


def event(rng: random.Random, i: int) -> dict[str, Any]:
    """One realistic analytics.js track event."""
    ev: dict[str, Any] = {
        "type": "track",
        "event": rng.choice(("Order Completed", "Product Viewed", "Checkout Started", "Signed Up")),
        "messageId": f"ajs-next-{1_700_000_000_000 + i}-{rng.getrandbits(64):016x}",
        "anonymousId": f"{rng.getrandbits(128):032x}",
        "userId": f"user-{rng.randrange(1_000_000)}",
        "timestamp": f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        "properties": {
            "order_id": f"{rng.getrandbits(96):024x}", "total": round(rng.random() * 200, 2), "currency": "USD",
            "products": [{"product_id": f"{rng.getrandbits(96):024x}", "sku": "45790-32", "name": "Monopoly",
                          "price": 19, "quantity": rng.randrange(1, 4)}],
        },
        "context": {
            "ip": f"203.0.113.{rng.randrange(256)}",
            "library": {"name": "analytics.js", "version": "next-1.70.0"},
            "locale": "en-US",
            "page": {"path": "/checkout", "url": "https://shop.example.com/checkout", "title": "Checkout"},
            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/124.0 Safari/537.36",
        },
    }
    consent = rng.choice(_CONSENTS)
    if consent is not None:
        ev["context"]["consent"] = {"categoryPreferences": consent}
    if i % 50 == 0:
        ev["integrations"] = {"All": True, "mixpanel": False}
    if i % 1000 == 1:
        ev["event"] = "Segment Consent Preference Updated"
    return ev


def generate(path: Path, n: int, seed: int = 13) -> int:
    """Writes n lines (one in 10,000 invalid) to path; returns its size in bytes."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            if i % 10_000 == 7:
                f.write('{"type": "track", "context": \n')  # a truncated line
            else:
                f.write(json.dumps(event(rng, i), separators=(",", ":")) + "\n")
    return path.stat().st_size


@dataclass(frozen=True, slots=True)
class Run:
    events: int
    bytes: int
    seconds: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def run_once(path: Path, events: int) -> Run:
    """One `inspect --output json` in a child pinned to one core; its wall time and peak RSS."""
    cli = Path(sys.executable).parent / "consent-sidecar"
    cmd = [str(cli), "inspect", "--mappings", str(MAPPINGS), "--output", "json", str(path)]
    cpu = sorted(os.sched_getaffinity(0))[-1] if hasattr(os, "sched_getaffinity") else None
    pre = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, preexec_fn=pre)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS, not the largest so far
        seconds = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        assert child.returncode == 0, child.returncode
        out.seek(0)
        report = json.loads(out.read())
    assert report["events"] == events, report["events"]
    return Run(events, path.stat().st_size, seconds, usage.ru_maxrss / 1024)


def run(sizes: tuple[int, ...] = (100_000, 1_000_000), rounds: int = 3) -> list[Run]:
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-inspect-") as d:
        for n in sizes:
            path = Path(d) / f"events-{n}.jsonl"
            generate(path, n)
            best = min((run_once(path, n) for _ in range(rounds)), key=lambda r: r.seconds)
            out.append(best)
            path.unlink()
    return out


def format_rows(rows: list[Run]) -> str:
    lines = [f"{'events':>10}  {'file MB':>8}  {'seconds':>8}  {'events/s':>10}  {'peak RSS MB':>11}  goal"]
    for r in rows:
        ok = "ok" if r.rate >= GOAL else f"below {GOAL:,}/s"
        lines.append(f"{r.events:>10,}  {r.bytes / 1e6:>8.0f}  {r.seconds:>8.2f}  {r.rate:>10,.0f}  "
                     f"{r.peak_rss_mb:>11.0f}  {ok}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_rows(run()))
