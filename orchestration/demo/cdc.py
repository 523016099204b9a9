"""The demo's change-data-capture section: a shop's `orders` table → CDC → lake and warehouse.

Starts a throwaway PostgreSQL cluster with wal_level=logical (orchestration/services/pg_cluster.py;
its data is kept under `<home>/cdc-postgres`, or a temp folder named after the home when the
postgres user cannot reach it, so a second `make demo` continues the same history), makes inserts, updates (one leaving a large TOASTed note unchanged), deletes and a
key change, captures them (the snapshot on the first run), lands and syncs the product
`orders` through its Dagster ingest job, and compares the warehouse table with the source
table row by row. The cluster is stopped at the end.
"""

from __future__ import annotations

import os
import random

CREATE = """
CREATE TABLE IF NOT EXISTS orders (
    id bigint PRIMARY KEY,
    customer text NOT NULL,
    amount numeric(12, 2),
    status text,
    placed_at timestamptz DEFAULT now(),
    note text
)
"""
STATUSES = ["new", "paid", "shipped", "cancelled"]


def _exec(url: str, *statements: tuple) -> list:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            out: list = []
            for stmt, *args in statements:
                cur.execute(stmt, tuple(args) or None)
                out = cur.fetchall() if cur.description else out
            return out
    finally:
        conn.close()


def make_changes(url: str, rng: random.Random) -> dict[str, int]:
    """New orders, status changes, a TOAST-unchanged update, deletes and a key change."""
    _exec(url, (CREATE,))
    (top,) = _exec(url, ("SELECT coalesce(max(id), 0) FROM orders",))[0]
    new = [(top + i, f"customer-{rng.randrange(1000):03d}", f"{rng.randrange(100, 100000) / 100:.2f}") for i in range(1, 41)]
    big = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(40_000))
    _exec(url, *[("INSERT INTO orders (id, customer, amount, status) VALUES (%s, %s, %s, 'new')", *n) for n in new],
          ("UPDATE orders SET note = %s WHERE id = %s", big, top + 1))
    ids = [r[0] for r in _exec(url, ("SELECT id FROM orders ORDER BY id",))]
    updated = rng.sample(ids, min(15, len(ids)))
    _exec(url, *[("UPDATE orders SET status = %s WHERE id = %s", rng.choice(STATUSES[1:]), i) for i in updated],
          ("UPDATE orders SET status = 'paid' WHERE id = %s", top + 1))  # its note stays in TOAST: not sent
    gone = rng.sample([i for i in ids if i not in updated and i != top + 1], 5)
    _exec(url, *[("DELETE FROM orders WHERE id = %s", i) for i in gone])
    moved = max(i for i in ids if i not in gone)
    _exec(url, ("UPDATE orders SET id = id + 1000000 WHERE id = %s", moved))
    return {"inserted": len(new), "updated": len(updated) + 2, "deleted": len(gone), "key_changes": 1}


def orders_section(demo) -> list[str] | None:
    from connectors.flows import RunContext
    from connectors.sources import load_sources
    from connectors.sources.cdc import CdcError, capture
    from connectors.sources.cdc.pgoutput import lsn_text
    from connectors.warehouse import WarehouseSink
    from orchestration.ingest import ingest_summary, run_ingest
    from orchestration.services.pg_cluster import (
        ClusterError,
        PgCluster,
        find_bin_dir,
        kept_cluster_root,
    )
    from quality.expectations import load_checked_specs

    products = {s.name: s for s in load_checked_specs(demo.settings.products_dir)}
    sources = [s for s in load_sources(demo.settings.products_dir, list(products.values())) if s.product == "orders"]
    if not sources or "orders" not in products:
        return None
    source, product = sources[0], products["orders"]
    bin_dir = find_bin_dir()
    if bin_dir is None:
        return ["(skipped: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin for the throwaway cluster)"]
    cluster = PgCluster(bin_dir, root=kept_cluster_root(demo.settings.home))
    try:
        cluster.start()
    except ClusterError as exc:
        return [f"(skipped: cannot start the throwaway PostgreSQL cluster: {exc})"]
    os.environ["FLOWSUITE_CDC_URL"] = cluster.url  # the source file's ${FLOWSUITE_CDC_URL}
    try:
        lines = [f"throwaway PostgreSQL {bin_dir.parent.name} with wal_level=logical on 127.0.0.1:{cluster.port}"]
        rng = random.Random()
        _exec(cluster.url, (CREATE,))
        try:
            run = RunContext(lake=demo.lake, metastore=demo.metastore, bootstrap=demo.settings.kafka_bootstrap,
                             kafka_config=demo.settings.kafka_client_config())
            first = capture(source, product, run)
            made = make_changes(cluster.url, rng)
            r = capture(source, product, run)
        except CdcError as exc:
            return [*lines, f"(capture failed: {exc})"]
        if first.snapshot_rows or first.created_slot:
            lines.append(f"snapshot: {first.snapshot_rows} existing row(s) as op r (slot {source.slot_name} created)")
        lines.append(f"changes made: {made['inserted']} inserts, {made['updated']} updates (one leaving a 40 kB note "
                     f"unchanged), {made['deleted']} deletes, {made['key_changes']} key change")
        lines.append(f"captured {r.transactions} transaction(s) → {r.events} event(s) on topic {product.topic} "
                     f"(deletes + tombstones, key change = delete + tombstone + create); position "
                     f"{lsn_text(r.position_after) if r.position_after else 'none'}")
        if r.slot_after:
            lines.append(r.slot_after.describe())
        outcome = run_ingest(product.name)
        lines += ingest_summary(outcome)
        table = {row[0]: (row[1], row[2], row[3], row[4]) for row in
                 _exec(cluster.url, ("SELECT id, customer, amount::text, status, note FROM orders",))}
        sink = WarehouseSink(product, demo.settings.warehouse_url)
        try:
            warehouse = {row["id"]: (row["customer"], row["amount"], row["status"], row["note"]) for row in sink.read_rows()}
        finally:
            sink.dispose()
        same = warehouse == table
        differ = len(set(table) ^ set(warehouse)) + sum(1 for k in table if k in warehouse and table[k] != warehouse[k])
        lines.append(f"warehouse table orders {'EQUALS' if same else 'DIFFERS FROM'} the source table: "
                     f"{len(warehouse)} vs {len(table)} rows" + ("" if same else f", {differ} row(s) differ"))
        ops = demo.lake.read_tables([f.path for f in demo.metastore.live_files(product.name)], columns=["_op"])
        counts = {}
        for op in ops.column("_op").to_pylist():
            counts[op or "tombstone"] = counts.get(op or "tombstone", 0) + 1
        lines.append("lake rows by _op: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return lines
    finally:
        cluster.stop(remove=False)
