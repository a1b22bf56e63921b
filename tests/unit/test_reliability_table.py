"""The "Attacks and defences" table of docs/RELIABILITY.md names tests that exist, one
row per attack, and renders with or without the soak's figures."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from bench.attacks import ATTACKS, table_lines

ROOT = Path(__file__).resolve().parents[2]


@cache
def _tests_in(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text())
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    )


@pytest.mark.parametrize("ref", sorted({t for a in ATTACKS for t in a.tests}))
def test_every_test_the_table_names_exists(ref: str) -> None:
    path, _, name = ref.partition("::")
    assert path.startswith("tests/"), ref
    assert path.endswith(".py"), ref
    assert (ROOT / path).is_file(), f"no file {path}"
    assert name in _tests_in(path), f"no test {name} in {path}"


def test_every_attack_has_a_defence_a_test_and_a_figure() -> None:
    assert len({a.attack for a in ATTACKS}) == len(ATTACKS)
    for a in ATTACKS:
        assert a.defence, a.attack
        assert a.tests, a.attack
        assert a.asserted, a.attack
        assert "|" not in a.attack + a.defence + a.asserted, a.attack


def test_table_renders_one_row_per_attack_without_figures() -> None:
    lines = table_lines({})
    assert lines[0] == "## Attacks and defences"
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| Attack")]
    assert len(rows) == len(ATTACKS)
    assert all(row.count(" | ") == 3 for row in rows)


def test_a_measured_flood_puts_its_figure_before_what_the_tests_assert() -> None:
    stats = {"calls": 10, "success_rate": 1.0, "p50_ms": 3.0, "p99_ms": 9.0, "codes": {"OK": 10}}
    figures = {
        "abuse": {
            "phases": {
                "gzip": {
                    "attacker": {**stats, "codes": {"UNIMPLEMENTED": 10}},
                    "polite_reads": stats,
                    "polite_submits": stats,
                    "rss_kib_before": 70_000,
                    "rss_kib_peak": 71_000,
                }
            }
        }
    }
    [gzip] = [a for a in ATTACKS if a.attack.startswith("Gzip")]
    figure = gzip.figure(figures)
    assert figure.startswith("soak: 10 requests")
    assert "UNIMPLEMENTED" in figure
    assert gzip.asserted in figure
    assert gzip.figure({}) == gzip.asserted


def test_a_row_whose_part_did_not_run_keeps_its_earlier_measured_figure() -> None:
    stats = {"calls": 10, "success_rate": 1.0, "p50_ms": 3.0, "p99_ms": 9.0, "codes": {"OK": 10}}
    streams = {"flood": {"attempted": 4300, "held": 8}, "polite_reads": stats}
    measured = table_lines({"isolation": {"streams": {**streams, "polite_watches": stats}}})
    again = table_lines({}, previous="\n".join(measured))
    assert again == measured
    assert any("soak: 4300 streams tried" in line for line in again)
    # Rows without a measured figure, and a fresh figure, are never taken from before.
    assert table_lines({}, previous="") != measured
