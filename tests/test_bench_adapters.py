"""bench/bench_adapters.py: the decode_gpp row runs end to end with tiny sizes (no timing asserted)."""

from __future__ import annotations

import pytest

from bench import bench_adapters


def test_the_row_runs_and_formats() -> None:
    rows = bench_adapters.run(passes=1, number=2)
    assert set(rows) == set(bench_adapters.cases())
    assert all(row.us > 0 for row in rows.values())
    for row in rows.values():
        ratio = row.ratio(rows)
        assert (ratio is None) == (row.baseline is None)
    text = bench_adapters.format_rows(rows)
    assert "decode_gpp tcfeuv2+usnat (typical)" in text and "goal: decode_gpp" in text


def test_the_vectors_decode_as_described() -> None:
    from consent_client.adapters import decode_gpp

    decoded = decode_gpp(f"{bench_adapters.HEADER_TCF_USNAT}~{bench_adapters.TC_TYPICAL}~{bench_adapters.USNAT}")
    assert decoded.section_ids == [2, 7]
    assert decoded.tcfeuv2 is not None and decoded.tcfeuv2.vendor_consents == {1, 173, 722}
    usnat = decoded.fields("usnat")
    assert usnat is not None and usnat["SaleOptOut"] == 1 and usnat["Gpc"] is True


def test_main_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_adapters.main(["--passes", "1", "--number", "1"]) == 0
    assert bench_adapters.TYPICAL in capsys.readouterr().out
