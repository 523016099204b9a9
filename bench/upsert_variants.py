"""Prototype (not a test, not part of `make bench`): ways to write an update-heavy UPSERT batch.

    .venv/bin/python -m bench.upsert_variants [--rows 300000] [--batch-rows 50000] [--rounds 3]
                                              [--db postgresql|mariadb|both] [--only NAME ...]

Raw SQL (psycopg 3 / PyMySQL), no sink code: each variant applies the same update-heavy data
(every key exists, each replaced by a newer offset) in batches of `--batch-rows`, one
transaction per batch, to its own table prefilled with the older versions. The ceiling is
one plain COPY (PostgreSQL) / LOAD DATA LOCAL INFILE (MariaDB) of the same rows into an empty
keyed table; the baseline is the driver's executemany of the guarded per-row upsert. Rounds
are interleaved (every variant once per round, order rotated) and each ratio is printed with
min / median / max over the rounds, so the figures survive a noisy shared machine.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from bench.upsert import COLS, bench_spec, make_rows
from connectors.warehouse import copy_csv_chunks

REPO = Path(__file__).resolve().parents[1]

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root"}
KEY = "event_id"
REST = COLS[1:]
NEWER_PG = "(s._partition, s._offset) > (t._partition, t._offset)"


# --- PostgreSQL ---------------------------------------------------------------------------------


def pg_ddl(name: str, fillfactor: int | None = None, unlogged: bool = False) -> str:
    ff = f" WITH (fillfactor = {fillfactor})" if fillfactor else ""
    return (f'CREATE {"UNLOGGED " if unlogged else ""}TABLE "{name}" (event_id TEXT PRIMARY KEY, user_id TEXT, '
            "partner_id TEXT, ad_id TEXT, kind TEXT, cost_micros BIGINT, event_time TIMESTAMPTZ, "
            f"_partition INTEGER NOT NULL, _offset BIGINT NOT NULL){ff}")


def pg_copy(cur, table: str, data: pa.Table) -> None:
    with cur.copy(f'COPY "{table}" ({", ".join(data.column_names)}) FROM STDIN WITH (FORMAT csv)') as copy:
        for chunk in copy_csv_chunks(data):
            copy.write(chunk)


def pg_stage(cur, how: str, data: pa.Table) -> str:
    """Load a batch into a staging table; returns its name."""
    cols = ("event_id TEXT, user_id TEXT, partner_id TEXT, ad_id TEXT, kind TEXT, cost_micros BIGINT, "
            "event_time TIMESTAMPTZ, _partition INTEGER, _offset BIGINT")
    if how == "temp-drop":  # what the sink does today
        cur.execute(f"CREATE TEMPORARY TABLE stage ({cols}) ON COMMIT DROP")
    elif how == "temp-keep":  # one per session, emptied at commit: no catalog churn per batch
        cur.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS stage_keep ({cols}) ON COMMIT DELETE ROWS")
        pg_copy(cur, "stage_keep", data)
        return "stage_keep"
    else:
        raise ValueError(how)
    pg_copy(cur, "stage", data)
    return "stage"


def pg_onconflict(conn, table: str, data: pa.Table, stage: str = "temp-drop") -> tuple[int, int]:
    """Today's sink: INSERT … SELECT … ON CONFLICT DO UPDATE … WHERE newer, counted by RETURNING."""
    with conn.cursor() as cur:
        st = pg_stage(cur, stage, data)
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in REST)
        cur.execute(
            f'WITH up AS (INSERT INTO "{table}" AS t ({", ".join(COLS)}) SELECT {", ".join(COLS)} FROM {st} '
            f"ON CONFLICT (event_id) DO UPDATE SET {sets} WHERE (EXCLUDED._partition, EXCLUDED._offset) > "
            "(t._partition, t._offset) RETURNING (xmax = 0) AS ins) "
            "SELECT count(*) FILTER (WHERE ins), count(*) FROM up"
        )
        ins, changed = cur.fetchone()
    conn.commit()
    return ins, changed - ins


def pg_update_insert(conn, table: str, data: pa.Table, stage: str = "temp-drop", analyze: bool = False,
                     join: str | None = None) -> tuple[int, int]:
    """Set-based: UPDATE … FROM stage for existing keys (version guard in the join), then
    INSERT … SELECT the keys that are not there."""
    with conn.cursor() as cur:
        st = pg_stage(cur, stage, data)
        if analyze:
            cur.execute(f"ANALYZE {st}")
        if join:
            cur.execute(f"SET LOCAL {join} = off")
        sets = ", ".join(f"{c} = s.{c}" for c in REST)
        cur.execute(f'UPDATE "{table}" AS t SET {sets} FROM {st} AS s WHERE t.event_id = s.event_id AND {NEWER_PG}')
        updated = cur.rowcount
        cur.execute(
            f'INSERT INTO "{table}" ({", ".join(COLS)}) SELECT {", ".join("s." + c for c in COLS)} FROM {st} AS s '
            f'WHERE NOT EXISTS (SELECT 1 FROM "{table}" AS t WHERE t.event_id = s.event_id)'
        )
        inserted = cur.rowcount
    conn.commit()
    return inserted, updated


def pg_executemany(conn, table: str, data: pa.Table) -> tuple[int, int]:
    params = [tuple(r[c] for c in COLS) for r in data.to_pylist()]
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in REST)
    sql = (f'INSERT INTO "{table}" AS t ({", ".join(COLS)}) VALUES ({", ".join(["%s"] * len(COLS))}) '
           f"ON CONFLICT (event_id) DO UPDATE SET {sets} WHERE (EXCLUDED._partition, EXCLUDED._offset) > "
           "(t._partition, t._offset)")
    with conn.cursor() as cur:
        cur.executemany(sql, params)
    conn.commit()
    return 0, len(params)


# --- MariaDB -------------------------------------------------------------------------------------


def my_ddl(name: str) -> str:
    return (f"CREATE TABLE `{name}` (event_id VARCHAR(255) PRIMARY KEY, user_id TEXT, partner_id TEXT, ad_id TEXT, "
            "kind TEXT, cost_micros BIGINT, event_time DATETIME(6), _partition INTEGER NOT NULL, "
            "_offset BIGINT NOT NULL) ENGINE=InnoDB")


def my_tsv(data: pa.Table) -> bytes:
    """Rows as LOAD DATA's default text format (tab-separated, \\N for NULL), written by Arrow."""
    cols = []
    for name in data.column_names:
        col = data.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us")).cast(pa.string())
        cols.append(col)
    t = pa.table(cols, names=data.column_names)
    buf = io.BytesIO()
    pacsv.write_csv(t, buf, pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))
    return buf.getvalue().replace(b"\t\t", b"\t\\N\t")  # (no NULLs in the bench data)


def my_python_rows(data: pa.Table) -> list[tuple]:
    out = []
    for r in data.to_pylist():
        r = dict(r)
        if r["event_time"] is not None:
            r["event_time"] = r["event_time"].replace(tzinfo=None)
        out.append(tuple(r[c] for c in COLS))
    return out


_TMP = Path(os.environ.get("TMPDIR", "/tmp"))


def my_load(cur, table: str, data: pa.Table) -> None:
    path = _TMP / f"flowsuite-bench-{uuid.uuid4().hex[:8]}.tsv"
    path.write_bytes(my_tsv(data))
    try:
        cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE `{table}` ({', '.join(COLS)})")
    finally:
        path.unlink()


def my_stage(cur, data: pa.Table, load: str) -> None:
    cur.execute("DROP TEMPORARY TABLE IF EXISTS stage")
    cur.execute("CREATE TEMPORARY TABLE stage (event_id VARCHAR(255), user_id TEXT, partner_id TEXT, ad_id TEXT, "
                "kind TEXT, cost_micros BIGINT, event_time DATETIME(6), _partition INTEGER, _offset BIGINT)")
    if load == "infile":
        my_load(cur, "stage", data)
    elif load == "values":
        from connectors.warehouse.dialects.mysql_values import insert_statements

        for sql in insert_statements("stage", data, lambda c: f"`{c}`"):
            cur.execute(sql)
    else:
        cur.executemany(f"INSERT INTO stage ({', '.join(COLS)}) VALUES ({', '.join(['%s'] * len(COLS))})",
                        my_python_rows(data))


MY_NEWER = "(s._partition > t._partition OR (s._partition = t._partition AND s._offset > t._offset))"


def my_odku(conn, table: str, data: pa.Table, load: str = "insert") -> tuple[int, int]:
    """Today's sink: stage, count, INSERT … SELECT … ON DUPLICATE KEY UPDATE with CASE guards."""
    with conn.cursor() as cur:
        my_stage(cur, data, load)
        cur.execute(f"SELECT COUNT(CASE WHEN {MY_NEWER} THEN 1 END), COUNT(*) FROM stage s JOIN `{table}` t "
                    "ON s.event_id = t.event_id")
        updates, existing = cur.fetchone()
        guard = (f"(VALUES(_partition) > `{table}`._partition OR (VALUES(_partition) = `{table}`._partition AND "
                 f"VALUES(_offset) > `{table}`._offset))")
        order = [c for c in REST if c not in ("_partition", "_offset")] + ["_offset", "_partition"]
        sets = ", ".join(f"{c} = CASE WHEN {guard} THEN VALUES({c}) ELSE `{table}`.{c} END" for c in order)
        cur.execute(f"INSERT INTO `{table}` ({', '.join(COLS)}) SELECT {', '.join(COLS)} FROM stage "
                    f"ON DUPLICATE KEY UPDATE {sets}")
        cur.execute("DROP TEMPORARY TABLE stage")
    conn.commit()
    return len(data) - existing, updates


def my_update_insert(conn, table: str, data: pa.Table, load: str = "insert") -> tuple[int, int]:
    """Set-based: UPDATE … JOIN stage (version guard in the join), then INSERT the missing keys."""
    with conn.cursor() as cur:
        my_stage(cur, data, load)
        sets = ", ".join(f"t.{c} = s.{c}" for c in REST)
        updated = cur.execute(f"UPDATE `{table}` t JOIN stage s ON t.event_id = s.event_id SET {sets} WHERE {MY_NEWER}")
        inserted = cur.execute(
            f"INSERT INTO `{table}` ({', '.join(COLS)}) SELECT {', '.join('s.' + c for c in COLS)} FROM stage s "
            f"LEFT JOIN `{table}` t ON t.event_id = s.event_id WHERE t.event_id IS NULL")
        cur.execute("DROP TEMPORARY TABLE stage")
    conn.commit()
    return inserted, updated


def my_executemany(conn, table: str, data: pa.Table) -> tuple[int, int]:
    guard = ("(VALUES(_partition) > _partition OR (VALUES(_partition) = _partition AND VALUES(_offset) > _offset))")
    order = [c for c in REST if c not in ("_partition", "_offset")] + ["_offset", "_partition"]
    sets = ", ".join(f"{c} = IF({guard}, VALUES({c}), {c})" for c in order)
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO `{table}` ({', '.join(COLS)}) VALUES ({', '.join(['%s'] * len(COLS))}) "
                        f"ON DUPLICATE KEY UPDATE {sets}", my_python_rows(data))
    conn.commit()
    return 0, len(data)


# --- the run -----------------------------------------------------------------------------------


def batches(data: pa.Table, n: int):
    for lo in range(0, data.num_rows, n):
        yield data.slice(lo, n)


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def run_db(kind: str, args) -> None:
    spec = bench_spec("v")
    first = make_rows(spec, args.rows, 0, seed=1).select(COLS)
    second = make_rows(spec, args.rows, args.rows, seed=2).select(COLS)
    base_n = min(args.baseline_rows, args.rows)
    db = f"flowsuite_bench_{uuid.uuid4().hex[:8]}"
    if kind == "postgresql":
        import psycopg

        with psycopg.connect(**PG, dbname="postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{db}"')

        def connect():
            return psycopg.connect(**PG, dbname=db)

        def make_table(name: str, fill: bool, **kw) -> None:
            with connect() as conn, conn.cursor() as cur:
                cur.execute(pg_ddl(name, **kw))
                if fill:
                    pg_copy(cur, name, first)
                conn.commit()
            if fill and args.vacuum:
                with psycopg.connect(**PG, dbname=db, autocommit=True) as c:
                    c.execute(f'VACUUM ANALYZE "{name}"')

        def ceiling(conn, table, data):
            with conn.cursor() as cur:
                pg_copy(cur, table, data)
            conn.commit()
            return 0, 0

        variants: dict[str, tuple[Callable, dict, dict]] = {
            # name: (apply(conn, table, batch), table options, apply options)
            "COPY (ceiling)": (ceiling, {}, {}),
            "on-conflict (today)": (pg_onconflict, {}, {}),
            "on-conflict, ff70": (pg_onconflict, {"fillfactor": 70}, {}),
            "on-conflict, ff50": (pg_onconflict, {"fillfactor": 50}, {}),
            "on-conflict, stage kept": (pg_onconflict, {}, {"stage": "temp-keep"}),
            "update+insert": (pg_update_insert, {}, {}),
            "update+insert, ff70": (pg_update_insert, {"fillfactor": 70}, {}),
            "update+insert, ff50": (pg_update_insert, {"fillfactor": 50}, {}),
            "update+insert, stage kept": (pg_update_insert, {}, {"stage": "temp-keep"}),
            "update+insert, ff50, stage kept": (pg_update_insert, {"fillfactor": 50}, {"stage": "temp-keep"}),
            "executemany": (pg_executemany, {}, {}),
        }
        drop = lambda: _pg_drop(db)  # noqa: E731
    else:
        import pymysql

        def connect():
            return pymysql.connect(**MARIADB, database=db, local_infile=True, autocommit=False)

        with pymysql.connect(**MARIADB, autocommit=True) as admin, admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{db}`")

        def make_table(name: str, fill: bool, **kw) -> None:
            conn = connect()
            try:
                with conn.cursor() as cur:
                    cur.execute(my_ddl(name))
                    if fill:
                        for b in batches(first, 50_000):
                            my_load(cur, name, b)
                conn.commit()
            finally:
                conn.close()

        def ceiling(conn, table, data):
            with conn.cursor() as cur:
                my_load(cur, table, data)
            conn.commit()
            return 0, 0

        variants = {
            "LOAD DATA (ceiling)": (ceiling, {}, {}),
            "odku (today)": (my_odku, {}, {}),
            "odku, LOAD DATA stage": (my_odku, {}, {"load": "infile"}),
            "odku, Arrow VALUES stage": (my_odku, {}, {"load": "values"}),
            "update+insert, Arrow VALUES stage": (my_update_insert, {}, {"load": "values"}),
            "executemany": (my_executemany, {}, {}),
        }

        def drop():
            with pymysql.connect(**MARIADB, autocommit=True) as admin, admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{db}`")

    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only or "ceiling" in k or k == "executemany"}
    rates: dict[str, list[float]] = {k: [] for k in variants}
    try:
        names = list(variants)
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)]
            for name in order:
                fn, table_kw, kw = variants[name]
                table = f"t_{uuid.uuid4().hex[:8]}"
                is_ceiling = "ceiling" in name
                make_table(table, fill=not is_ceiling, **table_kw)
                data = second.slice(0, base_n) if name == "executemany" else second
                conn = connect()
                try:
                    started = time.perf_counter()
                    if is_ceiling:
                        fn(conn, table, data)
                    else:
                        ins = upd = 0
                        for b in batches(data, args.batch_rows):
                            i, u = fn(conn, table, b, **kw)
                            ins, upd = ins + i, upd + u
                        assert (ins, upd) == (0, data.num_rows), (name, ins, upd)
                    took = time.perf_counter() - started
                finally:
                    conn.close()
                rates[name].append(data.num_rows / took)
                print(f"  round {rnd + 1} {name:<34} {data.num_rows / took:>10,.0f} rows/s", flush=True)
    finally:
        drop()
    ceil_name = next(k for k in variants if "ceiling" in k)
    print(f"\n{kind}: update-heavy, {args.rows:,} rows, batches of {args.batch_rows:,}, {args.rounds} interleaved "
          f"rounds (executemany on {base_n:,} rows); ratios min / median / max over rounds")
    print(f"{'variant':<36} {'rows/s (median)':>16} {'vs ceiling':>20} {'vs executemany':>20}")
    for name, rs in rates.items():
        vs_c = [r / c for r, c in zip(rs, rates[ceil_name], strict=True)]
        vs_e = [r / e for r, e in zip(rs, rates["executemany"], strict=True)]
        print(f"{name:<36} {statistics.median(rs):>16,.0f} {spread(vs_c):>20} {spread(vs_e):>20}")


def _pg_drop(db: str) -> None:
    import psycopg

    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--baseline-rows", type=int, default=50_000)
    ap.add_argument("--batch-rows", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db", choices=["postgresql", "mariadb", "both"], default="both")
    ap.add_argument("--vacuum", action="store_true", help="VACUUM ANALYZE each prefilled table (PostgreSQL)")
    ap.add_argument("--only", action="append", help="only these variants (plus ceiling and executemany)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    for kind in (["postgresql", "mariadb"] if args.db == "both" else [args.db]):
        run_db(kind, args)
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
