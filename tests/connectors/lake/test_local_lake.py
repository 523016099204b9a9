"""The local lake, called directly: hour layout, whole-file visibility (hidden temporary names,
renamed into place), reads, and the path checks that keep writes inside the lake."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from connectors.lake import (
    Lake,
    LakePathError,
    epoch_hour,
    hour_dir,
    hour_key,
    landed_file_name,
    normalize_hour,
    parse_hour_key,
)

T = datetime(2026, 11, 26, 10, 42, tzinfo=UTC)


def test_hour_keys_round_trip_in_every_accepted_form():
    assert hour_key(T) == "2026-11-26-10" == hour_key(epoch_hour(T))
    for text in ("2026-11-26-10", "2026-11-26-10:00", "2026-11-26T10:00", "2026-11-26T10:42:00+00:00"):
        assert normalize_hour(text) == "2026-11-26-10", text
    assert parse_hour_key("2026-11-26T11:30:00+01:00") == datetime(2026, 11, 26, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="is not an hour"):
        parse_hour_key("yesterday")


def test_layout_is_hive_style_and_names_files_like_kafka_connect():
    assert hour_dir("clicks", T) == "clicks/dt=2026-11-26/hour=10" == hour_dir("clicks", "2026-11-26-10")
    assert landed_file_name("clicks", 1, 1200) == "clicks+1+1200.parquet"
    for bad in ("../etc", ".hidden", "a/b", "x\n"):
        with pytest.raises(LakePathError):
            hour_dir(bad, T)


def test_a_file_is_visible_only_when_whole_and_reads_back(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    rel = f"{hour_dir('clicks', T)}/{landed_file_name('clicks', 0, 0)}"
    table = pa.table({"x": pa.array(range(1000), pa.int64())})
    with lake.open_parquet_writer(rel, table.schema) as writer:
        writer.write(table.slice(0, 500))
        # Mid-write only a hidden temporary file exists: batch readers skip it.
        assert not lake.exists(rel)
        visible = ds.dataset(str(tmp_path / "lake" / "clicks"), format="parquet", partitioning="hive")
        assert visible.count_rows() == 0
        writer.write(table.slice(500))
    assert lake.exists(rel)
    assert lake.read_table(rel).column("x").to_pylist() == list(range(1000))
    assert lake.list_files(hour_dir("clicks", T)) == [rel]
    assert lake.read_tables([rel, rel]).num_rows == 2000


def test_an_open_writer_counts_buffered_rows_and_its_written_row_groups_as_held(tmp_path):
    """Landing's memory bound sums held_bytes: rows waiting for a row group, and the buffers the
    Parquet writer keeps after writing one (until the file is closed)."""
    lake = Lake(str(tmp_path / "lake"))
    table = pa.table({"x": pa.array(range(3000), pa.int64())})
    with lake.open_parquet_writer(f"{hour_dir('clicks', T)}/{landed_file_name('clicks', 0, 0)}", table.schema) as writer:
        assert writer.held_bytes == 0
        writer.write(table.slice(0, 500), row_group_rows=1000)
        assert writer.held_bytes == table.slice(0, 500).nbytes  # waiting for a full row group
        writer.write(table.slice(500, 1000), row_group_rows=1000)  # 1,500 rows: one group written
        assert writer.held_bytes == table.slice(0, 1500).nbytes  # nothing waits; the group's buffers stay
        writer.write(table.slice(1500, 100), row_group_rows=1000)
        assert writer.held_bytes == table.slice(0, 1500).nbytes + table.slice(1500, 100).nbytes


def test_an_aborted_writer_leaves_nothing_and_delete_is_idempotent(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    rel = f"{hour_dir('clicks', T)}/part.parquet"
    schema = pa.schema([("x", pa.int64())])
    with pytest.raises(RuntimeError), lake.open_parquet_writer(rel, schema) as writer:
        writer.write(pa.table({"x": [1, 2]}, schema=schema))
        raise RuntimeError("the run died")
    assert not lake.exists(rel)
    assert list((tmp_path / "lake").rglob("*.tmp*")) == []
    lake.write_parquet(rel, pa.table({"x": [1]}, schema=schema))
    assert lake.delete(rel) is True
    assert lake.delete(rel) is False


def test_read_rows_with_duckdb_and_pyarrow_agree_and_limit(tmp_path) -> None:
    import warnings

    from connectors.lake.readers import read_rows
    from connectors.metastore.records import FileRecord

    lake = Lake(str(tmp_path / "lake"))
    records = []
    for i in range(2):
        rel = f"p/{hour_dir('p', '2026-11-26-10').split('/', 1)[1]}/f{i}.parquet"
        size = lake.write_parquet(rel, pa.table({"id": pa.array([i * 10 + j for j in range(5)], pa.int64()),
                                                 "name": [f"n{i}{j}" for j in range(5)]}))
        records.append(FileRecord(path=rel, product="p", kind="landed", hour="2026-11-26-10", state="committed",
                                  partition=0, start_offset=i * 5, end_offset=i * 5 + 5, rows=5, bytes=size,
                                  generation=0, ranges=None, min_offset=None, max_offset=None, run_id="t",
                                  committed_at=None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # DuckDB warns when Arrow output costs an extra copy
        by_duckdb = read_rows(lake, records, engine="duckdb")
        limited = read_rows(lake, records, limit=3, engine="duckdb")
    by_pyarrow = read_rows(lake, records, engine="pyarrow")
    assert by_duckdb.sort_by("id").equals(by_pyarrow.sort_by("id"))
    assert by_duckdb.num_rows == 10 and limited.num_rows == 3
