"""DuckDB reads the Iceberg table (latest and an earlier snapshot) with its own iceberg
extension, in the reader venv `make duckdb-iceberg` builds (its DuckDB is pinned by the
extension's pip package, older than the project's), through a subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.tables import IcebergTables, publish_sealed_hours
from tests.support.compaction import hour_rows, pairs
from tests.support.iceberg import HOURS, seal
from tests.support.services import unavailable

REPO = Path(__file__).resolve().parents[3]
READER_PY = REPO / ".venv-duckdb-iceberg" / "bin" / "python"
READER = Path(__file__).with_name("duckdb_iceberg_reader.py")


@pytest.fixture
def duckdb_reader():
    if not (READER_PY.parent.parent / ".installed").exists():
        unavailable(f"the DuckDB Iceberg reader venv is missing: run `make duckdb-iceberg` (builds {READER_PY.parent.parent.name})")
    return READER_PY


def test_duckdb_reads_the_table_at_the_latest_and_an_earlier_snapshot(duckdb_reader, topic, kafka_bootstrap, tmp_path):
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    spec = seal(topic, kafka_bootstrap, lake, metastore)
    tables = IcebergTables(str(metastore.engine.url), lake)
    publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
    table = tables.load(spec.name)
    metadata = table.metadata_location
    first = table.snapshots()[0].snapshot_id

    def read(*extra: str):
        out = tmp_path / f"duck-{len(extra)}.parquet"
        proc = subprocess.run([str(duckdb_reader), str(READER), metadata, str(out), *extra],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout), pq.read_table(out)

    info, latest = read()
    assert info["duckdb"] != __import__("duckdb").__version__  # its own DuckDB, not the project's
    assert info["snapshots"] == [s.snapshot_id for s in table.snapshots()]
    expected = hour_rows(lake, metastore, spec.name)
    assert sorted(pairs(latest)) == sorted(pairs(expected)) and len(set(pairs(latest))) == latest.num_rows
    _, earlier = read(str(first))
    assert sorted(pairs(earlier)) == sorted(pairs(hour_rows(lake, metastore, spec.name, HOURS[0])))
    tables.dispose()
