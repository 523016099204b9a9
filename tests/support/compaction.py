"""Shared by the compaction, replay, hourly-asset and schedule tests: real landings of demo
clicks through the real broker, several small ones, so each hour holds many small files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from connectors.flows import land
from connectors.lake import Lake, hour_dir
from connectors.metastore import Metastore
from connectors.settings import REPO_ROOT
from connectors.spec import DataProductSpec, parse_spec_file
from examples.demo_data import generate_clicks, produce

# Event times of the demo clicks fall in the three hours ending at NOW.
NOW = datetime(2026, 1, 10, 12, 30, tzinfo=UTC)
HOURS = ["2026-01-10-10", "2026-01-10-11", "2026-01-10-12"]
LATER = datetime(2026, 1, 11, tzinfo=UTC)  # every hour above is closed


def clicks_spec(topic: str, name: str = "clicks", **lake: object) -> DataProductSpec:
    spec = parse_spec_file(Path(REPO_ROOT) / "dataproducts" / "clicks.yaml")
    return spec.model_copy(
        update={
            "name": name,
            "topic": topic,
            "partitioning": spec.partitioning.model_copy(update={"start": datetime(2026, 1, 1, tzinfo=UTC)}),
            "sinks": spec.sinks.model_copy(update={"lake": spec.sinks.lake.model_copy(update=dict(lake))}) if lake else spec.sinks,
        }
    )


def land_in_rounds(spec, bootstrap, lake, metastore, rounds=3, per_round=600, seed=1, now=NOW) -> int:
    """Produce and land `rounds` times; returns the number of records landed (not quarantined)."""
    valid = 0
    for r in range(rounds):
        report = produce(bootstrap, spec.topic, generate_clicks(per_round, 3, 0.02, seed=seed + r, now=now), partitions=2)
        assert report.produced == per_round
        result = land(spec, lake=lake, metastore=metastore, bootstrap=bootstrap, run_id=f"land-{seed}-{r}", idle_timeout_s=10)
        assert result.consumed == per_round
        valid += result.landed
    return valid


def hour_rows(lake: Lake, metastore: Metastore, product: str, hour: str | None = None) -> pa.Table:
    files = metastore.live_files(product, hour)
    tables = [lake.read_table(f.path) for f in files]
    return pa.concat_tables(tables) if tables else pa.table({})


def pairs(table: pa.Table) -> list[tuple[int, int]]:
    p = table.column("_partition").to_numpy().astype(np.int64)
    o = table.column("_offset").to_numpy().astype(np.int64)
    return sorted(zip(p.tolist(), o.tolist(), strict=True))


def sorted_rows(table: pa.Table) -> pa.Table:
    """The rows in (partition, offset) order, as one chunk; compare with `==` (Table.equals:
    byte-exact, so it also holds for strings that are not valid UTF-8)."""
    return table.sort_by([("_partition", "ascending"), ("_offset", "ascending")]).combine_chunks()


_CHILD = """
import sys
from datetime import datetime, UTC
from connectors.flows import compact_hour
from connectors.metastore import Metastore
from tests.support.compaction import clicks_spec
from tests.support.runs import run_at
from tests.support.s3 import env_lake
spec = clicks_spec(sys.argv[1])
for h in sys.argv[4:]:
    run = run_at(lake=env_lake(sys.argv[2]), metastore=Metastore(sys.argv[3]), run_id="child",
                 now=datetime(2026, 1, 11, tzinfo=UTC), lease_s=1.0)
    compact_hour(spec, h, run, target_file_bytes=int(sys.argv[0] == "" or 20000))
"""


def compaction_child(spec, lake, meta_url, hours, crash_at=None):
    env = dict(os.environ)
    env.pop("FLOWSUITE_CRASH_AT", None)
    if crash_at:
        env["FLOWSUITE_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, spec.topic, lake.url, meta_url, *hours],
        env=env, cwd=os.getcwd(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def assert_exactly_once(spec, lake, metastore, expected):
    live = metastore.live_files(spec.name)
    paths = [f.path for f in live]
    assert len(paths) == len(set(paths)), "the metastore lists a file twice"
    rows = hour_rows(lake, metastore, spec.name)
    assert Counter(pairs(rows)) == Counter(expected), "a record is missing or live twice"
    on_disk = {p for h in HOURS for p in lake.list_files(hour_dir(spec.name, h)) if p.endswith(".parquet")}
    assert on_disk == set(paths), f"orphans on disk: {sorted(on_disk - set(paths))}"
    assert metastore.files_in_states(spec.name, ["pending", "replaced"]) == []
