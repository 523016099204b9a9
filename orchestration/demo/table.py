"""The demo's Iceberg section: compact the closed hours of clicks, publish the sealed ones as
`flowsuite.clicks`, and show that a pyiceberg scan equals their live files row for row."""

from __future__ import annotations

from collections import Counter


def iceberg_section(demo) -> list[str] | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from connectors.flows import RunContext, compact_closed_hours
    from connectors.tables import IcebergTables, catalog_url, publish_sealed_hours
    from connectors.tables.publish import sealed_hours

    spec, lake, metastore = demo.spec, demo.lake, demo.metastore
    if not spec.sinks.lake.iceberg.enabled:
        return None
    compacted, _ = compact_closed_hours(spec, RunContext(lake=lake, metastore=metastore, run_id="demo"))
    tables = IcebergTables(catalog_url(demo.settings.metastore_url, demo.settings.iceberg_catalog_url), lake)
    try:
        result = publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
        sealed = sorted(sealed_hours(metastore, spec.name))
        if not sealed:
            return [f"no sealed hour yet ({len(compacted)} compacted; an hour seals once closed: end + allowed lateness)"]
        live = [lake.read_table(f.path) for h in sealed for f in metastore.live_files(spec.name, h)]
        expected = pa.concat_tables(live, promote_options="default")
        got = tables.scan(spec.name)

        def keyed(t: pa.Table) -> Counter:
            return Counter(zip(t.column("_partition").to_pylist(), t.column("_offset").to_pylist(), strict=True))

        same = keyed(got) == keyed(expected) and pc.sum(got.column("cost_micros")).as_py() == pc.sum(expected.column("cost_micros")).as_py()
        return [
            f"{len(compacted)} closed hour(s) compacted; {len(sealed)} sealed hour(s) in {result.identifier}, "
            f"snapshot {result.snapshot_id} (publish sequence {result.last_seq}; {len(result.published)} published now)",
            f"pyiceberg scan: {got.num_rows:,} rows — "
            + ("equal to the sealed hours' live files, every (partition, offset) once" if same
               else "DIFFERENT from the sealed hours' live files"),
            f"look: flowsuite table {spec.name} --rows 5",
        ]
    finally:
        tables.dispose()
