"""Mapping-file parse time: the round-trip (pure Python) composer against libyaml's, in one run.

`python -m bench.bench_yaml [--rounds N]`: `parse_mapping` on examples/mappings.yaml, the
12 x 200 workload mapping (bench/workload.py) and a 100 x 10,000 one, once with the C composer
(ruamel.yaml.clib) and once forced onto the pure path -- the baseline, which is exactly what
every parse did before the C composer. Rows alternate within each round; medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from consent_core.mapping_file import parse_mapping, reader

from bench.workload import build, build_scale

ROOT = Path(__file__).resolve().parent.parent


def _time(fn: Callable[[], object], min_seconds: float) -> float:
    """Median seconds per call over at least `min_seconds` (and at least 3 calls)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_yaml", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.5, help="measured seconds per row and round")
    args = parser.parse_args(argv)
    if not reader._C_COMPOSER_AVAILABLE:
        print("ruamel.yaml.clib is not importable: both rows would be the pure path")
        return 1
    files = {
        "examples/mappings.yaml": (ROOT / "examples" / "mappings.yaml").read_text(),
        "workload 12 x 200": build(n_events=1).mapping_yaml(),
        "scale 100 x 10,000": build_scale(100, 10_000, n_events=1).mapping_yaml(),
    }
    print(f"{'file':<24} {'KiB':>6} {'pure ms':>9} {'C ms':>9} {'speed-up':>9}")
    for name, text in files.items():
        assert parse_mapping(text, name) is not None
        pure: list[float] = []
        fast: list[float] = []
        seconds = args.seconds if len(text) < 100_000 else 0.0  # the big one: 3 calls per round
        for _ in range(args.rounds):
            reader._C_COMPOSER_AVAILABLE = False
            try:
                pure.append(_time(lambda text=text, name=name: parse_mapping(text, name), seconds))
            finally:
                reader._C_COMPOSER_AVAILABLE = True
            fast.append(_time(lambda text=text, name=name: parse_mapping(text, name), seconds))
        p, f = statistics.median(pure), statistics.median(fast)
        print(f"{name:<24} {len(text) / 1024:>6.0f} {p * 1e3:>9.2f} {f * 1e3:>9.2f} {p / f:>8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
