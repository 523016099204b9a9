"""One count: partner engagement per hour, computed once from the lake, served to both planes.

Finance and analytics used to bill a partner from two different counts. Here the count is a
derived data product, `partner_engagement`, computed **once** per hour from the committed
rows of `clicks` (the metastore's live files of that hour, never a directory listing):

    partner_id, hour, clicks, unique_users, impressions

- `clicks`: distinct `event_id`s with kind = click (the product's key: a record delivered
  twice is counted once, as in the clicks warehouse table);
- `unique_users`: distinct `user_id`s among those clicks;
- `impressions`: distinct `event_id`s with kind = impression.

The hour's result is written to the lake as `partner_engagement/dt=…/hour=…/part-g<gen>-0.parquet`
and registered in the metastore as the hour's only live file (claim → pending → swap: a
reader sees the old generation or the new one, never both), then UPSERTed from that file —
not recomputed — into the warehouse table `partner_engagement`, keyed by (partner_id, hour),
in one transaction per hour that also deletes the hour's partners that no longer appear.
`compare_planes` reads both back and names every differing cell.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from connectors.lake import Lake, hour_dir, hour_key, normalize_hour, parse_hour_key
from connectors.metastore import (
    FileStats,
    Metastore,
    create_missing_tables,
    hour_resource,
    make_engine,
)

PRODUCT = "partner_engagement"
SOURCE_PRODUCT = "clicks"
TABLE = "partner_engagement"
KEY = ("partner_id", "hour")
MEASURES = ("clicks", "unique_users", "impressions")
SCHEMA = pa.schema([
    pa.field("partner_id", pa.string(), nullable=False),
    pa.field("hour", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("clicks", pa.int64(), nullable=False),
    pa.field("unique_users", pa.int64(), nullable=False),
    pa.field("impressions", pa.int64(), nullable=False),
])


@dataclass
class HourCount:
    hour: str
    rows: int  # partner rows
    clicks: int
    source_files: list[str]
    source_rows: int
    path: str | None = None
    generation: int = 0
    replaced: list[str] = field(default_factory=list)


def _hour_ts(hour: str) -> datetime:
    return parse_hour_key(hour).replace(tzinfo=UTC)


def count_hour(lake: Lake, metastore: Metastore, hour: str, source: str = SOURCE_PRODUCT) -> tuple[pa.Table, list[str], int]:
    """The hour's engagement rows from the source's live files; (rows, files read, rows read)."""
    hour = normalize_hour(hour)
    files = [f.path for f in metastore.live_files(source, hour)]
    if not files:
        return SCHEMA.empty_table(), [], 0
    t = lake.read_tables(files, columns=["event_id", "user_id", "partner_id", "kind"])
    clicks = t.filter(pc.equal(t.column("kind"), "click"))
    by_clicks = clicks.group_by("partner_id").aggregate([("event_id", "count_distinct"), ("user_id", "count_distinct")])
    imps = t.filter(pc.equal(t.column("kind"), "impression"))
    by_imps = imps.group_by("partner_id").aggregate([("event_id", "count_distinct")])
    by_imps = pa.table({"partner_id": by_imps.column("partner_id"), "impressions": by_imps.column("event_id_count_distinct")})
    joined = by_clicks.join(by_imps, "partner_id", join_type="full outer")
    n = joined.num_rows
    out = pa.table({
        "partner_id": joined.column("partner_id"),
        "hour": pa.repeat(pa.scalar(_hour_ts(hour), pa.timestamp("us", tz="UTC")), n),
        "clicks": pc.fill_null(joined.column("event_id_count_distinct"), 0).cast(pa.int64()),
        "unique_users": pc.fill_null(joined.column("user_id_count_distinct"), 0).cast(pa.int64()),
        "impressions": pc.fill_null(joined.column("impressions"), 0).cast(pa.int64()),
    }).cast(SCHEMA)
    out = out.take(pc.sort_indices(out, [("partner_id", "ascending")]))
    return out, files, t.num_rows


def materialize_hour(lake: Lake, metastore: Metastore, hour: str, run_id: str | None = None,
                     source: str = SOURCE_PRODUCT, lease_s: float = 60.0) -> HourCount:
    """Compute the hour once and make it the hour's only live file of `partner_engagement`."""
    hour = normalize_hour(hour)
    run_id = run_id or f"adhoc-{uuid.uuid4().hex[:12]}"
    rows, files, read = count_hour(lake, metastore, hour, source)
    owner = uuid.uuid4().hex
    resource = hour_resource(hour)
    metastore.claim(PRODUCT, resource, owner, run_id, lease_s, on_delete=lake.delete)
    try:
        record = metastore.hour(PRODUCT, hour)
        generation = (record.generation if record else 0) + 1
        old = [f.path for f in metastore.live_files(PRODUCT, hour)]
        path = f"{hour_dir(PRODUCT, hour)}/part-g{generation}-0.parquet"
        metastore.register_pending(path, product=PRODUCT, kind="compacted", hour=hour, claim=resource,
                                   run_id=run_id, generation=generation)
        size = lake.write_parquet(path, rows)
        metastore.swap_hour(product=PRODUCT, hour=hour, owner=owner, replaced=old,
                            new_files=[FileStats(path=path, rows=rows.num_rows, bytes=size)], generation=generation)
    except BaseException:
        metastore.release(PRODUCT, resource, owner)
        raise
    for p in old:
        lake.delete(p)
    metastore.drop_replaced(old)
    clicks = pc.sum(rows.column("clicks")).as_py() or 0
    return HourCount(hour, rows.num_rows, clicks, files, read, path, generation, old)


def read_lake(lake: Lake, metastore: Metastore, hours: list[str] | None = None) -> pa.Table:
    """Live `partner_engagement` rows (of `hours`, or all)."""
    wanted = {normalize_hour(h) for h in hours} if hours is not None else None
    files = [f.path for f in metastore.live_files(PRODUCT) if wanted is None or f.hour in wanted]
    if not files:
        return SCHEMA.empty_table()
    return lake.read_tables(files).select(SCHEMA.names).cast(SCHEMA)


def lake_hours(metastore: Metastore) -> list[str]:
    return sorted({f.hour for f in metastore.live_files(PRODUCT)})


# --- the warehouse plane -------------------------------------------------------------------------


class EngagementTable:
    """The warehouse table `partner_engagement`, keyed by (partner_id, hour)."""

    def __init__(self, url: str | None = None, *, engine: sa.Engine | None = None, table: str = TABLE):
        self.engine = engine or make_engine(url)
        md = sa.MetaData()
        self.table = sa.Table(
            table, md,
            sa.Column("partner_id", sa.String(64), primary_key=True),
            sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
            sa.Column("clicks", sa.BigInteger, nullable=False),
            sa.Column("unique_users", sa.BigInteger, nullable=False),
            sa.Column("impressions", sa.BigInteger, nullable=False),
            sa.Column("lake_generation", sa.Integer, nullable=False),  # which lake file it came from
            sa.Column("updated_at", sa.Float, nullable=False),
        )
        create_missing_tables(self.engine, md, f"flowsuite.table.{table}")

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    def _bind_hour(self, ts: datetime) -> datetime:
        # SQLite and MariaDB store naive values: UTC by convention; PostgreSQL has timestamptz.
        return ts if self.engine.dialect.name == "postgresql" else ts.astimezone(UTC).replace(tzinfo=None)

    def upsert_hour(self, hour: str, rows: pa.Table, generation: int) -> dict[str, int]:
        """UPSERT the hour's rows and delete the hour's partners that are gone, in one transaction."""
        hour_ts = self._bind_hour(_hour_ts(normalize_hour(hour)))
        now = time.time()
        values = [
            {"partner_id": r["partner_id"], "hour": hour_ts, "clicks": r["clicks"], "unique_users": r["unique_users"],
             "impressions": r["impressions"], "lake_generation": generation, "updated_at": now}
            for r in rows.select(["partner_id", "clicks", "unique_users", "impressions"]).to_pylist()
        ]
        t = self.table
        with self.engine.begin() as conn:
            stale = sa.delete(t).where(t.c.hour == hour_ts)
            if values:
                stale = stale.where(t.c.partner_id.not_in([v["partner_id"] for v in values]))
            deleted = conn.execute(stale).rowcount
            if values:
                conn.execute(self._upsert(), values)
        return {"upserted": len(values), "deleted": deleted}

    def _upsert(self):
        t = self.table
        update_cols = ["clicks", "unique_users", "impressions", "lake_generation", "updated_at"]
        name = self.engine.dialect.name
        if name in ("postgresql", "sqlite"):
            mod = __import__(f"sqlalchemy.dialects.{name}", fromlist=["insert"])
            stmt = mod.insert(t)
            return stmt.on_conflict_do_update(index_elements=list(KEY), set_={c: stmt.excluded[c] for c in update_cols})
        from sqlalchemy.dialects.mysql import insert as my_insert

        stmt = my_insert(t)
        return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update_cols})

    def read(self, hours: list[str] | None = None) -> pa.Table:
        t = self.table
        q = sa.select(t.c.partner_id, t.c.hour, t.c.clicks, t.c.unique_users, t.c.impressions)
        if hours is not None:
            q = q.where(t.c.hour.in_([self._bind_hour(_hour_ts(normalize_hour(h))) for h in hours]))
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            h = r["hour"]
            if isinstance(h, str):
                h = datetime.fromisoformat(h)
            r["hour"] = h.replace(tzinfo=UTC) if h.tzinfo is None else h.astimezone(UTC)
        return pa.Table.from_pylist(rows, schema=SCHEMA) if rows else SCHEMA.empty_table()


def sync_warehouse(lake: Lake, metastore: Metastore, table: EngagementTable, hours: list[str] | None = None) -> dict[str, int]:
    """UPSERT the lake's live `partner_engagement` rows of `hours` (default all) into the warehouse."""
    hours = [normalize_hour(h) for h in hours] if hours is not None else lake_hours(metastore)
    totals = {"hours": 0, "upserted": 0, "deleted": 0}
    for h in hours:
        files = metastore.live_files(PRODUCT, h)
        if not files:
            continue
        rows = lake.read_tables([f.path for f in files]).select(SCHEMA.names).cast(SCHEMA)
        counts = table.upsert_hour(h, rows, max(f.generation for f in files))
        totals["hours"] += 1
        totals["upserted"] += counts["upserted"]
        totals["deleted"] += counts["deleted"]
    return totals


# --- the cross-plane check -------------------------------------------------------------------------


@dataclass(frozen=True)
class CellDifference:
    partner_id: str
    hour: str
    column: str  # a measure, or "row" when the row exists in one plane only
    lake: int | None
    warehouse: int | None

    def __str__(self) -> str:
        return f"{self.partner_id} {self.hour} {self.column}: lake={self.lake} warehouse={self.warehouse}"


def compare_planes(lake: Lake, metastore: Metastore, table: EngagementTable, hours: list[str] | None = None) -> tuple[int, list[CellDifference]]:
    """(partner-hours compared, every cell where the lake and the warehouse disagree)."""
    a = {(r["partner_id"], hour_key(r["hour"])): r for r in read_lake(lake, metastore, hours).to_pylist()}
    b = {(r["partner_id"], hour_key(r["hour"])): r for r in table.read(hours).to_pylist()}
    diffs: list[CellDifference] = []
    for k in sorted(a.keys() | b.keys()):
        la, wa = a.get(k), b.get(k)
        if la is None or wa is None:
            diffs.append(CellDifference(k[0], k[1], "row", la["clicks"] if la else None, wa["clicks"] if wa else None))
            continue
        for c in MEASURES:
            if la[c] != wa[c]:
                diffs.append(CellDifference(k[0], k[1], c, la[c], wa[c]))
    return len(a.keys() | b.keys()), diffs
