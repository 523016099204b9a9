"""`flowsuite status`: where each data product stands, from the metastore, broker and warehouse.

Per product: committed vs end offsets per Kafka partition and the lag, the last landing,
open / compacted / reopened / blocked hours (counts and the latest), quarantined records, and the
warehouse table's rows and sink offsets. Each source is asked on its own, so a broker that is
down (or a warehouse that is not reachable) is said as such and the rest is still shown.

`collect_status(settings)` returns plain dataclasses (`ProductStatus`); `render_status` turns
them into the terminal tables and `status_json` into the `--json` document scripts read.
Nothing here writes: no topic is looked up by name (Tansu would create it), no table is created.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.settings import Settings

BROKER_TIMEOUT_S = 3.0


@dataclass
class PartitionStatus:
    partition: int
    committed: int | None  # next offset to land (metastore); None: never landed
    end: int | None  # the broker's end offset (exact after a fetch, else ListOffsets' hint)
    end_exact: bool
    lag: int | None  # records waiting beyond the committed offset
    warehouse: int | None  # next offset the warehouse sink applies (kept in the warehouse)
    last_run_id: str | None
    updated_at: float | None


@dataclass
class HoursStatus:
    open: int = 0  # landing, not compacted yet
    compacted: int = 0  # closed and compacted
    reopened: int = 0  # compacted, then late data arrived
    blocked: int = 0  # a blocking quality check failed on data of this hour
    marked: int = 0  # with a `_SUCCESS` manifest
    latest_open: str | None = None
    latest_compacted: str | None = None
    blocked_hours: list[str] = field(default_factory=list)


@dataclass
class ProductStatus:
    product: str
    topic: str
    consumer_group: str
    broker: str  # "ok" or why not
    partitions: list[PartitionStatus]
    lag: int | None
    last_landing_at: float | None
    landed_rows: int
    landed_files: int
    hours: HoursStatus
    quarantined: int
    warehouse_table: str | None
    warehouse_rows: int | None
    warehouse: str  # "ok", "not configured", "not created yet" or why not
    iceberg: str | None = None  # the Iceberg table's publish lag, when the product has one


def collect_status(settings: Settings, products: list[str] | None = None) -> list[ProductStatus]:
    """The status of every product (or of `products`), in spec order."""
    from orchestration.resources import default_flowsuite_resource
    from orchestration.services.broker import broker_answers
    from quality.expectations import load_checked_specs

    specs = load_checked_specs(settings.products_dir)
    if products:
        specs = [s for s in specs if s.name in products]
    flowsuite = default_flowsuite_resource()
    broker_up = broker_answers(settings.kafka_bootstrap, timeout=BROKER_TIMEOUT_S)
    return [product_status(spec, flowsuite, broker_up, settings.iceberg_catalog_url) for spec in specs]


def product_status(spec: Any, flowsuite: Any, broker_up: bool, iceberg_catalog_url: str | None = None) -> ProductStatus:
    metastore = flowsuite.metastore()
    states = metastore.committed_offsets(spec.name)
    probes, broker = _probe(spec, flowsuite, states, broker_up)
    sink_offsets, rows, table, warehouse = _warehouse(spec, flowsuite.warehouse_url)

    partitions = []
    for p in sorted(set(states) | set(probes)):
        s, pr = states.get(p), probes.get(p)
        end = None if pr is None else (pr.end if pr.end is not None else pr.end_hint)
        committed = None if s is None else s.next_offset
        lag = None if pr is None else max(0, end - (committed or 0))
        partitions.append(
            PartitionStatus(
                partition=p,
                committed=committed,
                end=end,
                end_exact=pr is not None and pr.end is not None,
                lag=lag,
                warehouse=sink_offsets.get(p) if sink_offsets is not None else None,
                last_run_id=None if s is None else s.run_id,
                updated_at=None if s is None else s.updated_at,
            )
        )
    lags = [ps.lag for ps in partitions]
    files = metastore.live_files(spec.name)
    quarantine = metastore.live_files(spec.name, kinds=("quarantine",))
    return ProductStatus(
        product=spec.name,
        topic=spec.topic,
        consumer_group=spec.consumer_group,
        broker=broker,
        partitions=partitions,
        lag=None if not lags or None in lags else sum(lags),
        last_landing_at=metastore.last_landing_at(spec.name),
        landed_rows=sum(f.rows for f in files),
        landed_files=len(files),
        hours=_hours(metastore, spec.name),
        quarantined=sum(f.rows for f in quarantine),
        warehouse_table=table,
        warehouse_rows=rows,
        warehouse=warehouse,
        iceberg=_iceberg(spec, flowsuite, iceberg_catalog_url),
    )


def _iceberg(spec: Any, flowsuite: Any, catalog: str | None) -> str | None:
    """`table flowsuite.P: publish lag N h …` (read only), or None without an Iceberg table."""
    if not spec.sinks.lake.iceberg.enabled:
        return None
    from connectors.tables import IcebergTables, catalog_url, publish_lag_hours, table_identifier

    tables = IcebergTables(catalog_url(flowsuite.metastore_url, catalog), flowsuite.lake(), read_only=True)
    try:
        lag, missing = publish_lag_hours(flowsuite.metastore(), tables, spec.name)
        what = "up to date" if not missing else f"{missing} sealed hour(s) not published yet"
        return f"table {table_identifier(spec.name)}: publish lag {lag} h ({what})"
    except Exception as exc:  # noqa: BLE001 - status shows every source it can; the URL is never printed
        return f"table {table_identifier(spec.name)}: not readable ({type(exc).__name__})"
    finally:
        tables.dispose()


def _probe(spec: Any, flowsuite: Any, states: dict, broker_up: bool) -> tuple[dict, str]:
    from connectors.kafka import KafkaReadError, consumer_config, partitions_of, probe_partitions

    if not broker_up:
        return {}, f"no broker answers at {flowsuite.kafka_bootstrap}"
    conf = consumer_config(flowsuite.kafka_bootstrap, spec.consumer_group, flowsuite.kafka())
    try:
        partitions = partitions_of(conf, spec.topic, timeout=BROKER_TIMEOUT_S)
        committed = {p: states[p].next_offset if p in states else 0 for p in partitions}
        # Always fetch: ListOffsets is only a hint on Tansu; a fetch answers the exact end.
        probes = probe_partitions(
            conf, spec.topic, committed, timeout=BROKER_TIMEOUT_S, always_fetch=partitions
        )
        return probes, "ok"
    except KafkaReadError as exc:
        return {}, str(exc)


def _hours(metastore: Any, product: str) -> HoursStatus:
    records = metastore.hours(product)
    marked = metastore.marked_hours(product)
    hs = HoursStatus(marked=len(marked))
    for h in records:
        if h.state == "compacted":
            hs.compacted += 1
            hs.latest_compacted = max(hs.latest_compacted or "", h.hour)
        else:
            hs.open += h.state == "open"
            hs.reopened += h.state == "reopened"
            hs.latest_open = max(hs.latest_open or "", h.hour)
        if h.blocked_reason:
            hs.blocked += 1
            hs.blocked_hours.append(h.hour)
    return hs


def _warehouse(spec: Any, url: str) -> tuple[dict[int, int] | None, int | None, str | None, str]:
    """(sink offsets, rows, table, state) of the product's warehouse table, read only."""
    db = spec.sinks.database
    if db is None or not db.enabled:
        return None, None, None, "not configured"
    import sqlalchemy as sa

    from connectors.warehouse import WarehouseError, WarehouseSink

    try:
        sink = WarehouseSink(spec, url)
    except WarehouseError as exc:
        return None, None, None, str(exc)
    try:
        inspector = sa.inspect(sink.engine)
        if not inspector.has_table(sink.table_name):
            return None, None, sink.table_name, "not created yet (no sync so far)"
        rows = sink.row_count()
        offsets: dict[int, int] = {}
        if inspector.has_table(sink.offsets.name):
            o = sink.offsets
            query = sa.select(o.c.kafka_partition, o.c.next_offset).where(
                sa.and_(o.c.product == spec.name, o.c.table_name == sink.table_name)
            )
            with sink.engine.connect() as conn:
                offsets = {int(p): int(n) for p, n in conn.execute(query)}
        return offsets, rows, sink.table_name, "ok"
    except (WarehouseError, sa.exc.SQLAlchemyError) as exc:
        # The sink's own errors hide credentials; a raw driver error is summarized the same way.
        message = str(exc) if isinstance(exc, WarehouseError) else type(exc).__name__
        return None, None, sink.table_name, f"not reachable at {sink.safe_url}: {message}"
    finally:
        sink.dispose()


# --- output --------------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    ago = max(0.0, time.time() - ts)
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if ago < 120:
        return f"{stamp} ({ago:.0f}s ago)"
    if ago < 7200:
        return f"{stamp} ({ago / 60:.0f} min ago)"
    return f"{stamp} ({ago / 3600:.1f} h ago)"


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def render_status(statuses: list[ProductStatus], console: Any = None) -> None:
    """Print one table of partitions and a few summary lines per product (rich)."""
    from rich.console import Console
    from rich.table import Table

    # Piped output keeps whole lines (rich would wrap at 80 columns without a terminal).
    console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    if not statuses:
        console.print("no data products")
    for st in statuses:
        console.print(f"[bold]{st.product}[/bold]  topic {st.topic}, group {st.consumer_group}")
        if st.broker != "ok":
            console.print(f"  [yellow]broker: {st.broker}[/yellow] (end offsets and lag unknown)")
        table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 2))
        for name in ("partition", "committed", "end", "lag", "warehouse", "last landing"):
            table.add_column(name, justify="left" if name == "last landing" else "right")
        for p in st.partitions:
            end = _n(p.end) + ("" if p.end_exact or p.end is None else " (hint)")
            table.add_row(
                str(p.partition),
                "-" if p.committed is None else f"{p.committed:,}",
                end,
                _n(p.lag),
                "-" if p.warehouse is None else f"{p.warehouse:,}",
                "never landed" if p.updated_at is None else _when(p.updated_at),
            )
        if st.partitions:
            console.print(table)
        else:
            console.print("  no partitions landed yet")
        h = st.hours
        console.print(f"  lag            {_n(st.lag)} record(s) waiting in {st.topic}")
        console.print(f"  last landing   {_when(st.last_landing_at)}")
        console.print(
            f"  lake           {st.landed_rows:,} rows in {st.landed_files:,} live file(s)"
        )
        console.print(
            f"  hours          {h.open} open (latest {h.latest_open or '-'}), "
            f"{h.compacted} compacted (latest {h.latest_compacted or '-'}), {h.reopened} reopened, "
            f"{h.marked} with _SUCCESS"
        )
        if h.blocked:
            console.print(
                f"  [red]blocked        {h.blocked} hour(s) by a failing quality gate: "
                f"{', '.join(h.blocked_hours[:5])}{' …' if h.blocked > 5 else ''} "
                f"(`flowsuite quality unblock {st.product}`)[/red]"
            )
        console.print(
            f"  quarantined    {st.quarantined:,} record(s)"
            + (f" (`flowsuite quarantine list {st.product}`)" if st.quarantined else "")
        )
        if st.warehouse == "ok":
            console.print(
                f"  warehouse      table {st.warehouse_table}: {st.warehouse_rows:,} rows"
            )
        else:
            console.print(f"  warehouse      {st.warehouse}")
        if st.iceberg:
            console.print(f"  iceberg        {st.iceberg}")
        console.print("")


def status_json(statuses: list[ProductStatus]) -> dict[str, Any]:
    """The `--json` document: {"products": [...]} with every field of ProductStatus."""
    return {"generated_at": time.time(), "products": [asdict(s) for s in statuses]}
