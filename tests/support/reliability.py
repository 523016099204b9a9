"""What the fault scenarios share: the demo spec on a fresh topic, a worker launcher, and the
exactly-once audit by independent readers (tests/support.py), which returns the counts the
reliability table reports instead of only asserting them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from connectors.spec import DataProductSpec, parse_spec_file
from tests.support import positions, read_hive, read_topic

ROOT = Path(__file__).resolve().parents[2]
LAND_WORKER = ROOT / "tests" / "workers" / "land_worker.py"


def clicks(topic: str, **update) -> DataProductSpec:
    return parse_spec_file(ROOT / "dataproducts" / "clicks.yaml").model_copy(
        update={"topic": topic, **update}
    )


def start_land_worker(
    spec: DataProductSpec,
    lake_url: str,
    metastore_url: str,
    bootstrap: str,
    *,
    run_id: str | None = None,
    lease: float = 2.0,
    batch_size: int = 500,
    max_records: int | None = None,
    env: dict | None = None,
) -> subprocess.Popen:
    args = [
        sys.executable,
        str(LAND_WORKER),
        spec.model_dump_json(),
        lake_url,
        metastore_url,
        bootstrap,
        "--lease",
        str(lease),
        "--batch-size",
        str(batch_size),
    ]
    if run_id:
        args += ["--run-id", run_id]
    if max_records is not None:
        args += ["--max-records", str(max_records)]
    child_env = {k: v for k, v in os.environ.items() if k != "FLOWSUITE_CRASH_AT"}
    child_env.update(env or {})
    child_env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        args, env=child_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@dataclass
class Audit:
    records: int  # records of the topic
    lost: int  # valid records not in the lake + invalid ones not in the quarantine
    duplicated: int  # extra copies in either

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.duplicated == 0


def audit_lake(
    lake_root: Path,
    product: str,
    bootstrap: str,
    topic: str,
    partitions: int,
    valid_by_key: dict[bytes, bool] | None = None,
) -> Audit:
    """Compare the topic, read with a plain consumer, with the lake, read as a batch job would.

    With `valid_by_key`, valid records must be in the lake and invalid ones in the quarantine;
    without it, every record must be in exactly one of the two."""
    topic_records = read_topic(bootstrap, topic, partitions)
    landed = positions(read_hive(lake_root / product))
    quarantined = positions(read_hive(lake_root / "_quarantine" / product))
    if valid_by_key is None:
        expected_all = Counter(topic_records.keys())
        seen = landed + quarantined
        lost = sum((expected_all - seen).values())
        dup = sum((seen - expected_all).values())
    else:
        exp_valid = Counter(pos for pos, (k, _) in topic_records.items() if valid_by_key[k])
        exp_invalid = Counter(pos for pos, (k, _) in topic_records.items() if not valid_by_key[k])
        lost = sum((exp_valid - landed).values()) + sum((exp_invalid - quarantined).values())
        dup = sum((landed - exp_valid).values()) + sum((quarantined - exp_invalid).values())
    return Audit(len(topic_records), lost, dup)
