"""Ratios over interleaved rounds: median, spread and whether the goal is met.

Every bench measures a figure and its ceiling side by side in each round (order alternated),
so a round's ratio compares two measurements taken under the same load. A ratio row carries
the per-round ratios, their min / median / max, and `met` (judged on the median; `met_every`
says whether every round met it). `goal` is a number for "ratio >= goal", or a string with an
operator: ">= 0.8", "<= 5 s" (an absolute bound on the figure), "<= 0.5".
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence

_GOAL = re.compile(r"(>=|<=)\s*([0-9]+(?:\.[0-9]+)?)\s*(.*)$")


def parse_goal(goal) -> tuple[str, float, bool] | None:
    """(operator, bound, on_figure) from a goal, or None when there is none to judge.

    ">= 0.8" → (">=", 0.8, False): the ratio at least 0.8; "<= 0.10 of the hour's compaction" →
    ("<=", 0.1, False): the ratio at most 0.1; ">= 3x faster" → (">=", 3, False); "<= 5 s",
    "p99 <= 200 ms", "<= 30 MB" → a bound on the figure itself (its unit named after the number).
    A number alone means ">= number". "~15 s" and the like are context, not goals: None.
    """
    if goal is None:
        return None
    if isinstance(goal, int | float):
        return ">=", float(goal), False
    m = _GOAL.search(str(goal).strip())
    if m is None:
        return None
    op, number, rest = m.group(1), float(m.group(2)), m.group(3).strip()
    if "+" in rest:  # "<= 30 s + landing": a bound with a term this row does not measure
        return None
    on_figure = bool(rest) and not rest.startswith(("x", "of ", "of the", "×"))
    return op, number, on_figure


def judged(value: float, goal) -> bool | None:
    g = parse_goal(goal)
    if g is None:
        return None
    op, bound, _ = g
    return value >= bound if op == ">=" else value <= bound


def ratio_row(what: str, figures: Sequence[float], ceilings: Sequence[float], goal, unit: str,
              ratios: Sequence[float] | None = None, **extra) -> dict:
    """A result row from per-round figures and ceilings (same length, same rounds)."""
    if ratios is None:
        ratios = [f / c for f, c in zip(figures, ceilings, strict=True)]
    g = parse_goal(goal)
    on_figure = bool(g and g[2])
    judged_values = list(figures) if on_figure else list(ratios)
    med = statistics.median(judged_values)
    row = {
        "what": what,
        "figure": statistics.median(figures),
        "ceiling": statistics.median(ceilings),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "rounds": [round(r, 4) for r in ratios],
        "goal": goal,
        "unit": unit,
        "met": judged(med, goal),
        "met_every": None if g is None else all(judged(v, goal) for v in judged_values),
        **extra,
    }
    return row


def spread(row: dict) -> str:
    return f"{row['ratio_min']:.3g} / {row['ratio']:.3g} / {row['ratio_max']:.3g}"


def verdict(row: dict) -> str:
    if row.get("met") is None:
        return "-"
    if row["met"] and row.get("met_every"):
        return "met"
    if row["met"]:
        return "met (median; not every round)"
    return "NOT met"


def print_rows(rows: Sequence[dict]) -> None:
    """The table every bench prints: figure, ceiling (medians), ratio min / median / max, goal."""
    print(f"{'what':<60} {'figure':>14} {'ceiling':>14} {'ratio min/med/max':>22} {'goal':>10}  verdict")
    for r in rows:
        n = len(r.get("rounds", []))
        print(f"{r['what'][:60]:<60} {_fmt(r['figure']):>14} {_fmt(r['ceiling']):>14} {spread(r):>22} "
              f"{str(r['goal'] or '-'):>10}  {verdict(r)} ({n} round{'s' if n != 1 else ''})")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"
