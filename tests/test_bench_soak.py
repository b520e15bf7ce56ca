"""bench/bench_soak.py for a few seconds: it runs end to end against a real sidecar (no figure asserted).

Only what must hold however loaded the machine is: no call hung past its deadline, the sidecar
stopped cleanly on SIGTERM, and its audit chain verifies.
"""

from __future__ import annotations

import pytest

from bench import bench_soak


@pytest.mark.slow
def test_a_short_soak_hangs_no_call_and_leaves_a_chain_that_verifies() -> None:
    report = bench_soak.run(seconds=4.0, warmup=1.0)
    assert report.calls > 0
    assert report.hung == 0, bench_soak.format_report(report)
    assert report.verify_code == 0, report.verify_output
    assert report.exit_code == 0
    assert "valid/Decide" in report.codes and report.codes["valid/Decide"]["OK"] > 0
