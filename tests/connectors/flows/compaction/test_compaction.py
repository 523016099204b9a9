"""Compaction through real landings on the real broker: exact rows, fewer files, crash safety,
late data, markers."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

import pytest

from connectors.flows import (
    HourBlockedError,
    compact_closed_hours,
    compact_hour,
    hours_due,
    land,
    read_marker,
)
from connectors.lake import SUCCESS, Lake, hour_dir
from connectors.metastore import Metastore
from examples.demo_data import produce
from tests.support import wait_for_dead_claims
from tests.support.compaction import (
    HOURS,
    LATER,
    NOW,
    assert_exactly_once,
    clicks_spec,
    compaction_child,
    hour_rows,
    land_in_rounds,
    pairs,
    sorted_rows,
)
from tests.support.runs import run_at

FULL = os.environ.get("FLOWSUITE_RELIABILITY") == "full"


@pytest.fixture
def landed(topic, kafka_bootstrap, tmp_path):
    spec = clicks_spec(topic)
    lake = Lake(str(tmp_path / "lake"))
    metastore = Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    valid = land_in_rounds(spec, kafka_bootstrap, lake, metastore)
    yield spec, lake, metastore, valid
    metastore.dispose()


def test_compaction_keeps_every_row_and_value_and_drops_files(landed):
    spec, lake, metastore, valid = landed
    before = {h: hour_rows(lake, metastore, spec.name, h) for h in HOURS}
    files_before = {h: len(metastore.live_files(spec.name, h)) for h in HOURS}
    assert sum(t.num_rows for t in before.values()) == valid
    assert all(n >= 4 for n in files_before.values()), files_before  # several small landings

    for h in HOURS:
        result = compact_hour(spec, h, run_at(lake=lake, metastore=metastore, run_id="c1", now=LATER))
        assert result.status == "compacted", result.reason
        after = hour_rows(lake, metastore, spec.name, h)
        assert pairs(after) == pairs(before[h])  # exact multiset of (partition, offset)
        assert sorted_rows(after) == sorted_rows(before[h])  # every value
        live = metastore.live_files(spec.name, h)
        assert len(live) == 1 < files_before[h]
        assert live[0].path.endswith("part-g1-0.parquet") and live[0].kind == "compacted"
        assert live[0].ranges and live[0].min_offset is not None and live[0].max_offset is not None
        # sorted by event time then key
        t = lake.read_table(live[0].path)
        et = t.column("event_time").to_pylist()
        assert et == sorted(et)
        # replaced files are gone from the lake and from the metastore
        assert not any(lake.exists(p) for p in result.files_before)
        assert metastore.files_in_states(spec.name, ["replaced", "pending"]) == []
        marker = read_marker(lake, spec.name, h)
        assert marker["generation"] == 1 and marker["rows"] == after.num_rows
        assert [f["name"] for f in marker["files"]] == ["part-g1-0.parquet"]
        assert sum(r[1] - r[0] + 1 for runs in marker["offset_ranges"].values() for r in runs) >= after.num_rows

    # idempotent: nothing new → a no-op that says so
    again = compact_hour(spec, HOURS[0], run_at(lake=lake, metastore=metastore, run_id="c2", now=LATER))
    assert again.status == "noop" and "already compacted" in again.reason
    assert metastore.hour(spec.name, HOURS[0]).generation == 1


def test_open_hour_gets_no_marker_until_closed_and_schedule_finishes_it(landed):
    spec, lake, metastore, _ = landed
    h = HOURS[-1]
    r = compact_hour(spec, h, run_at(lake=lake, metastore=metastore, now=NOW))
    assert r.status == "compacted" and not r.marker_written and "still open" in r.marker_reason
    assert not lake.exists(f"{hour_dir(spec.name, h)}/{SUCCESS}")
    due, _ = hours_due(spec, metastore, now=LATER)
    assert {d.hour: d.reason for d in due}[h] == "marker missing"
    r2 = compact_hour(spec, h, run_at(lake=lake, metastore=metastore, now=LATER))
    assert r2.status == "noop" and r2.marker_written


def test_multi_file_output_is_globally_sorted_and_exact(landed):
    spec, lake, metastore, _ = landed
    h = HOURS[1]
    before = hour_rows(lake, metastore, spec.name, h)
    total = sum(f.bytes for f in metastore.live_files(spec.name, h))
    r = compact_hour(spec, h, run_at(lake=lake, metastore=metastore, now=LATER), target_file_bytes=max(1, total // 3))
    assert len(r.files_after) >= 3
    assert sorted_rows(hour_rows(lake, metastore, spec.name, h)) == sorted_rows(before)
    # outputs are disjoint, ordered ranges of event time
    bounds = []
    for path in r.files_after:
        et = lake.read_table(path).column("event_time").to_pylist()
        assert et == sorted(et)
        bounds.append((et[0], et[-1]))
    assert all(a[1] <= b[0] for a, b in zip(bounds, bounds[1:], strict=False))


def test_late_record_reopens_hour_and_next_compaction_includes_it(landed, kafka_bootstrap):
    spec, lake, metastore, _ = landed
    h = HOURS[0]
    compact_hour(spec, h, run_at(lake=lake, metastore=metastore, now=LATER))
    assert read_marker(lake, spec.name, h) is not None
    late = (
        b"late-1",
        b'{"event_id":"late-1","user_id":"u-1","partner_id":"p-001","ad_id":"ad-1","kind":"click",'
        b'"cost_micros":5,"event_time":"2026-01-10T10:59:59.000Z"}',
        True,
    )
    produce(kafka_bootstrap, spec.topic, [late])
    res = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=10)
    assert res.reopened_hours == [h]
    assert metastore.hour(spec.name, h).state == "reopened"
    assert read_marker(lake, spec.name, h) is None
    due, _ = hours_due(spec, metastore, now=LATER)
    assert [d for d in due if d.hour == h][0].reason == "reopened"

    r = compact_hour(spec, h, run_at(lake=lake, metastore=metastore, now=LATER))
    assert r.generation == 2 and r.marker_written
    ids = hour_rows(lake, metastore, spec.name, h).column("event_id").to_pylist()
    assert ids.count("late-1") == 1
    assert read_marker(lake, spec.name, h)["generation"] == 2
    assert [f.path.rsplit("/", 1)[-1] for f in metastore.live_files(spec.name, h)] == ["part-g2-0.parquet"]


def test_blocked_hour_is_refused_with_its_reason(landed):
    spec, lake, metastore, _ = landed
    metastore.block_hours(spec.name, [HOURS[0]], "expect_column_values_to_not_be_null failed on user_id")
    with pytest.raises(HourBlockedError, match="user_id"):
        compact_hour(spec, HOURS[0], run_at(lake=lake, metastore=metastore, now=LATER))
    results, skipped = compact_closed_hours(spec, run_at(lake=lake, metastore=metastore, now=LATER))
    assert {r.hour for r in results} == set(HOURS[1:])
    assert [s.hour for s in skipped] == [HOURS[0]] and "blocked" in skipped[0].reason
    assert all(f.kind == "landed" for f in metastore.live_files(spec.name, HOURS[0]))


# --- crash safety ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "crash_at",
    ["compact_after_register", "compact_after_write:2", "compact_before_swap", "compact_during_delete", "compact_before_marker"],
)
def test_crash_at_each_point_then_rerun_is_exactly_once(landed, crash_at, tmp_path):
    spec, lake, metastore, _ = landed
    expected = pairs(hour_rows(lake, metastore, spec.name))
    meta_url = str(metastore.engine.url)
    proc = compaction_child(spec, lake, meta_url, HOURS, crash_at)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    metastore.clock = lambda: time.time() + 1.2  # the dead child's lease (1 s) has run out, without waiting
    results, skipped = compact_closed_hours(spec, run_at(lake=lake, metastore=metastore, now=LATER))
    assert not skipped, skipped
    for h in HOURS:  # every hour ends compacted and marked, whatever the crash left behind
        compact_hour(spec, h, run_at(lake=lake, metastore=metastore, now=LATER))
        assert read_marker(lake, spec.name, h) is not None
        assert metastore.hour(spec.name, h).state == "compacted"
    assert_exactly_once(spec, lake, metastore, expected)


@pytest.mark.parametrize("kills", [50 if FULL else 3])
def test_random_sigkills_during_compaction(landed, kills):
    spec, lake, metastore, _ = landed
    expected = pairs(hour_rows(lake, metastore, spec.name))
    meta_url = str(metastore.engine.url)
    rng = random.Random(7)
    killed = 0
    for _ in range(kills * 3):
        proc = compaction_child(spec, lake, meta_url, HOURS)
        time.sleep(rng.uniform(0.3, 2.5))  # a seeded random moment for the kill: the scenario
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        wait_for_dead_claims(metastore, spec.name, 5)  # a killed child's 1 s lease runs out
        # between kills: never a file listed twice, never a record live twice or missing
        live = [f.path for f in metastore.live_files(spec.name)]
        assert len(live) == len(set(live))
        assert Counter(pairs(hour_rows(lake, metastore, spec.name))) == Counter(expected)
        if killed >= kills:
            break
    assert killed >= 1
    proc = compaction_child(spec, lake, meta_url, HOURS)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-2000:]
    assert_exactly_once(spec, lake, metastore, expected)
    from tests.support.reliability_table import record  # the reliability table

    record("compaction: SIGKILL (random)", killed, len(expected), 0, 0, killed)
