"""Dagster freshness policies derived from the spec, and the checks that judge what a policy
cannot: `hours_sealed` (per hour, from `_SUCCESS`) and `product_health` (one status)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from connectors.flows import compact_hour, land
from connectors.lake import Lake
from connectors.metastore import Metastore
from examples.demo_data import generate_clicks, produce
from orchestration.resources import FlowsuiteResource
from quality.freshness import (
    hourly_deadline_minute,
    hourly_freshness_policy,
    hours_sealed_status,
    landed_freshness_policy,
    product_health,
    unsealed_hours,
)
from tests.support.compaction import HOURS, LATER, NOW, clicks_spec, land_in_rounds
from tests.support.runs import run_at


def _clicks(**update):
    spec = clicks_spec("clicks")
    parts = {k: getattr(spec, k).model_copy(update=v) for k, v in update.items()}
    return spec.model_copy(update=parts)


def test_landed_warns_at_max_latency_and_fails_at_max_age():
    policy = landed_freshness_policy(_clicks())  # clicks.yaml: max_latency 2m, max_age 2h
    assert isinstance(policy, dg.FreshnessPolicy)
    assert policy.warn_window.to_timedelta() == timedelta(minutes=2)
    assert policy.fail_window.to_timedelta() == timedelta(hours=2)


def test_landed_without_max_age_fails_after_three_latencies():
    spec = _clicks(quality={"freshness": None}, trigger={"max_latency": timedelta(minutes=5)})
    policy = landed_freshness_policy(spec)
    assert policy.fail_window.to_timedelta() == timedelta(minutes=15)
    assert policy.warn_window.to_timedelta() == timedelta(minutes=5)


def test_hourly_is_one_compaction_per_hour_by_the_lateness_deadline():
    policy = hourly_freshness_policy(_clicks())  # allowed_lateness 10m: :05 tick + 10m + 5m
    assert policy.deadline_cron == "20 * * * *"
    assert policy.lower_bound_delta == timedelta(hours=1)
    late = _clicks(partitioning={"allowed_lateness": timedelta(minutes=55)})
    assert hourly_deadline_minute(late) == 59  # never past the hour


def test_definitions_carry_the_policies():
    from orchestration.definitions import defs

    specs = {s.key: s for s in defs().resolve_all_asset_specs()}
    landed = specs[dg.AssetKey(["clicks", "landed"])].freshness_policy
    hourly = specs[dg.AssetKey(["clicks", "hourly"])].freshness_policy
    assert landed is not None and landed.fail_window.to_timedelta() == timedelta(hours=2)
    assert hourly is not None and hourly.deadline_cron == "20 * * * *"


def test_hours_sealed_names_the_hours_without_success(kafka_bootstrap, topic, tmp_path: Path):
    spec = clicks_spec(topic)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'm.db'}")
    land_in_rounds(spec, kafka_bootstrap, lake, metastore, rounds=1, per_round=300)
    landed = {h.hour for h in metastore.hours(spec.name) if h.landed_rows}
    assert landed <= set(HOURS) and landed
    # At NOW (12:30) only 10:00-11:00 is past its end + lateness + a compaction period (12:15).
    assert set(unsealed_hours(spec, metastore, lake, now=NOW)) == landed & {HOURS[0]}
    late = unsealed_hours(spec, metastore, lake, now=LATER)
    assert set(late) == landed
    first = sorted(landed)[0]
    compact_hour(spec, first, run_at(lake=lake, metastore=metastore, run_id="c1", now=LATER))
    status = hours_sealed_status(spec, metastore, lake, now=LATER)
    assert not status.passed
    assert first not in status.metadata["unsealed_hours"]
    assert set(status.metadata["unsealed_hours"]) == landed - {first}
    for hour in landed - {first}:
        compact_hour(spec, hour, run_at(lake=lake, metastore=metastore, run_id=f"c-{hour}", now=LATER))
    assert hours_sealed_status(spec, metastore, lake, now=LATER).passed
    # A late record reopens its hour: the marker goes, and the hour is unsealed again.
    report = produce(kafka_bootstrap, topic, generate_clicks(20, 1, 0.0, seed=9, now=NOW), partitions=2)
    assert report.produced == 20
    land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, run_id="late", idle_timeout_s=10)
    reopened = unsealed_hours(spec, metastore, lake, now=LATER + timedelta(hours=3))
    assert reopened and all("reopened" in why for why in reopened.values()), reopened


@pytest.mark.parametrize("blocked", [False, True])
def test_product_health_is_one_status_worst_first(kafka_bootstrap, topic, tmp_path: Path, blocked: bool):
    spec = clicks_spec(topic).model_copy(update={"flow": clicks_spec(topic).flow.model_copy(update={"enabled": False})})
    flowsuite = FlowsuiteResource(
        kafka_bootstrap=kafka_bootstrap, lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'm.db'}", warehouse_url=f"sqlite:///{tmp_path / 'w.db'}",
    )
    lake, metastore = flowsuite.lake(), flowsuite.metastore()
    assert product_health(spec, flowsuite).status == "late"  # never landed
    land_in_rounds(spec, kafka_bootstrap, lake, metastore, rounds=1, per_round=300)
    now = datetime.now(UTC)
    # Just landed and the demo hours are not yet due (judged at NOW + the landing's age): fresh.
    health = product_health(spec, flowsuite, now=now)
    assert health.status in ("fresh", "late")
    if health.status == "late":  # the demo hours (2026-01-10) are long closed and not compacted
        assert all(r.startswith("hour ") for r in health.reasons["late"]), health.reasons
    for hour in {h.hour for h in metastore.hours(spec.name)}:
        compact_hour(spec, hour, run_at(lake=lake, metastore=metastore, run_id=f"c-{hour}", now=LATER))
    assert product_health(spec, flowsuite, now=now).status == "fresh"
    if blocked:
        metastore.block_hours(spec.name, [HOURS[0]], "test: a blocking check failed")
        health = product_health(spec, flowsuite, now=now)
        assert health.status == "blocked"
        assert "test: a blocking check failed" in health.reasons["blocked"][0]
