"""The reliability table: one row per fault scenario, printed at the end of the pytest session.

Every fault test (tests/reliability and the crash tests under tests/connectors) calls `record(...)` with
what it did: how many iterations (kills, restarts, triggers, examples), how many records it
checked, how many were lost or duplicated (always 0 when the test passes: it asserts that),
and how many iterations ended in a recovered state. `tests/reliability/conftest.py` prints the
rows in `pytest_terminal_summary` and writes them to `bench/results/reliability.json`.

Strength comes from `FLOWSUITE_RELIABILITY`: unset → the quick counts `make test` runs;
`full` → at least 50 iterations per scenario (`make reliability`); an integer N → N (at
least the quick count).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

SEED = int(os.environ.get("FLOWSUITE_RELIABILITY_SEED", "20261126"))


def strength() -> str:
    return os.environ.get("FLOWSUITE_RELIABILITY", "") or "quick"


def iterations(quick: int, full: int = 50) -> int:
    """How many iterations a scenario runs at the current strength."""
    level = strength()
    if level == "full":
        return max(full, 50)
    if level.isdigit():  # at least N, never fewer than the quick count
        return max(quick, int(level))
    return quick


@dataclass
class Row:
    scenario: str
    iterations: int
    records: int
    lost: int
    duplicated: int
    recovered: int
    note: str = ""


ROWS: list[Row] = []


def record(
    scenario: str,
    iterations: int,
    records: int,
    lost: int = 0,
    duplicated: int = 0,
    recovered: int | None = None,
    note: str = "",
) -> None:
    """Add a scenario's row to the session's table (`recovered` defaults to every iteration)."""
    ROWS.append(
        Row(
            scenario,
            iterations,
            records,
            lost,
            duplicated,
            iterations if recovered is None else recovered,
            note,
        )
    )


def render(rows: list[Row]) -> str:
    head = ["scenario", "iterations", "records", "lost", "duplicated", "recovered", "note"]
    body = [
        [
            r.scenario,
            str(r.iterations),
            str(r.records),
            str(r.lost),
            str(r.duplicated),
            str(r.recovered),
            r.note,
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join(
        [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)]
    )


def as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
