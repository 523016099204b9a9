"""Backfill by replay: an hour rebuilt from the stream holds exactly the same rows."""

from __future__ import annotations

import pytest

from connectors.flows import compact_hour, read_marker, recorded_spans, replay_hour
from connectors.lake import Lake
from connectors.metastore import Metastore
from tests.support.compaction import (
    HOURS,
    LATER,
    clicks_spec,
    hour_rows,
    land_in_rounds,
    pairs,
    sorted_rows,
)
from tests.support.runs import run_at


@pytest.fixture
def landed(topic, kafka_bootstrap, tmp_path):
    spec = clicks_spec(topic)
    lake = Lake(str(tmp_path / "lake"))
    metastore = Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    land_in_rounds(spec, kafka_bootstrap, lake, metastore, rounds=2, per_round=500)
    yield spec, lake, metastore
    metastore.dispose()


def test_replay_rebuild_equals_the_original(landed, kafka_bootstrap):
    spec, lake, metastore = landed
    h = HOURS[1]
    original = hour_rows(lake, metastore, spec.name, h)
    compact_hour(spec, h, run_at(lake=lake, metastore=metastore, now=LATER))
    spans = recorded_spans(metastore.live_files(spec.name, h))
    assert spans and all(runs for runs in spans.values())

    r = replay_hour(spec, h, run_at(lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, now=LATER))
    assert r.status == "compacted" and r.source == "kafka", r.note
    assert r.generation == 2 and "values equal" in r.note
    rebuilt = hour_rows(lake, metastore, spec.name, h)
    assert pairs(rebuilt) == pairs(original)
    assert sorted_rows(rebuilt) == sorted_rows(original)
    assert read_marker(lake, spec.name, h)["generation"] == 2
    # a never-compacted hour (landed files only) replays too
    r0 = replay_hour(spec, HOURS[0], run_at(lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, now=LATER))
    assert r0.source == "kafka" and r0.generation == 1
    assert len(metastore.live_files(spec.name, HOURS[0])) == 1


def test_replay_falls_back_to_live_files_when_the_topic_lost_the_range(landed, kafka_bootstrap, make_topic):
    spec, lake, metastore = landed
    h = HOURS[2]
    original = hour_rows(lake, metastore, spec.name, h)
    # The product's topic was recreated empty: the recorded offsets are no longer in it.
    lost = spec.model_copy(update={"topic": make_topic(partitions=2)})
    r = replay_hour(lost, h, run_at(lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, now=LATER), idle_timeout_s=2)
    assert r.status == "compacted" and r.source == "live_files"
    assert "no longer holds" in r.note
    assert sorted_rows(hour_rows(lake, metastore, spec.name, h)) == sorted_rows(original)
