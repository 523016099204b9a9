"""Prints the reliability table (tests/support/reliability_table.py) at the end of the session.

The rows come from every fault scenario that ran in this session, wherever it lives (the
crash tests of landing, warehouse sync and compaction stay in tests/connectors and record
their rows too). At `FLOWSUITE_RELIABILITY=full` (or N) the table is also written to
bench/results/reliability.json for docs/reliability.md and bench/results.md.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from tests.support.reliability_table import ROWS, as_dicts, render, strength

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.json"


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # pytest's hook signature
    if not ROWS:
        return
    terminalreporter.section(f"reliability (strength: {strength()})")
    terminalreporter.write_line(render(ROWS))
    lost = sum(r.lost for r in ROWS)
    dup = sum(r.duplicated for r in ROWS)
    terminalreporter.write_line(f"total: {len(ROWS)} scenario rows, {lost} lost, {dup} duplicated")
    if strength() != "quick":
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps(
                {
                    "bench": "reliability",
                    "strength": strength(),
                    "exitstatus": int(exitstatus),
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "machine": f"{platform.machine()}, Python {platform.python_version()}",
                    "rows": as_dicts(ROWS),
                },
                indent=1,
            )
            + "\n"
        )
