"""Sealed hours as an Iceberg table, through real landings on the real broker: published once
(twice run, two processes at once, SIGKILLed), equal to the metastore's live files, on local
disk and S3; late data republished with the old snapshot readable until it expires."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from connectors.flows import compact_hour, land, read_marker
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.tables import IcebergTables, publish_sealed_hours
from connectors.tables.publish import expire, publish_lag_hours
from examples.demo_data import produce
from tests.support.compaction import hour_rows, pairs
from tests.support.iceberg import (
    HOURS,
    LATER,
    assert_table_equals_metastore,
    child,
    comparable,
    parquet_on_disk,
    seal,
    seqs_in_ancestry,
)
from tests.support.reliability_table import iterations, record
from tests.support.runs import run_at
from tests.support.s3 import env_lake

LATE = (
    b"late-1",
    b'{"event_id":"late-1","user_id":"u-1","partner_id":"p-001","ad_id":"ad-1","kind":"click",'
    b'"cost_micros":5,"event_time":"2026-01-10T10:59:59.000Z"}',
    True,
)


@pytest.fixture
def sealed(topic, kafka_bootstrap, lake_url, tmp_path):
    lake = env_lake(lake_url)
    metastore = Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    spec = seal(topic, kafka_bootstrap, lake, metastore)
    tables = IcebergTables(str(metastore.engine.url), lake)
    yield spec, lake, metastore, tables
    tables.dispose()
    metastore.dispose()


def test_sealed_hours_published_once_and_equal_to_the_live_files(sealed):
    spec, lake, metastore, tables = sealed
    assert publish_lag_hours(metastore, tables, spec.name) == (3, 3)
    first = publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
    assert [(p["hour"], p["generation"], p["seq"], p["operation"]) for p in first.published] == [
        (h, 1, i + 1, "append") for i, h in enumerate(HOURS)
    ]
    again = publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
    assert again.published == [] and again.snapshot_id == first.snapshot_id and again.last_seq == 3
    assert publish_lag_hours(metastore, tables, spec.name) == (0, 0)
    assert_table_equals_metastore(spec, lake, metastore, tables)

    table = tables.load(spec.name)
    assert [s.summary.additional_properties["flowsuite.hour"] for s in table.snapshots()] == HOURS
    for s in table.snapshots():  # what each snapshot holds, as the marker says it
        props = s.summary.additional_properties
        marker = read_marker(lake, spec.name, props["flowsuite.hour"])
        assert props["flowsuite.product"] == spec.name and props["flowsuite.generation"] == "1"
        assert json.loads(props["flowsuite.offset-ranges"]) == marker["offset_ranges"]
        assert int(props["flowsuite.rows"]) == marker["rows"]
    assert table.properties["commit.retry.num-retries"] == "0"
    assert table.location() == tables.lake_uri(spec.name)
    assert [f.name for f in table.spec().fields] == ["event_hour"]
    # an earlier snapshot holds exactly the hours published up to it
    earlier = tables.scan(spec.name, snapshot_id=table.snapshots()[0].snapshot_id)
    assert sorted(pairs(earlier)) == sorted(pairs(hour_rows(lake, metastore, spec.name, HOURS[0])))
    assert tables.scan(spec.name, hours=[HOURS[1]]).num_rows == hour_rows(lake, metastore, spec.name, HOURS[1]).num_rows


def test_an_open_or_unmarked_hour_is_not_published(topic, kafka_bootstrap, tmp_path):
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    spec = seal(topic, kafka_bootstrap, lake, metastore)
    produce(kafka_bootstrap, spec.topic, [LATE])
    land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=10)  # reopens HOURS[0]
    tables = IcebergTables(str(metastore.engine.url), lake)
    r = publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
    assert [p["hour"] for p in r.published] == HOURS[1:]
    assert r.skipped == []  # never sealed at its current state: not even queued
    assert tables.scan(spec.name, hours=[HOURS[0]]).num_rows == 0


def test_two_processes_publish_at_once_and_each_hour_lands_once(sealed):
    spec, lake, metastore, tables = sealed
    url = str(metastore.engine.url)
    procs = [child(spec, lake, url) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    published = [int(out.split()[0]) for out, _ in outs]
    assert sum(published) == 3, published  # between them: each hour once
    table = tables.load(spec.name)
    assert seqs_in_ancestry(table) == [1, 2, 3] and len(table.snapshots()) == 3
    assert_table_equals_metastore(spec, lake, metastore, tables)


def test_late_data_republishes_the_hour_and_the_old_snapshot_reads_until_it_expires(sealed, kafka_bootstrap):
    spec, lake, metastore, tables = sealed
    h = HOURS[0]
    publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
    before = tables.load(spec.name).current_snapshot().snapshot_id
    old_rows = comparable(tables.scan(spec.name, hours=[h]))
    g1 = [f.path for f in metastore.live_files(spec.name, h)]

    produce(kafka_bootstrap, spec.topic, [LATE])
    assert land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=10).reopened_hours == [h]
    r = compact_hour(spec, h, run_at(lake=lake, metastore=metastore, now=LATER))
    assert r.generation == 2 and r.marker_written
    # the old generation was published: compaction defers its deletion to snapshot expiry
    assert all(lake.exists(p) for p in g1)
    pub = publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
    assert [(p["hour"], p["generation"], p["seq"], p["operation"]) for p in pub.published] == [(h, 2, 4, "overwrite")]
    assert pub.expiry.deleted_files == [] and pub.expiry.kept_deferred == len(g1)
    assert_table_equals_metastore(spec, lake, metastore, tables)
    assert tables.scan(spec.name, hours=[h]).column("event_id").to_pylist().count("late-1") == 1
    assert comparable(tables.scan(spec.name, snapshot_id=before, hours=[h])) == old_rows  # still readable
    on_disk = parquet_on_disk(lake, spec.name)
    live = {f.path for f in metastore.live_files(spec.name)}
    assert on_disk == live | set(g1)

    # retention: a day later nothing expires (3d); past it, exactly the unreferenced files go
    soon = expire(spec, lake=lake, metastore=metastore, tables=tables, now=datetime.now(UTC) + timedelta(days=1))
    assert soon.expired_snapshots == [] and soon.deleted_files == []
    gone = expire(spec, lake=lake, metastore=metastore, tables=tables, now=datetime.now(UTC) + timedelta(days=3, hours=2))
    table = tables.load(spec.name)
    assert len(gone.expired_snapshots) == 3 and [s.snapshot_id for s in table.snapshots()] == [table.current_snapshot().snapshot_id]
    assert sorted(gone.deleted_files) == sorted(g1) and gone.deleted_metadata > 0
    assert parquet_on_disk(lake, spec.name) == live
    assert_table_equals_metastore(spec, lake, metastore, tables)


@pytest.mark.parametrize("kills", [iterations(quick=3)])
def test_sigkilled_publishing_is_finished_by_the_next_attempt_never_doubled(topic, kafka_bootstrap, lake_url, tmp_path, kills):
    lake, metastore = env_lake(lake_url), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    spec = seal(topic, kafka_bootstrap, lake, metastore)
    tables = IcebergTables(str(metastore.engine.url), lake)
    url = str(metastore.engine.url)
    rng = random.Random(int(os.environ.get("FLOWSUITE_RELIABILITY_SEED", "16")))
    points = ["iceberg_before_commit", "iceberg_after_commit", "iceberg_before_commit:2", "iceberg_after_commit:2", None]
    killed = 0
    for i in range(kills):
        if i:  # a new generation of a random hour (a rebuild): the next publish overwrites it
            compact_hour(spec, rng.choice(HOURS), run_at(lake=lake, metastore=metastore, now=LATER), force=True)
        point = rng.choice(points)
        proc = child(spec, lake, url, crash_at=point)
        if point is None:  # no crash point: a kill at a random moment instead
            time.sleep(rng.uniform(0.5, 3.0))  # a seeded random moment for the kill: the scenario
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
        killed += proc.returncode == -signal.SIGKILL
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
        publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)  # the next attempt
        got = assert_table_equals_metastore(spec, lake, metastore, tables)
    assert killed >= 1
    where = "S3" if lake.is_s3 else "local"
    record(f"iceberg publish: SIGKILL ({where})", kills, got.num_rows, 0, 0, kills, note=f"{killed} killed mid-publish")
    tables.dispose()
