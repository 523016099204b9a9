"""The demo's Avro section: the clicks again, as Avro in the Confluent wire format written with
three versions of their schema, landed by the `clicks_avro` product through its Dagster job
(docs/formats.md). Listed in orchestration/demo/__init__.py's SECTIONS."""

from __future__ import annotations

AVRO_EVENTS = 3_000
PRODUCT = "clicks_avro"


def avro_section(demo) -> list[str] | None:
    from examples.demo_data import encode_clicks, generate_clicks, produce
    from orchestration.ingest import ingest_summary, run_ingest
    from quality.expectations import load_checked_specs

    products = {s.name: s for s in load_checked_specs(demo.settings.products_dir)}
    if PRODUCT not in products:
        return None
    spec = products[PRODUCT]
    records = encode_clicks(generate_clicks(AVRO_EVENTS, 3, 0.01, seed=demo.produced.produced), "avro",
                            demo.settings.products_dir / "schemas")
    produced = produce(demo.settings.kafka_bootstrap, spec.topic, records, partitions=2)
    lines = [f"produced {produced.produced:,} Avro clicks to {spec.topic} with schema ids 1, 2 and 3 "
             f"({produced.invalid:,} invalid: wrong magic byte, truncated, or breaking the spec's rules)"]
    lines += ingest_summary(run_ingest(spec.name))
    files = [f.path for f in demo.metastore.live_files(spec.name)]
    if files:
        table = demo.lake.read_tables(files, columns=["ad_id", "country", "os", "event_id", "event_time"])
        rows = table.to_pylist()
        v1 = sum(1 for r in rows if r["country"] is None)
        v3 = sum(1 for r in rows if r["ad_id"] is None)
        lines.append(f"in the lake: {len(rows):,} rows; {v1:,} written with schema 1 (no country, os: null), "
                     f"{len(rows) - v1 - v3:,} with schema 2, {v3:,} with schema 3 (ad_id removed: null)")
        s = rows[-1]
        lines.append(f"a landed row: event_id={s['event_id']} event_time={s['event_time']:%Y-%m-%d %H:%M:%S.%f}"[:-3]
                     + f" country={s['country']} os={s['os']} ad_id={s['ad_id']}")
    return lines
