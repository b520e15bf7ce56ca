"""The console benchmark row runs end to end, and the 1,000-category page stays within its budget."""

from __future__ import annotations

from bench import bench_console


async def test_the_categories_page_of_1000_categories_renders_within_budget() -> None:
    rows = await bench_console.run(rounds=1, requests=5)
    by = {r.name: r for r in rows}
    assert list(by) == ["rpc", "render", "page", "small"]
    assert all(r.median_ms > 0 for r in rows)
    assert by["page"].median_ms < bench_console.BUDGET_MS, bench_console.format_rows(rows)
    assert by["small"].median_ms < by["page"].median_ms
    assert "budget: the 1000-category page under 100 ms server-side: met" in bench_console.format_rows(rows)


def test_the_benchmark_mapping_has_the_limit_of_categories() -> None:
    text = bench_console.mapping(bench_console.CATEGORIES)
    assert text.count("  - id: C") == 1000 and "C00999" in text
