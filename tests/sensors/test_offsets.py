"""The offset sensor against the real broker: skips with reasons, requests with run keys."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from connectors.flows import land
from connectors.lake import Lake
from connectors.spec import parse_spec_file
from examples.demo_data import generate_clicks, produce
from orchestration.jobs import ingest_job
from orchestration.resources import FlowsuiteResource
from sensors.offsets import build_offset_sensor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def setup(kafka_bootstrap, topic, tmp_path):
    def make(**trigger):
        base = parse_spec_file(REPO / "dataproducts" / "clicks.yaml")
        spec = base.model_copy(update={"topic": topic, "trigger": base.trigger.model_copy(update=trigger)})
        job = ingest_job(spec, [dg.AssetKey(["clicks", "landed"])])
        return spec, build_offset_sensor(spec, job)

    flowsuite = FlowsuiteResource(
        kafka_bootstrap=kafka_bootstrap,
        lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'metastore.db'}",
        warehouse_url=f"sqlite:///{tmp_path / 'warehouse.db'}",
    )
    return make, flowsuite, topic


def tick(sensor, instance, flowsuite, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"flowsuite": flowsuite})
    return sensor(ctx)


def test_sensor_skips_and_triggers(setup, kafka_bootstrap):
    make, flowsuite, topic = setup
    spec, sensor = make(min_records=500, max_latency=timedelta(hours=1))
    assert sensor.name == "clicks_offsets"
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    with dg.instance_for_test() as instance:
        empty = tick(sensor, instance, flowsuite)
        assert "no records waiting" in empty.skip_reason.skip_message

        # Event times in the past but Kafka timestamps now: the oldest record is young.
        produce(kafka_bootstrap, topic, generate_clicks(300, 1, 0.0, seed=1), partitions=2)
        few = tick(sensor, instance, flowsuite)
        assert few.skip_reason is not None
        assert "300 records waiting (< min_records 500)" in few.skip_reason.skip_message

        report = produce(kafka_bootstrap, topic, generate_clicks(300, 1, 0.0, seed=2), partitions=2)
        assert report.produced == 300
        enough = tick(sensor, instance, flowsuite)
        assert len(enough.run_requests) == 1
        request = enough.run_requests[0]
        assert request.run_key == "clicks:0:0,1:0"
        assert json.loads(request.tags["flowsuite/start_offsets"]) == {"0": 0, "1": 0}
        cursor = json.loads(enough.cursor)
        assert cursor["last_key"] == "clicks:0:0,1:0" and cursor["last_tick"]["waiting"] == 600

        # Land part of it (capped): the next key starts at the new committed offsets.
        land(spec, lake=Lake(flowsuite.lake_url), metastore=flowsuite.metastore(), bootstrap=kafka_bootstrap,
             max_records=100)
        states = flowsuite.metastore().committed_offsets("clicks")
        after = tick(sensor, instance, flowsuite, cursor=enough.cursor)
        assert after.run_requests[0].run_key == f"clicks:0:{states[0].next_offset},1:{states[1].next_offset}"


def test_sensor_requests_when_old_enough(setup, kafka_bootstrap):
    make, flowsuite, topic = setup
    _, sensor = make(min_records=1_000_000, max_latency=timedelta(seconds=0))
    produce(kafka_bootstrap, topic, generate_clicks(5, 1, 0.0, seed=5), partitions=2)
    with dg.instance_for_test() as instance:
        result = tick(sensor, instance, flowsuite)
        assert len(result.run_requests) == 1
        assert "max_latency" in result.run_requests[0].tags["flowsuite/trigger"]


def test_sensor_never_requests_while_a_run_is_in_flight(setup, kafka_bootstrap):
    make, flowsuite, topic = setup
    spec, sensor = make(min_records=1)
    produce(kafka_bootstrap, topic, generate_clicks(50, 1, 0.0, seed=6), partitions=2)

    @dg.job(name="clicks_ingest")
    def clicks_ingest():
        pass

    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(clicks_ingest)
        result = tick(sensor, instance, flowsuite)
        assert result.skip_message if hasattr(result, "skip_message") else result.skip_reason
        message = result.skip_message if hasattr(result, "skip_message") else result.skip_reason.skip_message
        assert f"a landing run is in progress: {run.run_id}" == message


def test_sensor_retries_a_failed_key(setup, kafka_bootstrap):
    make, flowsuite, topic = setup
    spec, sensor = make(min_records=1)
    produce(kafka_bootstrap, topic, generate_clicks(20, 1, 0.0, seed=8), partitions=2)

    @dg.job(name="clicks_ingest")
    def clicks_ingest():
        pass

    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, flowsuite)
        key = first.run_requests[0].run_key
        # That run failed without moving the offsets: the same key would be dropped by Dagster.
        run = instance.create_run_for_job(clicks_ingest, tags={"dagster/run_key": key})
        instance.report_run_failed(run)
        retry = tick(sensor, instance, flowsuite, cursor=first.cursor)
        assert retry.run_requests[0].run_key == f"{key}:retry1"
        assert json.loads(retry.cursor)["retries"] == {key: 1}


def test_sensor_says_when_the_topic_is_missing(tmp_path, kafka_bootstrap):
    spec = parse_spec_file(REPO / "dataproducts" / "clicks.yaml").model_copy(update={"topic": "no.such.topic.xyz"})
    sensor = build_offset_sensor(spec, ingest_job(spec, [dg.AssetKey(["clicks", "landed"])]))
    flowsuite = FlowsuiteResource(
        kafka_bootstrap=kafka_bootstrap, lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'm.db'}", warehouse_url=f"sqlite:///{tmp_path / 'w.db'}",
    )
    with dg.instance_for_test() as instance:
        result = tick(sensor, instance, flowsuite)
        assert "not found" in result.skip_message
