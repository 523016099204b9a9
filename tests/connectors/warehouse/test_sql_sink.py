"""The warehouse sink on SQLite, PostgreSQL and MariaDB: idempotence, order independence,
tombstones, stale records, schema evolution, secrets, and SIGKILL of a syncing process.

Batch-level properties build Arrow batches in the lake's schema directly (the unit the sink
applies); the end-to-end and crash tests produce to the real broker, land with
`connectors.flows.landing.land`, and compare with the latest-per-key state computed from the
produced records.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connectors.errors import is_transient
from connectors.flows import land
from connectors.formats import lake_schema
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec
from connectors.warehouse import (
    WarehouseError,
    WarehouseRefusedError,
    WarehouseSchemaError,
    WarehouseSink,
    reduce_latest,
    sync,
)
from connectors.warehouse.dialects import PostgresDialect
from tests.support.runs import run_at
from tests.support.services import PG_HOST, PG_PORT
from tests.support.warehouse import T0, expected_state, make_spec, produce_accounts, state

DIALECTS = ["sqlite", "postgresql", "mariadb"]
REPO = Path(__file__).resolve().parents[3]
RELIABILITY_FULL = os.environ.get("FLOWSUITE_RELIABILITY") == "full"


URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}


@pytest.fixture(params=DIALECTS)
def warehouse_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(URL_FIXTURES[request.param])


@pytest.fixture(params=[*DIALECTS, "postgresql-on-conflict"])
def batch_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The batch-level tests run on PostgreSQL twice: with MERGE (15+, what this server runs)
    and with INSERT … ON CONFLICT, the way for servers before 15."""
    if request.param == "postgresql-on-conflict":
        monkeypatch.setattr(PostgresDialect, "_merge_available", staticmethod(lambda conn: False))
        return request.getfixturevalue("pg_url")
    return request.getfixturevalue(URL_FIXTURES[request.param])


def batch(spec: DataProductSpec, records: list[tuple]) -> pa.Table:
    """records: (id, amount, partition, offset[, deleted[, ts_minutes]]) → a lake-schema table."""
    schema = lake_schema(spec)
    rows = []
    for rec in records:
        k, amount, p, o = rec[:4]
        deleted = rec[4] if len(rec) > 4 else False
        minutes = rec[5] if len(rec) > 5 else 0
        row = {"id": k, "amount": None if deleted else amount,
               "ts": None if deleted else T0 + timedelta(minutes=minutes),
               "_topic": spec.topic, "_partition": p, "_offset": o, "_timestamp": T0, "_key": k}
        if spec.deletes_enabled:
            row["_deleted"] = deleted
        rows.append({n: row.get(n) for n in schema.names})
    return pa.Table.from_pylist(rows, schema=schema)


# --- the per-key reduction ---------------------------------------------------------------


def test_reduce_latest_keeps_the_highest_position_per_key():
    spec = make_spec()
    rows = batch(spec, [("a", 1, 0, 5), ("a", 2, 0, 9), ("a", 3, 0, 7), ("b", 4, 1, 2), ("c", 5, 0, 1), (None, 6, 0, 3)])
    out, n_null = reduce_latest(spec, rows)
    got = {r["id"]: r["amount"] for r in out.to_pylist()}
    assert got == {"a": 2, "b": 4, "c": 5}
    assert n_null == 1


def test_reduce_latest_by_version_field_then_position():
    spec = make_spec(version="seq", extra_fields=[{"name": "seq", "type": "int64"}])
    schema = lake_schema(spec)
    base = {"ts": T0, "_topic": "t", "_timestamp": T0, "_deleted": False}
    rows = pa.Table.from_pylist(
        [
            {**base, "id": "a", "amount": 1, "seq": 3, "_partition": 0, "_offset": 1, "_key": "a"},
            {**base, "id": "a", "amount": 2, "seq": 1, "_partition": 0, "_offset": 2, "_key": "a"},
            {**base, "id": "a", "amount": 3, "seq": None, "_partition": 0, "_offset": 3, "_key": "a"},
            {**base, "id": "b", "amount": 4, "seq": 2, "_partition": 0, "_offset": 4, "_key": "b"},
            {**base, "id": "b", "amount": 5, "seq": 2, "_partition": 0, "_offset": 5, "_key": "b"},
        ],
        schema=schema,
    )
    out, _ = reduce_latest(spec, rows)
    assert {r["id"]: r["amount"] for r in out.to_pylist()} == {"a": 1, "b": 5}


def test_reduce_latest_leaves_a_batch_of_distinct_keys_as_it_is():
    spec = make_spec()
    rows = batch(spec, [("c", 1, 0, 5), ("a", 2, 1, 9), ("b", 3, 0, 7), (None, 4, 0, 8)])
    out, n_null = reduce_latest(spec, rows)
    assert n_null == 1 and out.equals(rows.slice(0, 3))
    two = make_spec(key=["id", "amount"])
    rows = batch(two, [("a", 1, 0, 1), ("a", 2, 0, 2), ("a", 1, 0, 3)])
    out, _ = reduce_latest(two, rows)
    assert sorted((r["id"], r["amount"], r["_offset"]) for r in out.to_pylist()) == [("a", 1, 3), ("a", 2, 2)]


# --- batch semantics on every dialect ------------------------------------------------------


def test_same_batch_twice_leaves_the_table_unchanged(batch_url):
    spec = make_spec()
    sink = WarehouseSink(spec, batch_url)
    try:
        b = batch(spec, [("a", 1, 0, 0), ("b", 2, 0, 1), ("a", 3, 0, 2), ("c", 4, 1, 0)])
        first = sink.apply(b)
        assert (first.inserted, first.updated, first.reduced) == (3, 0, 1)
        before = state(sink)
        again = sink.apply(b)
        assert (again.inserted, again.updated, again.skipped_stale) == (0, 0, 3)
        assert state(sink) == before == {"a": (3, 0, 2), "b": (2, 0, 1), "c": (4, 1, 0)}
    finally:
        sink.dispose()


def test_out_of_order_batches_end_in_the_same_table(batch_url):
    rng = random.Random(11)
    keys = [f"k{i}" for i in range(30)]
    records, offsets = [], {0: 0, 1: 0}
    for _ in range(400):
        k = rng.choice(keys)
        p = int(k[1:]) % 2  # a key stays in one partition, as Kafka's partitioner keeps it
        deleted = rng.random() < 0.15
        records.append((k, rng.randrange(1000), p, offsets[p], deleted))
        offsets[p] += 1
    chunks = [records[i : i + 37] for i in range(0, len(records), 37)]
    spec_in = make_spec()
    spec_shuffled = make_spec()
    sink_in, sink_shuffled = WarehouseSink(spec_in, batch_url), WarehouseSink(spec_shuffled, batch_url)
    try:
        for c in chunks:
            sink_in.apply(batch(spec_in, c))
        order = list(range(len(chunks)))
        rng.shuffle(order)
        for i in order:
            sink_shuffled.apply(batch(spec_shuffled, chunks[i]))
        for i in order[:5]:  # and some replays on top
            sink_shuffled.apply(batch(spec_shuffled, chunks[i]))
        expected: dict = {}
        for k, amount, p, o, deleted in records:
            if deleted:
                expected.pop(k, None)
            else:
                expected[k] = (amount, p, o)
        assert state(sink_in) == expected
        assert state(sink_shuffled) == expected
    finally:
        sink_in.dispose()
        sink_shuffled.dispose()


def test_tombstones_delete_and_older_replays_do_not_bring_rows_back(batch_url):
    spec = make_spec()
    sink = WarehouseSink(spec, batch_url)
    try:
        sink.apply(batch(spec, [("a", 1, 0, 0), ("b", 2, 0, 1)]))
        c = sink.apply(batch(spec, [("a", None, 0, 2, True)]))
        assert c.deleted == 1
        assert state(sink) == {"b": (2, 0, 1)}
        replay = sink.apply(batch(spec, [("a", 1, 0, 0)]))  # older than the tombstone
        assert replay.inserted == 0 and replay.skipped_stale == 1
        assert "a" not in state(sink)
        stale_delete = sink.apply(batch(spec, [("b", None, 0, 0, True)]))  # older than row b
        assert stale_delete.deleted == 0 and stale_delete.skipped_stale == 1
        back = sink.apply(batch(spec, [("a", 7, 0, 3)]))  # newer: the key comes back
        assert back.inserted == 1
        assert state(sink) == {"a": (7, 0, 3), "b": (2, 0, 1)}
        # delete then re-insert inside one batch: the latest wins
        sink.apply(batch(spec, [("b", None, 0, 4, True), ("b", 9, 0, 5)]))
        sink.apply(batch(spec, [("a", 8, 0, 6), ("a", None, 0, 7, True)]))
        assert state(sink) == {"b": (9, 0, 5)}
    finally:
        sink.dispose()


def test_stale_records_are_skipped(batch_url):
    spec = make_spec(deletes=False)
    sink = WarehouseSink(spec, batch_url)
    try:
        sink.apply(batch(spec, [("a", 10, 0, 10), ("b", 20, 1, 5)]))
        c = sink.apply(batch(spec, [("a", 1, 0, 3), ("b", 2, 1, 4), ("c", 3, 0, 11)]))
        assert (c.inserted, c.updated, c.skipped_stale) == (1, 0, 2)
        u = sink.apply(batch(spec, [("a", 11, 0, 12)]))
        assert (u.inserted, u.updated, u.skipped_stale) == (0, 1, 0)
        assert state(sink) == {"a": (11, 0, 12), "b": (20, 1, 5), "c": (3, 0, 11)}
    finally:
        sink.dispose()


def test_version_field_orders_rows_not_arrival(batch_url):
    spec = make_spec(version="seq", extra_fields=[{"name": "seq", "type": "int64"}])
    schema = lake_schema(spec)

    def rec(k, amount, seq, o, deleted=False):
        return {"id": k, "amount": amount, "seq": seq, "ts": T0, "_topic": "t", "_partition": 0, "_offset": o,
                "_timestamp": T0, "_key": k, "_deleted": deleted}

    sink = WarehouseSink(spec, batch_url)
    try:
        sink.apply(pa.Table.from_pylist([rec("a", 1, 5, 0)], schema=schema))
        older = sink.apply(pa.Table.from_pylist([rec("a", 2, 4, 1)], schema=schema))  # later offset, lower version
        assert older.skipped_stale == 1
        newer = sink.apply(pa.Table.from_pylist([rec("a", 3, 6, 2)], schema=schema))
        assert newer.updated == 1
        rows = {r["id"]: (r["amount"], r["seq"]) for r in sink.read_rows()}
        assert rows == {"a": (3, 6)}
        gone = sink.apply(pa.Table.from_pylist([rec("a", None, None, 3, True)], schema=schema))
        assert gone.deleted == 1 and sink.read_rows() == []
        replay = sink.apply(pa.Table.from_pylist([rec("a", 3, 6, 2)], schema=schema))  # the deleted version
        assert replay.inserted == 0 and sink.read_rows() == []
        again = sink.apply(pa.Table.from_pylist([rec("a", 4, 7, 4)], schema=schema))
        assert again.inserted == 1
    finally:
        sink.dispose()


# --- tables --------------------------------------------------------------------------------


def test_a_new_field_adds_a_nullable_column(warehouse_url):
    table = f"evolve_{uuid.uuid4().hex[:8]}"
    v1 = make_spec(deletes=False, table=table)
    sink = WarehouseSink(v1, warehouse_url)
    sink.apply(batch(v1, [("a", 1, 0, 0)]))
    sink.dispose()
    v2 = make_spec(deletes=False, table=table, extra_fields=[{"name": "currency", "type": "string"}])
    sink2 = WarehouseSink(v2, warehouse_url)
    try:
        assert sink2.ensure_table() == ["currency"]
        schema = lake_schema(v2)
        sink2.apply(pa.Table.from_pylist(
            [{"id": "b", "amount": 2, "ts": T0, "currency": "EUR", "_topic": "t", "_partition": 0, "_offset": 1,
              "_timestamp": T0, "_key": "b"}], schema=schema))
        rows = {r["id"]: r["currency"] for r in sink2.read_rows()}
        assert rows == {"a": None, "b": "EUR"}
        assert sink2.ensure_table() == []
    finally:
        sink2.dispose()


def test_an_incompatible_change_stops_with_what_to_do(warehouse_url):
    table = f"incompat_{uuid.uuid4().hex[:8]}"
    v1 = make_spec(deletes=False, table=table)
    sink = WarehouseSink(v1, warehouse_url)
    sink.ensure_table()
    sink.dispose()
    changed = WarehouseSink(make_spec(deletes=False, table=table, amount_type="string"), warehouse_url)
    with pytest.raises(WarehouseSchemaError, match=r"column amount is BIGINT(\(\d+\))? in the warehouse but the spec says string; migrate"):
        changed.ensure_table()
    changed.dispose()
    rekeyed = WarehouseSink(make_spec(deletes=False, table=table, key=["id", "amount"]), warehouse_url)
    with pytest.raises(WarehouseSchemaError, match=r"primary key \(id\) but the spec's key is \(id, amount\)"):
        rekeyed.ensure_table()
    rekeyed.dispose()


def test_passwords_never_appear_in_errors():
    spec = make_spec()
    sink = WarehouseSink(spec, "postgresql+psycopg://flowsuite:s3cret-pw@127.0.0.1:1/nowhere")
    with pytest.raises(WarehouseError) as info:
        sink.ensure_table()
    assert "s3cret-pw" not in str(info.value)
    assert "***" in str(info.value) and "127.0.0.1:1" in str(info.value)
    assert "s3cret-pw" not in repr(sink)
    assert is_transient(info.value)  # nobody answered: the same sync may pass once it is up


@pytest.mark.parametrize("url", ["postgresql+psycopg://u:s3cret-pw@host:notaport/db",
                                 "nosuchdb://u:s3cret-pw@host/db"])
def test_a_url_that_cannot_open_is_refused_terminally_without_echoing_it(url):
    with pytest.raises(WarehouseRefusedError) as info:
        WarehouseSink(make_spec(), url)
    assert not is_transient(info.value)  # the same URL fails the same way: a person must fix it
    assert "s3cret-pw" not in str(info.value) and "warehouse URL" in str(info.value)


def test_a_statement_the_database_refuses_is_terminal(pg_url):
    """A role without CREATE on the schema (PostgreSQL 15's default for public): the driver's
    ProgrammingError becomes WarehouseRefusedError, which retries would only repeat."""
    import psycopg

    role = f"flowsuite_ro_{uuid.uuid4().hex[:8]}"
    dbname = pg_url.rsplit("/", 1)[1]
    admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=dbname, autocommit=True)
    admin.execute(f'CREATE ROLE "{role}" LOGIN')
    admin.execute(f'REVOKE CREATE ON SCHEMA public FROM PUBLIC, "{role}"')
    sink = WarehouseSink(make_spec(), pg_url.replace("//postgres@", f"//{role}@"))
    try:
        with pytest.raises(WarehouseRefusedError, match="InsufficientPrivilege") as info:
            sink.ensure_table()
        assert not is_transient(info.value)
    finally:
        sink.dispose()
        admin.execute(f'DROP ROLE "{role}"')
        admin.close()


# --- from the lake: end to end and crashes -----------------------------------------------


def land_all(spec, lake, metastore, bootstrap):
    result = land(spec, lake=lake, metastore=metastore, bootstrap=bootstrap, idle_timeout_s=5.0)
    assert result.quarantined == 0
    return result


def test_end_to_end_from_the_broker(kafka_bootstrap, topic, tmp_path, warehouse_url):
    spec = make_spec(topic)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    produced = produce_accounts(kafka_bootstrap, topic, 3000, keys=400, seed=3)
    land_all(spec, lake, metastore, kafka_bootstrap)
    first = sync(spec, lake=lake, metastore=metastore, url=warehouse_url, batch_rows=700)
    assert first.rows_read == 3000 and first.batches > 1
    assert first.offsets_after == {p: s.next_offset for p, s in metastore.committed_offsets(spec.name).items()}
    more = produce_accounts(kafka_bootstrap, topic, 1000, keys=400, seed=4)
    land_all(spec, lake, metastore, kafka_bootstrap)
    second = sync(spec, lake=lake, metastore=metastore, url=warehouse_url)
    assert second.rows_read == 1000 and second.offsets_before == first.offsets_after
    nothing = sync(spec, lake=lake, metastore=metastore, url=warehouse_url)
    assert nothing.rows_read == 0 and nothing.batches == 0
    sink = WarehouseSink(spec, warehouse_url)
    try:
        assert {k: v[0] for k, v in state(sink).items()} == expected_state(produced + more)
        assert nothing.table_rows == len(expected_state(produced + more))
    finally:
        sink.dispose()


_SYNC_CHILD = """
import json, sys
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec
from connectors.warehouse import sync
spec = DataProductSpec.model_validate(json.loads(sys.argv[1]))
print("ready", flush=True)
sync(spec, lake=Lake(sys.argv[2]), metastore=Metastore(sys.argv[3]), url=sys.argv[4], batch_rows=25)
print("done", flush=True)
"""


def _consistent_with_offsets(spec, lake, metastore, sink) -> None:
    """The table equals the latest-per-key state of exactly the lake rows below the sink's
    offsets: rows and offsets were committed together."""
    offsets = sink.sink_offsets()
    files = metastore.live_files(spec.name)
    rows = lake.read_tables([f.path for f in files]).sort_by([("_partition", "ascending"), ("_offset", "ascending")])
    latest: dict = {}
    for r in rows.to_pylist():
        if r["_offset"] >= offsets.get(r["_partition"], 0):
            continue
        if r["_deleted"]:
            latest.pop(r["id"], None)
        else:
            latest[r["id"]] = r["amount"]
    assert {k: v[0] for k, v in state(sink).items()} == latest, f"table and offsets {offsets} disagree"


def _forget_the_sync(sink: WarehouseSink) -> None:
    with sink.engine.begin() as conn:
        conn.execute(sa.delete(sink.offsets).where(sink.offsets.c.product == sink.spec.name))
        for table in (sink.table, sink.tombstones):
            if table is not None:
                table.drop(conn)
    sink._ready = False  # the next read re-creates the tables


def test_sigkill_mid_sync_then_completion_equals_latest_per_key(kafka_bootstrap, topic, tmp_path, warehouse_url):
    spec = make_spec(topic)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    produced = produce_accounts(kafka_bootstrap, topic, 6000, keys=500, seed=5)
    land_all(spec, lake, metastore, kafka_bootstrap)
    spec_json = json.dumps(spec.model_dump(), default=lambda v: v.total_seconds() if isinstance(v, timedelta) else v.isoformat())
    args = [sys.executable, "-c", _SYNC_CHILD, spec_json, lake.url, metastore.url, warehouse_url]
    rng = random.Random(1234)
    kills = 50 if RELIABILITY_FULL else 5
    # Timed kills land anywhere (mostly mid-transaction: a batch is a transaction); crash
    # points kill inside the transaction deterministically, after rows, before the commit.
    plans = [("delay", rng.uniform(0.05, 0.6)) for _ in range(kills)]
    plans += [("crash", f"sink_rows_written:{rng.randint(2, 6)}"), ("crash", f"sink_before_commit:{rng.randint(2, 6)}"),
              ("crash", f"sink_deleted:{rng.randint(2, 6)}")]
    killed = 0
    sink = WarehouseSink(spec, warehouse_url)
    try:
        for how, what in plans:
            env = dict(os.environ, PYTHONPATH=str(REPO))
            if how == "crash":
                env["FLOWSUITE_CRASH_AT"] = what
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
            try:
                assert proc.stdout.readline().strip() == b"ready", proc.stderr.read().decode()[-2000:]
                if how == "delay":
                    time.sleep(what)  # a seeded random moment for the kill: the scenario
                    proc.kill()
                proc.wait(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if proc.returncode == -9:
                killed += 1
            else:
                assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
            _consistent_with_offsets(spec, lake, metastore, sink)
            if proc.returncode == 0:
                # The sync finished before its kill: start the next plan from an empty warehouse
                # table, or every later plan (the crash points too) would find nothing to do.
                _forget_the_sync(sink)
        assert killed >= 5, f"only {killed} of {len(plans)} syncs were killed mid-way"
        final = sync(spec, lake=lake, metastore=metastore, url=warehouse_url)
        assert final.offsets_after == {p: s.next_offset for p, s in metastore.committed_offsets(spec.name).items()}
        assert {k: v[0] for k, v in state(sink).items()} == expected_state(produced)
    finally:
        sink.dispose()
    from tests.support.reliability_table import record  # the reliability table

    record(f"warehouse sync: SIGKILL ({spec_dialect(warehouse_url)})", len(plans), len(produced), 0, 0, len(plans),
           f"{killed} killed mid-sync")


def spec_dialect(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0]


def test_a_file_compacted_away_while_reading_is_listed_again(kafka_bootstrap, topic, tmp_path, sqlite_url, monkeypatch):
    """A compaction that swaps an hour between the sync's listing and its read: the read of the
    stale listing fails for real (the file is gone), the sync lists the live files again and
    reads the compacted files (several partitions per file, found through their `ranges`)."""
    import connectors.warehouse.lake_sync as lake_sync
    from connectors.flows import compact_hour

    spec = make_spec(topic)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    produced = produce_accounts(kafka_bootstrap, topic, 500, keys=50, seed=8)
    land_all(spec, lake, metastore, kafka_bootstrap)
    real_read, failures = lake_sync.read_window, []

    def compact_then_read(spec_, lake_, files, window):
        if not failures:
            for hour in sorted({f.hour for f in files}):
                compact_hour(spec, hour, run_at(lake=lake, metastore=metastore), force=True)
            try:
                return real_read(spec_, lake_, files, window)  # the listing from before the swap
            except OSError as exc:
                failures.append(exc)
                raise
        return real_read(spec_, lake_, files, window)

    monkeypatch.setattr(lake_sync, "read_window", compact_then_read)
    result = sync(spec, lake=lake, metastore=metastore, url=sqlite_url, batch_rows=10_000)
    assert len(failures) == 1 and result.rows_read == 500
    assert {f.kind for f in metastore.live_files(spec.name)} == {"compacted"}
    sink = WarehouseSink(spec, sqlite_url)
    assert {k: v[0] for k, v in state(sink).items()} == expected_state(produced)
    sink.dispose()


def test_postgres_direct_copy_of_new_keys_and_fallback_on_existing_ones(pg_url):
    """Without tombstones, a batch of new keys is COPYed straight into the table; a batch that
    meets existing keys falls back to the guarded upsert in the same transaction. Counts,
    values and time zones are the same either way."""
    spec = make_spec(deletes=False)
    sink = WarehouseSink(spec, pg_url)
    try:
        first = sink.apply(batch(spec, [("a", 1, 0, 0, False, 7), ("b", 2, 0, 1, False, 8), ("a", 3, 0, 2, False, 9)]),
                           advance_to={0: 3}, expected={})
        assert (first.inserted, first.updated, first.skipped_stale, first.reduced) == (2, 0, 0, 1)
        assert sink.sql.try_direct  # the COPY went straight in
        # "a" exists (older: updated), "b" exists and is newer than the record (stale), "c" is new.
        mixed = sink.apply(batch(spec, [("a", 30, 0, 5, False, 1), ("b", 20, 0, 0, False, 2), ("c", 4, 1, 0, False, 3)]),
                           advance_to={0: 6, 1: 1}, expected={0: 3, 1: None})
        assert (mixed.inserted, mixed.updated, mixed.skipped_stale) == (1, 1, 1)
        assert not sink.sql.try_direct  # existing keys: the staging path
        assert state(sink) == {"a": (30, 0, 5), "b": (2, 0, 1), "c": (4, 1, 0)}
        assert sink.sink_offsets() == {0: 6, 1: 1}
        ts = {r["id"]: r["ts"] for r in sink.read_rows()}
        assert ts == {"a": T0 + timedelta(minutes=1), "b": T0 + timedelta(minutes=8), "c": T0 + timedelta(minutes=3)}
        # An all-new batch through the staging path turns the direct path back on.
        fresh = sink.apply(batch(spec, [("d", 5, 1, 1)]), advance_to={1: 2}, expected={1: 1})
        assert (fresh.inserted, fresh.updated) == (1, 0) and sink.sql.try_direct
        again = sink.apply(batch(spec, [("e", 6, 1, 2)]), advance_to={1: 3}, expected={1: 2})
        assert again.inserted == 1 and sink.row_count() == 5
        # The probe of 8 of 10 keys (first, last, evenly between) misses "c" at index 2: the
        # COPY is tried, the key index refuses it, the savepoint undoes it, the stage takes it.
        assert sink.sql.try_direct
        rows = [(f"n{i}", i, 1, 10 + i) for i in range(10)]
        rows[2] = ("c", 40, 1, 12)
        hidden = sink.apply(batch(spec, rows), advance_to={1: 20}, expected={1: 3})
        assert (hidden.inserted, hidden.updated, hidden.skipped_stale) == (9, 1, 0)
        assert not sink.sql.try_direct and sink.row_count() == 14 and state(sink)["c"] == (40, 1, 12)
    finally:
        sink.dispose()


def test_postgres_probe_of_a_few_keys_skips_a_direct_copy_that_would_fail(pg_url, monkeypatch):
    """A new sink (one per sync) facing a batch of existing keys does not try the direct COPY."""
    spec = make_spec(deletes=False)
    first = WarehouseSink(spec, pg_url)
    try:
        first.apply(batch(spec, [(f"k{i}", i, 0, i) for i in range(20)]))
    finally:
        first.dispose()
    sink = WarehouseSink(spec, pg_url)
    copies = []
    monkeypatch.setattr(PostgresDialect, "copy", lambda self, conn, table, data, _copy=PostgresDialect.copy:
                        (copies.append(table), _copy(self, conn, table, data))[1])
    try:
        again = sink.apply(batch(spec, [(f"k{i}", i * 10, 0, 100 + i) for i in range(20)]))
        assert (again.inserted, again.updated) == (0, 20)
        assert copies == ["flowsuite_stage"]  # straight to the stage, no COPY into the table
    finally:
        sink.dispose()


def test_postgres_merge_counts_and_its_fallback_when_statistics_are_off(pg_url, caplog):
    """PostgreSQL 15+ upserts with MERGE and reads inserts/updates from the transaction's table
    statistics. With track_counts off in the session (statistics that do not add up), the batch
    is still written right, and later batches use INSERT … ON CONFLICT."""
    spec = make_spec(deletes=False)
    sink = WarehouseSink(spec, pg_url)
    try:
        with sink.engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT current_setting('server_version_num')::int").scalar_one()
        if version < 150000:
            pytest.skip(f"MERGE needs PostgreSQL 15 (server {version})")
        sink.apply(batch(spec, [("a", 1, 0, 0), ("b", 2, 0, 1)]))
        mixed = sink.apply(batch(spec, [("a", 10, 0, 5), ("b", 20, 0, 0), ("c", 3, 1, 0)]))
        assert (mixed.inserted, mixed.updated, mixed.skipped_stale) == (1, 1, 1)
        assert sink.sql.use_merge is True
        sa.event.listen(sink.engine, "connect", lambda dbapi_conn, _: dbapi_conn.execute("SET track_counts = off"))
        sink.engine.dispose()  # new connections, with the statistics off
        blind = sink.apply(batch(spec, [("a", 11, 0, 6), ("d", 4, 1, 1)]))
        assert blind.inserted + blind.updated == 2 and sink.sql.use_merge is False
        assert "do not count this MERGE" in caplog.text
        after = sink.apply(batch(spec, [("a", 12, 0, 7), ("e", 5, 1, 2), ("b", 0, 0, 0)]))
        assert (after.inserted, after.updated, after.skipped_stale) == (1, 1, 1)
        assert state(sink) == {"a": (12, 0, 7), "b": (2, 0, 1), "c": (3, 1, 0), "d": (4, 1, 1), "e": (5, 1, 2)}
    finally:
        sink.dispose()


@pytest.mark.parametrize("fresh", ["pg_fresh_url", "sqlite"])
def test_sinks_of_several_products_prepare_a_fresh_warehouse_at_once(fresh, request, tmp_path):
    """Products' syncs meeting a new warehouse together all create the shared offsets table
    and their own tables; PostgreSQL would answer the CREATE TABLE race with an error."""
    from concurrent.futures import ThreadPoolExecutor

    url = request.getfixturevalue(fresh) if fresh != "sqlite" else f"sqlite:///{tmp_path / 'wh.db'}"
    specs = [make_spec() for _ in range(6)]
    sinks = [WarehouseSink(spec, url) for spec in specs]
    try:
        with ThreadPoolExecutor(len(sinks)) as pool:
            assert list(pool.map(lambda s: s.ensure_table(), sinks)) == [[]] * len(sinks)
        for spec, sink in zip(specs, sinks, strict=True):
            sink.apply(batch(spec, [("a", 1, 0, 0)]))
            assert state(sink) == {"a": (1, 0, 0)}
    finally:
        for sink in sinks:
            sink.dispose()
