"""Double and triple triggers of the same product: two or three landing processes started at
once on the same committed offsets, and the offset sensor evaluated concurrently.

Claims make the extra runs write nothing ("claim held by run ..."); whatever the interleaving,
every record of the topic ends in exactly one live file. Concurrent sensor ticks on the same
offsets request the same deterministic run key, which Dagster runs once.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from connectors.flows import land
from connectors.lake import Lake
from connectors.metastore import Metastore
from examples.demo_data import generate_clicks, produce
from orchestration.jobs import ingest_job
from orchestration.resources import FlowsuiteResource
from sensors.offsets import build_offset_sensor
from tests.support.reliability import audit_lake, clicks, start_land_worker
from tests.support.reliability_table import SEED, iterations, record


def test_double_and_triple_landing_processes(make_topic, kafka_bootstrap, tmp_path):
    rng = random.Random(SEED + 17)
    topic = make_topic(partitions=2)
    spec = clicks(topic)
    lake_url, meta_url = str(tmp_path / "lake"), f"sqlite:///{tmp_path / 'meta.db'}"
    valid_by_key: dict[bytes, bool] = {}
    wanted = iterations(quick=2)
    skipped_runs = 0
    for i in range(wanted):
        generated = list(
            generate_clicks(
                rng.randint(500, 2000), hours=3, invalid_rate=0.03, seed=rng.randrange(10**9)
            )
        )
        produce(kafka_bootstrap, topic, iter(generated), partitions=2)
        valid_by_key.update((k, ok) for k, _, ok in generated)
        procs = [
            start_land_worker(
                spec, lake_url, meta_url, kafka_bootstrap, run_id=f"trigger-{i}-{n}", lease=5.0
            )
            for n in range(2 + i % 2)
        ]  # alternately a double and a triple trigger
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-2000:]
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        skipped_runs += sum(1 for r in results if r["skipped"])
        # Whatever the interleaving, a drain lands what the skipped runs left.
        for _ in range(5):
            if (
                land(
                    spec,
                    lake=Lake(lake_url),
                    metastore=Metastore(meta_url),
                    bootstrap=kafka_bootstrap,
                    idle_timeout_s=5,
                ).consumed
                == 0
            ):
                break
        a = audit_lake(tmp_path / "lake", spec.name, kafka_bootstrap, topic, 2, valid_by_key)
        assert a.exact, f"trigger {i}: {a}"
    assert skipped_runs >= 1, "no run ever met another's claim: the triggers did not overlap"
    record(
        "double/triple landing triggers (processes)",
        wanted,
        a.records,
        a.lost,
        a.duplicated,
        wanted,
        f"{skipped_runs} run(s) found a live claim and wrote nothing",
    )


def test_concurrent_sensor_ticks_request_one_run(topic, kafka_bootstrap, tmp_path):
    rng = random.Random(SEED + 19)
    spec = clicks(topic, trigger=clicks("x").trigger.model_copy(update={"min_records": 1}))
    job = ingest_job(spec, [dg.AssetKey([spec.name, "landed"])])
    sensor = build_offset_sensor(spec, job)
    flowsuite = FlowsuiteResource(
        kafka_bootstrap=kafka_bootstrap,
        lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'meta.db'}",
        warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}",
    )
    wanted = iterations(quick=2)
    total = 0
    with dg.instance_for_test() as instance:
        for _ in range(wanted):
            n = rng.randint(200, 800)
            produce(
                kafka_bootstrap,
                topic,
                generate_clicks(n, 2, 0.0, seed=rng.randrange(10**9)),
                partitions=2,
            )
            total += n

            def tick(_):
                return sensor(
                    dg.build_sensor_context(instance=instance, resources={"flowsuite": flowsuite})
                )

            with ThreadPoolExecutor(3) as pool:
                ticks = list(pool.map(tick, range(3)))
            keys = {r.run_key for t in ticks for r in t.run_requests}
            assert len(keys) == 1 and all(len(t.run_requests) == 1 for t in ticks), keys
            # The requested run, started by three triggers at once: one lands, the others skip.
            key = keys.pop()
            with ThreadPoolExecutor(3) as pool:
                runs = list(
                    pool.map(
                        lambda n, key=key: land(
                            spec,
                            lake=flowsuite.lake(),
                            metastore=flowsuite.metastore(),
                            bootstrap=kafka_bootstrap,
                            run_id=f"{key}#{n}",
                            idle_timeout_s=5,
                        ),
                        range(3),
                    )
                )
            assert sum(r.consumed for r in runs) >= n  # every land has returned: nothing left to wait for
            after = sensor(
                dg.build_sensor_context(instance=instance, resources={"flowsuite": flowsuite})
            )
            assert not after.run_requests, "records left waiting after the run"
    a = audit_lake(tmp_path / "lake", spec.name, kafka_bootstrap, topic, 2)
    assert a.exact and a.records == total, a
    record(
        "concurrent sensor ticks + triple run",
        wanted,
        a.records,
        a.lost,
        a.duplicated,
        wanted,
        "one run key per offset range",
    )
