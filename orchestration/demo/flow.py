"""The demo's flow sections: a legacy table brought into the stream, and one count in two planes.

`partners_section` keeps a legacy CRM table `partners` in `$FLOWSUITE_HOME/legacy.db` (created
on the first run; later runs change a few partners' tier, as a CRM user would), publishes the
new row versions with the source connector `partners_crm` as CloudEvents, and lands them with
the `partners_ingest` job (lake + warehouse, de-duplicated on ce_id).

`engagement_section` computes `partner_engagement` for every hour of `clicks` in the lake —
once — writes it to the lake and UPSERTs the same rows into the warehouse, then runs the
cross-plane comparison the asset check `lake_matches_warehouse` runs.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

TIERS = ("gold", "silver", "bronze")
COUNTRIES = ("DE", "FR", "US", "GB", "NL", "JP", "BR", "IN")
PARTNERS = 250  # examples.demo_data.PARTNERS: the partners the clicks name


def legacy_table() -> sa.Table:
    md = sa.MetaData()
    return sa.Table(
        "partners", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("partner_id", sa.String(16), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("country", sa.String(2)),
        sa.Column("updated_at", sa.DateTime, nullable=False),  # naive UTC, as many legacy schemas
    )


def refresh_legacy(url: str, now: datetime, changes: int = 5) -> str:
    """Create the legacy table with every partner, or change the tier of a few of them."""
    table = legacy_table()
    engine = sa.create_engine(url)
    stamp = (now - timedelta(seconds=30)).astimezone(UTC).replace(tzinfo=None)
    try:
        table.metadata.create_all(engine)
        with engine.begin() as conn:
            existing = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            if not existing:
                conn.execute(sa.insert(table), [
                    {"id": i, "partner_id": f"p-{i:03d}", "name": f"Partner {i:03d}", "tier": TIERS[i % 3],
                     "country": COUNTRIES[i % len(COUNTRIES)], "updated_at": stamp}
                    for i in range(1, PARTNERS + 1)
                ])
                return f"created the legacy table partners ({PARTNERS} rows) in {url}"
            rng = random.SystemRandom()
            picked = rng.sample(range(1, existing + 1), changes)
            for i in picked:
                conn.execute(sa.update(table).where(table.c.id == i).values(
                    tier=sa.case((table.c.tier == "gold", "silver"), (table.c.tier == "silver", "bronze"), else_="gold"),
                    updated_at=stamp))
            return f"changed the tier of {changes} partner(s) in the legacy table ({', '.join(f'p-{i:03d}' for i in sorted(picked))})"
    finally:
        engine.dispose()


def partners_section(demo) -> list[str]:
    from connectors.flows import RunContext
    from connectors.sources import SOURCE_LEASE_S, load_sources, publish
    from connectors.warehouse import WarehouseSink
    from orchestration.ingest import ingest_summary, run_ingest
    from quality.expectations import load_checked_specs

    products = {s.name: s for s in load_checked_specs(demo.settings.products_dir)}
    sources = [s for s in load_sources(demo.settings.products_dir, list(products.values())) if s.product == "partners"]
    if not sources:
        return None
    source, product = sources[0], products["partners"]
    url = source.resolved_url()
    lines = [refresh_legacy(url, datetime.now(UTC))]
    r = publish(source, product, RunContext(lake=demo.lake, metastore=demo.metastore, bootstrap=demo.settings.kafka_bootstrap,
                                            kafka_config=demo.settings.kafka_client_config(), lease_s=SOURCE_LEASE_S))
    lines.append(
        f"source connector {source.name} ({source.mode}, delay {int(source.timestamp_delay.total_seconds())}s): "
        f"published {r.published} row version(s) to topic {product.topic} as CloudEvents; cursor {r.cursor_after.describe()}"
    )
    outcome = run_ingest(product.name)
    lines += ingest_summary(outcome)
    sink = WarehouseSink(product, demo.settings.warehouse_url)
    try:
        with sink.engine.connect() as conn:
            tiers = conn.execute(sa.select(sink.table.c.tier, sa.func.count()).group_by(sink.table.c.tier)
                                 .order_by(sink.table.c.tier)).all()
        lines.append(f"warehouse table partners: {sum(n for _, n in tiers)} partners ("
                     + ", ".join(f"{t} {n}" for t, n in tiers) + ")")
    finally:
        sink.dispose()
    sample = demo.lake.read_tables([f.path for f in demo.metastore.live_files(product.name)][-1:], columns=["partner_id", "tier", "ce_id", "ce_type"]).slice(0, 1).to_pylist()
    if sample:
        s = sample[0]
        lines.append(f"a landed event: ce_id={s['ce_id']} ce_type={s['ce_type']} partner_id={s['partner_id']} tier={s['tier']}")
    return lines


def engagement_section(demo) -> list[str]:
    from examples.engagement import (
        PRODUCT,
        EngagementTable,
        compare_planes,
        materialize_hour,
        sync_warehouse,
    )

    hours = sorted({f.hour for f in demo.metastore.live_files(demo.spec.name)})
    if not hours:
        return ["no clicks in the lake yet"]
    clicks = 0
    for h in hours:
        clicks += materialize_hour(demo.lake, demo.metastore, h, source=demo.spec.name).clicks
    table = EngagementTable(demo.settings.warehouse_url)
    try:
        totals = sync_warehouse(demo.lake, demo.metastore, table, hours)
        compared, diffs = compare_planes(demo.lake, demo.metastore, table)
        lake_rows = {(r["partner_id"], r["hour_start"]): r for r in table.read(hours).to_pylist()}
    finally:
        table.dispose()
    from examples.engagement import read_lake

    lines = [
        f"computed once from clicks' live files: {len(hours)} hour(s), {clicks:,} clicks; lake: {PRODUCT}/dt=…/hour=…/part-g<n>-0.parquet; "
        f"warehouse: table {PRODUCT} ({totals['upserted']:,} rows upserted)",
        f"{'partner':<8} {'hour (UTC)':<14} {'clicks lake':>11} {'clicks wh':>9} {'users lake':>10} {'users wh':>8}",
    ]
    top = sorted(read_lake(demo.lake, demo.metastore, hours).to_pylist(), key=lambda r: (-r["clicks"], r["partner_id"]))[:5]
    for r in top:
        w = lake_rows.get((r["partner_id"], r["hour_start"]), {})
        lines.append(f"{r['partner_id']:<8} {r['hour_start']:%Y-%m-%d-%H} {r['clicks']:>11,} {w.get('clicks', 0):>9,} "
                     f"{r['unique_users']:>10,} {w.get('unique_users', 0):>8,}")
    if diffs:
        lines.append(f"check lake_matches_warehouse: FAILED, {len(diffs)} cell(s) differ; first: {diffs[0]}")
    else:
        lines.append(f"check lake_matches_warehouse: passed (lake and warehouse agree on all {compared:,} partner-hours)")
    return lines
