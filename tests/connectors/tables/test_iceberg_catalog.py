"""The catalog and the table: on SQLite and PostgreSQL, elsewhere by URL, schema evolution by
name with field ids kept, and the one-hour-per-file check."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from connectors.flows import compact_hour
from connectors.formats import lake_schema
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.settings import load_settings
from connectors.spec import FieldSpec
from connectors.tables import IcebergTables, catalog_url, publish_sealed_hours
from connectors.tables.publish import HourMismatchError, data_files_of_hour
from tests.support.compaction import clicks_spec
from tests.support.iceberg import (
    HOURS,
    LATER,
    assert_table_equals_metastore,
    seal,
)
from tests.support.runs import run_at


def _catalog_rows(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT catalog_name, table_namespace, table_name FROM iceberg_tables")).tuples())
    finally:
        engine.dispose()


def test_catalog_on_postgresql_in_the_metastore_database(topic, kafka_bootstrap, pg_fresh_url, tmp_path):
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(pg_fresh_url)
    spec = seal(topic, kafka_bootstrap, lake, metastore)
    tables = IcebergTables(catalog_url(pg_fresh_url), lake)
    r = publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
    assert [p["hour"] for p in r.published] == HOURS
    assert_table_equals_metastore(spec, lake, metastore, tables)
    # the JDBC catalog's layout, in the same database as fs_files: what Spark and Trino open
    assert _catalog_rows(pg_fresh_url) == [("flowsuite", "flowsuite", spec.name)]
    tables.dispose()
    metastore.dispose()


def test_catalog_elsewhere_by_url(topic, kafka_bootstrap, tmp_path):
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    spec = seal(topic, kafka_bootstrap, lake, metastore)
    elsewhere = f"sqlite:///{tmp_path / 'catalog.db'}"
    settings = load_settings({"FLOWSUITE_ICEBERG_CATALOG_URL": elsewhere})
    assert settings.iceberg_catalog_url == elsewhere and "catalog.db" not in repr(settings)
    url = catalog_url(str(metastore.engine.url), settings.iceberg_catalog_url)
    assert url == elsewhere
    tables = IcebergTables(url, lake)
    publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
    assert _catalog_rows(elsewhere) == [("flowsuite", "flowsuite", spec.name)]
    assert "iceberg_tables" not in sa.inspect(metastore.engine).get_table_names()
    assert_table_equals_metastore(spec, lake, metastore, tables)


def test_new_spec_column_becomes_a_new_iceberg_column_with_ids_kept(topic, kafka_bootstrap, tmp_path):
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    spec = seal(topic, kafka_bootstrap, lake, metastore)
    tables = IcebergTables(str(metastore.engine.url), lake)
    publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
    ids_before = {f.name: f.field_id for f in tables.load(spec.name).schema().fields}

    grown = spec.model_copy(update={"fields": [*spec.fields, FieldSpec(name="campaign", type="string")]})
    compact_hour(grown, HOURS[0], run_at(lake=lake, metastore=metastore, now=LATER), force=True)  # files with the column
    r = publish_sealed_hours(grown, lake=lake, metastore=metastore, tables=tables)
    assert [(p["hour"], p["generation"]) for p in r.published] == [(HOURS[0], 2)]
    table = tables.load(spec.name)
    ids_after = {f.name: f.field_id for f in table.schema().fields}
    assert {k: ids_after[k] for k in ids_before} == ids_before
    assert ids_after["campaign"] > max(ids_before.values())
    assert "campaign" in table.properties["schema.name-mapping.default"]
    rows = tables.scan(spec.name)
    assert rows.schema.names[-1] == "campaign" and rows.column("campaign").null_count == rows.num_rows
    assert_table_equals_metastore(spec, lake, metastore, tables)  # old-hour files (no column) read too


def test_a_file_must_hold_exactly_the_hour_it_is_published_for(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    spec = clicks_spec("t")
    tables = IcebergTables(f"sqlite:///{tmp_path / 'catalog.db'}", lake)
    table = tables.ensure_table(spec)
    schema = pa.schema([f.with_nullable(True) for f in lake_schema(spec)])

    def write(name: str, times: list[datetime]) -> str:
        n = len(times)
        cols = {f.name: pa.nulls(n, f.type) for f in schema}
        cols["event_time"] = pa.array(times, pa.timestamp("us", tz="UTC"))
        rel = f"{spec.name}/dt=2026-01-10/hour=10/{name}"
        lake.write_parquet(rel, pa.table(cols, schema=schema))
        return tables.lake_uri(rel)

    ok = write("ok.parquet", [datetime(2026, 1, 10, 10, 0, tzinfo=UTC), datetime(2026, 1, 10, 10, 59, 59, tzinfo=UTC)])
    assert [df.partition[0] for df in data_files_of_hour(table, [ok], "2026-01-10-10")] == [491122]
    wrong = write("wrong.parquet", [datetime(2026, 1, 10, 11, 5, tzinfo=UTC)])
    with pytest.raises(HourMismatchError, match="published as 2026-01-10-10"):
        data_files_of_hour(table, [wrong], "2026-01-10-10")
    two = write("two.parquet", [datetime(2026, 1, 10, 10, 30, tzinfo=UTC), datetime(2026, 1, 10, 11, 30, tzinfo=UTC)])
    with pytest.raises(HourMismatchError, match="spans more than one hour"):
        data_files_of_hour(table, [two], "2026-01-10-10")
    assert pq.read_metadata(lake.full(f"{spec.name}/dt=2026-01-10/hour=10/two.parquet")).num_rows == 2
