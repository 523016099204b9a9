"""The compacted file's layout and the one-scan read of an hour's files, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.flows.compaction.rewrite import (
    RewriteJob,
    _read_all,
    compacted_layout,
    conform,
    rewrite_hour,
)
from connectors.formats import lake_schema
from connectors.lake import Lake
from connectors.metastore import Metastore
from tests.support.compaction import clicks_spec


def hour_table(schema: pa.Schema, rows: int, partition: int, start: int) -> pa.Table:
    t0 = datetime(2026, 1, 10, 11, tzinfo=UTC)
    values = {
        "event_id": [f"e-{partition}-{start + i:08d}" for i in range(rows)],
        "user_id": [f"u-{i % 7}" for i in range(rows)],
        "partner_id": ["p-001"] * rows,
        "ad_id": [f"a-{i % 3}" for i in range(rows)],
        "kind": ["click" if i % 2 else "impression" for i in range(rows)],
        "cost_micros": [i * 10 for i in range(rows)],
        "event_time": [t0 + timedelta(seconds=(start + i) % 3600) for i in range(rows)],
        "_topic": ["clicks"] * rows,
        "_partition": [partition] * rows,
        "_offset": list(range(start, start + rows)),
        "_timestamp": [t0] * rows,
        "_key": [f"e-{partition}-{start + i:08d}" for i in range(rows)],
    }
    return pa.table({f.name: pa.array(values[f.name], f.type) for f in schema}, schema=schema)


def test_layout_drops_the_dictionary_only_where_values_are_unique() -> None:
    spec = clicks_spec("clicks")
    schema = lake_schema(spec)
    layout = compacted_layout(spec, schema)
    assert layout["column_encoding"] == {
        "event_id": "DELTA_LENGTH_BYTE_ARRAY",
        "event_time": "DELTA_BINARY_PACKED",
        "_offset": "DELTA_BINARY_PACKED",
        "_timestamp": "DELTA_BINARY_PACKED",
        "_key": "DELTA_LENGTH_BYTE_ARRAY",
    }
    assert set(layout["use_dictionary"]) == set(schema.names) - set(layout["column_encoding"])


def test_compacted_file_is_written_with_the_layout_and_reads_back_exactly(tmp_path) -> None:
    spec = clicks_spec("clicks")
    schema = lake_schema(spec)
    lake = Lake(str(tmp_path / "lake"))
    metastore = Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        tables = [hour_table(schema, 3000, p, s) for p, s in ((0, 0), (1, 0), (0, 3000))]
        paths = []
        for i, t in enumerate(tables):
            paths.append(str(tmp_path / f"in{i}.parquet"))
            pq.write_table(t, paths[-1])
        sources = [(lake.fs, p, 1) for p in paths]
        job = RewriteJob(spec, "2026-01-10-11", lake, metastore, run_id="t", generation=1,
                         target_file_bytes=1 << 30, row_group_rows=4000)
        outputs, _ = rewrite_hour(job, sources)
        [out] = outputs
        meta = pq.ParquetFile(lake.full(out.path)).metadata
        chunks = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(meta.num_columns)}
        for name, encoding in compacted_layout(spec, schema)["column_encoding"].items():
            assert not chunks[name].has_dictionary_page, name
            assert encoding in chunks[name].encodings, (name, chunks[name].encodings)
        for name in ("user_id", "kind", "_topic"):
            assert chunks[name].has_dictionary_page and "RLE_DICTIONARY" in chunks[name].encodings
        back = lake.read_table(out.path)
        expected = pa.concat_tables(tables).sort_by([("event_time", "ascending"), ("event_id", "ascending"),
                                                     ("_partition", "ascending"), ("_offset", "ascending")])
        assert back.num_rows == 9000 and back.equals(expected.cast(back.schema))
    finally:
        metastore.dispose()


def test_one_scan_read_conforms_older_files_like_a_per_file_read(tmp_path) -> None:
    """A file from before a field was added (or with a narrower type) reads as `conform` makes it."""
    spec = clicks_spec("clicks")
    schema = lake_schema(spec)
    lake = Lake(str(tmp_path / "lake"))
    new = hour_table(schema, 10, 0, 0)
    old = hour_table(schema, 5, 1, 0).drop_columns(["ad_id"])
    old = old.set_column(old.schema.get_field_index("_partition"), "_partition",
                         old.column("_partition").cast(pa.int8()))
    paths = [str(tmp_path / "old.parquet"), str(tmp_path / "new.parquet")]
    pq.write_table(old, paths[0])
    pq.write_table(new, paths[1])
    sources = [(lake.fs, p, 1) for p in paths]
    got = _read_all(sources, schema)
    expected = pa.concat_tables([conform(pq.read_table(p), schema) for p in paths])
    assert got.schema.equals(schema) and got.equals(expected)
    assert got.column("ad_id").null_count == 5
    assert _read_all([], schema).num_rows == 0


def test_one_scan_read_fails_on_an_uncastable_column_as_conform_does(tmp_path) -> None:
    spec = clicks_spec("clicks")
    schema = lake_schema(spec)
    lake = Lake(str(tmp_path / "lake"))
    t = hour_table(schema, 5, 0, 0)
    t = t.set_column(t.schema.get_field_index("cost_micros"), "cost_micros", pa.array(["x"] * 5))
    pq.write_table(t, str(tmp_path / "bad.parquet"))
    with pytest.raises(pa.ArrowInvalid):
        _read_all([(lake.fs, str(tmp_path / "bad.parquet"), 1)], schema)
    with pytest.raises(pa.ArrowInvalid):
        conform(pq.read_table(str(tmp_path / "bad.parquet")), schema)


def _rewrite(tmp_path, lake, metastore, tables):
    spec = clicks_spec("clicks")
    paths = []
    for i, t in enumerate(tables):
        paths.append(str(tmp_path / f"in{i}.parquet"))
        pq.write_table(t, paths[-1])
    job = RewriteJob(spec, "2026-01-10-11", lake, metastore, run_id="t", generation=1,
                     target_file_bytes=1 << 30, row_group_rows=4000)
    return rewrite_hour(job, [(lake.fs, p, 1) for p in paths])


def test_a_durable_file_that_differs_from_the_rows_written_is_refused(tmp_path, monkeypatch) -> None:
    """The read-back check compares each durable row group with the rows written into it."""
    from connectors.flows.compaction.verify import VerificationError
    from connectors.lake.store import ParquetFileWriter

    schema = lake_schema(clicks_spec("clicks"))
    lake = Lake(str(tmp_path / "lake"))
    metastore = Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    write = ParquetFileWriter.write
    calls = []

    def corrupt_second_group(self, table, row_group_rows=131_072):
        calls.append(table.num_rows)
        if len(calls) == 2:  # one value of the second row group changes on its way to disk
            cost = table.column("cost_micros").to_pylist()
            cost[-1] += 1
            table = table.set_column(table.schema.get_field_index("cost_micros"), "cost_micros",
                                     pa.array(cost, pa.int64()))
        return write(self, table, row_group_rows)

    monkeypatch.setattr(ParquetFileWriter, "write", corrupt_second_group)
    try:
        with pytest.raises(VerificationError, match="read back from the lake differs"):
            _rewrite(tmp_path, lake, metastore, [hour_table(schema, 9000, 0, 0)])
        assert len(calls) >= 2
        monkeypatch.setattr(ParquetFileWriter, "write", write)
        outputs, _ = _rewrite(tmp_path, lake, metastore, [schema.empty_table()])
        assert [o.rows for o in outputs] == [0]
    finally:
        metastore.dispose()
