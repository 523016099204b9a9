"""`flowsuite demo` end to end, twice, on a temp home and the test broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from connectors.kafka import topic_partitions

REPO = Path(__file__).resolve().parents[2]


def test_demo_twice_lands_only_new_records(kafka_bootstrap, flowsuite_home):
    # Only this test uses the topic `clicks` on the session broker (others make fresh topics).
    assert not topic_partitions(kafka_bootstrap, "clicks")
    env = {**os.environ, "FLOWSUITE_KAFKA_BOOTSTRAP": kafka_bootstrap, "CI": "true"}

    def demo() -> str:
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("flowsuite")), "demo", "--events", "3000", "--hours", "3", "--seed", "11"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    first = demo()
    consumed = int(re.search(r"consumed ([\d,]+)", first).group(1).replace(",", ""))
    assert consumed == 3000
    assert "== landed per hour ==" in first and "== quarantined ==" in first
    assert "== committed offsets ==" in first and "make dev" in first

    second = demo()
    assert int(re.search(r"consumed ([\d,]+)", second).group(1).replace(",", "")) == 3000  # only the new batch
    total = int(re.search(r"^total\s+([\d,]+)", second, re.M).group(1).replace(",", ""))
    quarantined = int(re.search(r"^([\d,]+) record\(s\) in ", second, re.M).group(1).replace(",", ""))
    assert total + quarantined == 6000
    assert (Path(flowsuite_home) / "dagster").is_dir()
