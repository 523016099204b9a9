"""The judging logic of the benchmark report (bench/stats.py): goals with >= and <=, on the
ratio or on the figure, over rounds."""

from __future__ import annotations

import pytest

from bench.stats import judged, parse_goal, ratio_row


@pytest.mark.parametrize(
    ("goal", "parsed"),
    [
        (">= 0.8", (">=", 0.8, False)),
        (3, (">=", 3.0, False)),
        (">= 3x faster", (">=", 3.0, False)),
        ("<= 0.10 of the hour's compaction", ("<=", 0.1, False)),
        ("<= 5 s", ("<=", 5.0, True)),
        ("p99 <= 200 ms", ("<=", 200.0, True)),
        ("<= 30 s + landing", None),
        ("~15 s", None),
        (None, None),
    ],
)
def test_parse_goal(goal, parsed):
    assert parse_goal(goal) == parsed


def test_judged_both_directions():
    assert judged(0.81, ">= 0.8") is True
    assert judged(0.79, ">= 0.8") is False
    assert judged(0.09, "<= 0.10") is True
    assert judged(0.30, "<= 0.10") is False
    assert judged(1.0, "~15 s") is None


def test_ratio_row_judges_the_median_and_every_round():
    row = ratio_row("x", [9.0, 10.0, 8.0], [10.0, 10.0, 10.0], ">= 0.85", "records/s")
    assert row["ratio"] == pytest.approx(0.9)
    assert (row["ratio_min"], row["ratio_max"]) == (pytest.approx(0.8), pytest.approx(1.0))
    assert row["met"] is True and row["met_every"] is False


def test_ratio_row_lower_is_better_goal_on_the_figure():
    # a time goal on the figure: judged on the figures, not on their ratio to the ceiling
    row = ratio_row("tick", [0.2, 0.3, 0.6], [0.02, 0.02, 0.02], "<= 0.5 s", "s")
    assert row["met"] is True and row["met_every"] is False
    row = ratio_row("republish", [40.0, 35.0], [100.0, 110.0], "<= 0.10", "ms")
    assert row["met"] is False and row["met_every"] is False
