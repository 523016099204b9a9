"""The broker under the pipeline: stopped and restarted mid-landing (Tansu on S3 storage, so
its log survives), and restarted on memory storage (the topic's history is gone).

- restart: a landing that loses its broker either finishes what it can (the client reconnects)
  or fails with a clear KafkaReadError; nothing it wrote becomes visible unless committed, and
  the next landing resumes from the committed offsets. At the end every record of the topic
  is in the lake or the quarantine exactly once.
- history lost: the committed offsets are now beyond the end of the recreated topic. A landing
  raises HistoryLostError (what happened, where, what to do) and writes nothing; the offset
  sensor's tick fails with the same error instead of reporting "no records waiting".
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import dagster as dg
import pytest

from connectors.flows import land
from connectors.kafka import HistoryLostError, KafkaReadError, ensure_topic
from connectors.lake import Lake
from connectors.metastore import Metastore
from examples.demo_data import generate_clicks, produce
from orchestration.jobs import ingest_job
from orchestration.resources import FlowsuiteResource
from orchestration.services.broker import free_port, start_broker, stop_broker
from sensors.offsets import build_offset_sensor
from tests.support import wait_for_dead_claims
from tests.support.reliability import audit_lake, clicks
from tests.support.reliability_table import SEED, iterations, record
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY

# Small fetches: many round trips, so a stop lands in the middle of a read.
SMALL_FETCHES = {
    "fetch.max.bytes": 16_384,
    "message.max.bytes": 4_096,
    "max.partition.fetch.bytes": 8_192,
    "queued.max.messages.kbytes": 64,
}


def _broker_env(s3_server) -> dict[str, str]:
    return {
        "AWS_ENDPOINT": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ALLOW_HTTP": "true",
    }


def _drain(spec, lake, metastore, bootstrap, attempts: int = 10) -> None:
    for _ in range(attempts):
        result = land(
            spec, lake=lake, metastore=metastore, bootstrap=bootstrap, lease_s=3, idle_timeout_s=5
        )
        if result.consumed == 0 and not result.skipped:
            return
        if result.skipped:
            wait_for_dead_claims(metastore, spec.name, 10)  # the failed run's 3 s lease runs out
    pytest.fail("the topic did not drain after the broker came back")


def test_broker_stopped_and_restarted_during_landing(s3_server, tmp_path):
    rng = random.Random(SEED + 5)
    bucket = f"tansu-{uuid.uuid4().hex[:8]}"
    s3_server.boto3().create_bucket(Bucket=bucket)
    home, port = tmp_path / "broker", free_port()
    storage, env = f"s3://{bucket}/", _broker_env(s3_server)
    start_broker(home, port=port, storage=storage, env=env)
    bootstrap = f"127.0.0.1:{port}"
    try:
        topic = f"restart.{uuid.uuid4().hex[:8]}"
        ensure_topic(bootstrap, topic, 2)
        spec = clicks(topic)
        lake = Lake(str(tmp_path / "lake"))
        metastore = Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
        valid_by_key: dict[bytes, bool] = {}
        restarts = mid_read = 0
        outcomes: dict[str, int] = {}
        for _ in range(iterations(quick=1)):
            generated = list(
                generate_clicks(1500, hours=3, invalid_rate=0.03, seed=rng.randrange(10**9))
            )
            produce(bootstrap, topic, iter(generated), partitions=2)
            valid_by_key.update((k, ok) for k, _, ok in generated)
            started, outcome = threading.Event(), {}

            def landing(started=started, outcome=outcome) -> None:
                try:
                    r = land(
                        spec,
                        lake=lake,
                        metastore=metastore,
                        bootstrap=bootstrap,
                        lease_s=3,
                        batch_size=50,
                        idle_timeout_s=3,
                        kafka_config=SMALL_FETCHES,
                        progress=lambda n: started.set(),
                    )
                    outcome["result"] = r
                except BaseException as exc:  # noqa: BLE001 - the test inspects it
                    outcome["error"] = exc
                finally:
                    started.set()

            t = threading.Thread(target=landing, daemon=True)
            t.start()
            started.wait(timeout=60)
            time.sleep(rng.uniform(0.0, 0.3))  # a seeded random moment of the read for the stop
            mid_read += t.is_alive()
            stop_broker(home)
            time.sleep(rng.uniform(0.5, 2.0))  # how long the broker stays down: the scenario
            start_broker(home, port=port, storage=storage, env=env)
            restarts += 1
            t.join(timeout=120)
            assert not t.is_alive(), "a landing hung after its broker restarted"
            if "error" in outcome:
                err = outcome["error"]
                assert isinstance(err, KafkaReadError), (
                    f"unclear failure: {type(err).__name__}: {err}"
                )
                assert topic in str(err), str(err)  # says which topic
                outcomes[type(err).__name__] = outcomes.get(type(err).__name__, 0) + 1
            else:
                outcomes["finished"] = outcomes.get("finished", 0) + 1
            assert metastore.files_in_states(spec.name, ["pending"]) == [] or "error" not in outcome
            _drain(spec, lake, metastore, bootstrap)  # the next run resumes
            a = audit_lake(tmp_path / "lake", spec.name, bootstrap, topic, 2, valid_by_key)
            assert a.exact, f"after a restart: {a}"
        assert metastore.claims_of(spec.name) == []
        metastore.dispose()
        note = (
            ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
            + f"; {mid_read} stopped mid-read"
        )
        record(
            "broker stop/start mid-landing (Tansu on S3)",
            restarts,
            a.records,
            a.lost,
            a.duplicated,
            restarts,
            note,
        )
    finally:
        stop_broker(home)


@pytest.fixture
def flowsuite(tmp_path):
    def make(bootstrap: str) -> FlowsuiteResource:
        return FlowsuiteResource(
            kafka_bootstrap=bootstrap,
            lake_url=str(tmp_path / "lake"),
            metastore_url=f"sqlite:///{tmp_path / 'meta.db'}",
            warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}",
        )

    return make


def test_history_lost_is_detected_and_reported_never_skipped(tmp_path, flowsuite):
    home, port = tmp_path / "membroker", free_port()
    start_broker(home, port=port)  # memory storage: a restart loses every topic
    bootstrap = f"127.0.0.1:{port}"
    rng = random.Random(SEED + 7)
    detected = 0
    try:
        wanted = iterations(quick=1)
        for i in range(wanted):
            topic = f"lost.{i}.{uuid.uuid4().hex[:6]}"
            ensure_topic(bootstrap, topic, 2)
            spec = clicks(topic, name=f"lost_{i}")  # its own committed offsets
            resource = flowsuite(bootstrap)
            lake, metastore = resource.lake(), resource.metastore()
            produce(
                bootstrap,
                topic,
                generate_clicks(400, 2, 0.0, seed=rng.randrange(10**9)),
                partitions=2,
            )
            first = land(
                spec, lake=lake, metastore=metastore, bootstrap=bootstrap, idle_timeout_s=5
            )
            assert first.consumed == 400
            committed = {
                p: s.next_offset for p, s in metastore.committed_offsets(spec.name).items()
            }

            stop_broker(home)
            start_broker(home, port=port)
            ensure_topic(bootstrap, topic, 2)  # recreated, empty; then a little new data
            produce(
                bootstrap, topic, generate_clicks(rng.randint(0, 50), 1, 0.0, seed=i), partitions=2
            )

            files_before = {f.path for f in metastore.live_files(spec.name)}
            with pytest.raises(HistoryLostError) as info:
                land(spec, lake=lake, metastore=metastore, bootstrap=bootstrap, idle_timeout_s=3)
            message = str(info.value)
            assert (
                "beyond the end" in message and topic in message and "reset the committed offset" in message
            ), message
            assert {
                f.path for f in metastore.live_files(spec.name)
            } == files_before  # nothing written
            assert {
                p: s.next_offset for p, s in metastore.committed_offsets(spec.name).items()
            } == committed

            # The sensor must raise the alarm too, never answer "no records waiting".
            job = ingest_job(spec, [dg.AssetKey([spec.name, "landed"])])
            sensor = build_offset_sensor(spec, job)
            with dg.instance_for_test() as instance:
                ctx = dg.build_sensor_context(instance=instance, resources={"flowsuite": resource})
                with pytest.raises(HistoryLostError, match="beyond the end"):
                    sensor(ctx)
            detected += 1
            metastore.dispose()
        record(
            "topic history lost (memory broker restarted)",
            wanted,
            400 * wanted,
            0,
            0,
            detected,
            "HistoryLostError from landing and sensor; nothing written",
        )
    finally:
        stop_broker(home)
