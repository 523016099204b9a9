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
    # The run's checks all pass; the product's status (product_health) is shown apart, not counted.
    assert re.search(r"^  checks: (\d+)/\1 passed$", first, re.M), first[:3000]
    assert re.search(r"^  product health: (fresh|late|lagging|blocked)", first, re.M), first[:3000]
    # Quarantine reasons are grouped by a code and shown whole (never cut mid-sentence), and the
    # reading hint names an exact way to read, not a glob over every file.
    quarantined = first.split("== quarantined ==", 1)[1].split("\n==", 1)[0]
    codes = re.findall(r"^\s+[\d,]+\s+([a-z0-9_]+(?::[a-z0-9_]+)?)$", quarantined, re.M)
    samples = re.findall(r"^\s+e\.g\. (.+)$", quarantined, re.M)
    assert codes and len(samples) == len(codes)
    assert not [s for s in samples if s.endswith((",", ":"))], samples  # whole messages, never cut
    assert "flowsuite read clicks" in first and "*/*/*.parquet" not in first
    assert "refused, a private sink: HTTP 400" in first and "approve → state active" in first  # flow
    # the closed hours compacted and published: the Iceberg table equals their live files
    assert "equal to the sealed hours' live files, every (partition, offset) once" in first, first
    cdc = re.compile(r"warehouse table orders EQUALS the source table: (\d+) vs \1 rows")
    assert cdc.search(first) or "(skipped: no PostgreSQL server binaries" in first, first[-3000:]

    second = demo()
    assert int(re.search(r"consumed ([\d,]+)", second).group(1).replace(",", "")) == 3000  # only the new batch
    total = int(re.search(r"^total\s+([\d,]+)", second, re.M).group(1).replace(",", ""))
    quarantined = int(re.search(r"^([\d,]+) record\(s\) in ", second, re.M).group(1).replace(",", ""))
    assert total + quarantined == 6000
    assert cdc.search(second) or "(skipped: no PostgreSQL server binaries" in second  # the same history, continued
    assert (Path(flowsuite_home) / "dagster").is_dir()
