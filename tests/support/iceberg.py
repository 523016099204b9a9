"""Shared by the Iceberg tests: sealed hours from real landings, and the exactly-once check."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from connectors.flows import compact_hour
from connectors.lake import Lake, hour_dir
from connectors.metastore import Metastore
from connectors.tables import IcebergTables
from connectors.tables.publish import SEQ_PROPERTY
from tests.support.compaction import HOURS, LATER, clicks_spec, land_in_rounds, pairs
from tests.support.runs import run_at

__all__ = ["HOURS", "LATER", "assert_table_equals_metastore", "child", "comparable", "seal", "seqs_in_ancestry"]


def seal(topic: str, bootstrap: str, lake: Lake, metastore: Metastore, **lake_spec):
    """Land three rounds of demo clicks and compact the three (closed) hours: sealed."""
    spec = clicks_spec(topic, **lake_spec)
    land_in_rounds(spec, bootstrap, lake, metastore)
    for h in HOURS:
        r = compact_hour(spec, h, run_at(lake=lake, metastore=metastore, now=LATER))
        assert r.marker_written, r.marker_reason
    return spec


def comparable(table: pa.Table) -> pa.Table:
    """Rows in (partition, offset) order, `_timestamp` as microseconds (Iceberg has no ms)."""
    i = table.schema.get_field_index("_timestamp")
    table = table.set_column(i, "_timestamp", pc.cast(table.column("_timestamp"), pa.timestamp("us", tz="UTC")))
    return table.sort_by([("_partition", "ascending"), ("_offset", "ascending")]).combine_chunks()


def seqs_in_ancestry(table) -> list[int]:
    from pyiceberg.table.snapshots import ancestors_of

    out = []
    for s in ancestors_of(table.current_snapshot(), table.metadata):
        out.append(int(s.summary.additional_properties[SEQ_PROPERTY]))
    return out[::-1]


def assert_table_equals_metastore(spec, lake: Lake, metastore: Metastore, tables: IcebergTables) -> pa.Table:
    """The table's current snapshot holds exactly the live files of the sealed hours, every
    (partition, offset) once, value for value; its publish sequence never repeats."""
    table = tables.load(spec.name)
    files = [lake.read_table(f.path) for f in metastore.live_files(spec.name)]
    expected = comparable(pa.concat_tables(files, promote_options="default"))  # older files lack newer columns
    got = tables.scan(spec.name, table=table)
    assert Counter(pairs(got)).most_common(1)[0][1] == 1, "a record is in the table twice"
    assert Counter(pairs(got)) == Counter(pairs(expected)), "the table and the metastore hold different records"
    # pyiceberg fills a column missing from older files as large_string: same values, cast back
    got_rows = comparable(got.select(expected.schema.names)).cast(expected.schema)
    for name in expected.schema.names:
        assert got_rows.column(name) == expected.column(name), name
    seqs = seqs_in_ancestry(table)
    assert seqs == sorted(set(seqs)), f"a publish sequence repeats or goes back: {seqs}"
    for h in HOURS:
        in_table = sorted(tables.lake_rel(f.file_path) for f in tables.hour_files(table, h))
        live = sorted(f.path for f in metastore.live_files(spec.name, h))
        assert in_table == live, h
    return got


_CHILD = """
import sys
from tests.support.s3 import env_lake
from connectors.metastore import Metastore
from connectors.tables import IcebergTables, publish_sealed_hours
from tests.support.compaction import clicks_spec
spec = clicks_spec(sys.argv[1])
lake, metastore = env_lake(sys.argv[2]), Metastore(sys.argv[3])
r = publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=IcebergTables(sys.argv[3], lake))
print(len(r.published), r.lost_races)
"""


def child(spec, lake: Lake, meta_url: str, crash_at: str | None = None) -> subprocess.Popen:
    """`publish_sealed_hours` in a process of its own (killed at `crash_at` when given)."""
    env = dict(os.environ)
    env.pop("FLOWSUITE_CRASH_AT", None)
    if crash_at:
        env["FLOWSUITE_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, spec.topic, lake.url, meta_url],
        env=env, cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def parquet_on_disk(lake: Lake, product: str) -> set[str]:
    return {p for h in HOURS for p in lake.list_files(hour_dir(product, h)) if p.endswith(".parquet")}
