"""`python -m bench.bench_adapters`: decode_gpp per call, against the decoders it builds on, in one run.

Times `consent_client.adapters.decode_gpp` on GPP strings of the shape US and EU traffic
carries (a header, a TC string, a usnat section with its GPC sub-segment) and, in the same run
and interleaved pass by pass, the baselines inside them: `decode_tc_string` on the tcfeuv2
part alone and `decode_us_privacy`. Each figure is the median of several timeit passes, in µs
per call; each GPP row's ratio is to the TC decode of its own tcfeuv2 part, so the ratio minus
one is what the header and usnat add. The goal for the typical string is <= 50 µs per decode.
In-process and single-threaded: no sidecar, no pinning needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass

from consent_client.adapters import decode_gpp, decode_tc_string, decode_us_privacy

GOAL_US = 50.0

# A TC string as CMPs write it for a consent to a handful of vendors (iabgpp-java's
# GppModelTest vector: vendors 1, 173 and 722, range-encoded) and one with a full vendor
# bitfield and a disclosed-vendors segment (TCF v2.3, GDPR::IAB::TCFv2's test suite).
TC_TYPICAL = "CPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAFpQAwAAgCtAWkAAAAAAA.QAAA.IAAA"
TC_FULL = (
    "CP188cAQKFpAAAHABBENBSFsAP_gAEPgAAiQKqNX_H__bW9r8X73aft0eY1P9_j77uQxBhfJE-4FzLvW_JwXx2ExNA36tqIKmRIEu3bBI"
    "QNlHJHUTVigaogVryHMak2cpTNKJ6BkiFMRM2dYCF5vm4tj-QKY5_r993dx2D-t_dv83dzyz81Hn3f5_2e0eLCdQ5-tDfv9bROb-9IPd"
    "_78v4v8_l_rk2_eT1n_tevr7D_-ft8__XW_9_fff_9Pn_-uB_-_3_vf_EFUwCTDQqIA-wJCQg0DCKBACoKwgIoFAQAAJA0QEAJgwKdgY"
    "ALrCRACAFAAMEAIAAQZAAgAAAgAQiACQAoEAAEAgUAAYAEAwEABAwAAgAsBAIAAQHQMUwIIFAsIEjMioUwIQoEggJbKhBICgQVwhCLPA"
    "IgERMFAAgAAAVgACAsFgcSSAlQkECXUG0AABAAgFEIFQgk9MAAwJmy1B4MG0ZWmAYPmCRDTAMgCIIyEAAAA.f_wACHwAAAAA"
)
USNAT = "CVVVkkkkkpFY.YA"  # every opt-out set, GPC on (iabgpp-es UsNat test vector)
HEADER_TCF_USNAT = "DBACMMA"  # section ids 2 (tcfeuv2) and 7 (usnat)
US_PRIVACY = "1YNN"
TYPICAL = "decode_gpp tcfeuv2+usnat (typical)"  # the row the goal is about


@dataclass(frozen=True)
class Row:
    name: str
    us: float  # median µs per call
    baseline: str | None = None  # the row this one's ratio is to

    def ratio(self, rows: dict[str, Row]) -> float | None:
        return None if self.baseline is None else self.us / rows[self.baseline].us


def cases() -> dict[str, tuple[Callable[[], object], str | None]]:
    """name -> (the call timed, the baseline row its ratio is to)."""
    typical = f"{HEADER_TCF_USNAT}~{TC_TYPICAL}~{USNAT}"
    full = f"{HEADER_TCF_USNAT}~{TC_FULL}~{USNAT}"
    tc_typical = "decode_tc_string (typical TC part)"
    tc_full = "decode_tc_string (full-bitfield TC part)"
    usp = "decode_us_privacy"
    return {
        tc_typical: (lambda: decode_tc_string(TC_TYPICAL), None),
        TYPICAL: (lambda: decode_gpp(typical), tc_typical),
        tc_full: (lambda: decode_tc_string(TC_FULL), None),
        "decode_gpp tcfeuv2+usnat (full bitfield)": (lambda: decode_gpp(full), tc_full),
        usp: (lambda: decode_us_privacy(US_PRIVACY), None),
        "decode_gpp usnat only": (lambda: decode_gpp(f"DBABLA~{USNAT}"), usp),
    }


def run(*, passes: int = 7, number: int = 2000) -> dict[str, Row]:
    """Median µs per call of each case, the cases interleaved pass by pass so that a slow
    moment of the machine hits them all alike."""
    timed = cases()
    for call, _ in timed.values():  # warm up, and fail fast if a vector stopped decoding
        call()
    samples: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(passes):
        for name, (call, _) in timed.items():
            samples[name].append(timeit.timeit(call, number=number) / number * 1e6)
    return {name: Row(name, statistics.median(samples[name]), timed[name][1]) for name in timed}


def format_rows(rows: dict[str, Row]) -> str:
    width = max(len(name) for name in rows)
    lines = [f"{'':{width}}  µs/call  ratio"]
    for row in rows.values():
        ratio = row.ratio(rows)
        shown = f"{ratio:5.2f}x to {row.baseline}" if ratio is not None else ""
        lines.append(f"{row.name:{width}}  {row.us:7.1f}  {shown}")
    typical = rows[TYPICAL].us
    verdict = "met" if typical <= GOAL_US else "MISSED"
    lines.append(f"goal: decode_gpp of the typical string <= {GOAL_US:g} µs: {verdict} ({typical:.1f} µs)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_adapters", description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=7, help="timeit passes per case (median reported)")
    parser.add_argument("--number", type=int, default=2000, help="calls per pass")
    args = parser.parse_args(argv)
    print(format_rows(run(passes=args.passes, number=args.number)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
