"""Parallel landing: one Dagster step per Kafka partition, run at once by the multiprocess
executor, lands exactly the records one step lands — checked with an independent reader.

The multiprocess executor needs a persistent instance and a reconstructable job: the job is
built by `tests/workers/parallel_landing_job.py` from environment variables the steps'
processes inherit.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pyarrow as pa

from assets.landing import LandingConfig, build_landing_definitions, plan_landing_steps
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec, parse_spec_file
from examples.demo_data import generate_clicks, produce
from orchestration.resources import FlowsuiteResource
from tests.support import positions, read_hive, read_topic
from tests.workers.parallel_landing_job import ENV, parallel_landing_job

REPO = Path(__file__).resolve().parents[2]


def _spec(topic: str) -> DataProductSpec:
    return parse_spec_file(REPO / "dataproducts" / "clicks.yaml").model_copy(update={"topic": topic})


def _resource(bootstrap: str, lake: str, metastore_url: str, tmp: str) -> FlowsuiteResource:
    return FlowsuiteResource(kafka_bootstrap=bootstrap, lake_url=lake, metastore_url=metastore_url,
                             warehouse_url=f"sqlite:///{tmp}/warehouse.db")


def _sorted_rows(table: pa.Table) -> list[dict]:
    cols = [c for c in table.column_names if c not in ("dt", "hour")]
    return sorted(table.select(cols).to_pylist(), key=lambda r: (r["_partition"], r["_offset"]))


def test_plan_one_step_per_partition_by_default():
    spec = _spec("t")
    cap = spec.trigger.max_records_per_run
    steps = plan_landing_steps(spec, LandingConfig(), [0, 1, 2])
    assert [s.partitions for s in steps] == [[0], [1], [2]]
    assert all(s.max_records == -(-cap // 3) for s in steps)  # the run's cap, shared evenly
    assert [s.partitions for s in plan_landing_steps(spec, LandingConfig(parallel=False), [0, 1])] == [None]
    assert [s.partitions for s in plan_landing_steps(spec, LandingConfig(), [0])] == [None]
    assert [s.partitions for s in plan_landing_steps(spec, LandingConfig(partitions=[1]), [0, 1])] == [[1]]
    assert plan_landing_steps(spec, LandingConfig(max_records=11), [0, 1]) == [([0], 6), ([1], 6)]


def test_parallel_steps_land_the_same_records_as_one_step(kafka_bootstrap, make_topic, tmp_path, monkeypatch):
    topic = make_topic(partitions=2)
    report = produce(kafka_bootstrap, topic, generate_clicks(3000, 2, 0.03, seed=11), partitions=2)
    assert all(n > 0 for n in report.per_partition.values())
    spec = _spec(topic)

    # Parallel: two `clicks__landed_partition` steps in two processes.
    par_lake, par_meta = tmp_path / "par" / "lake", f"sqlite:///{tmp_path / 'par' / 'metastore.db'}"
    par_lake.mkdir(parents=True)
    Metastore(par_meta).dispose()  # tables created once, before the steps race for them
    monkeypatch.setenv(ENV, f"{topic} {kafka_bootstrap} {par_lake} {par_meta}")
    with dg.instance_for_test() as instance:  # persistent (a temp DAGSTER_HOME): multiprocess needs it
        result = dg.execute_job(dg.reconstructable(parallel_landing_job), instance=instance)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        steps = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS]
        landing_steps = {e.step_key: e.pid for e in steps if "clicks__landed_partition" in e.step_key}
        assert sorted(landing_steps) == ["clicks__landed.clicks__landed_partition[p0]",
                                         "clicks__landed.clicks__landed_partition[p1]"], landing_steps
        assert len(set(landing_steps.values()) | {os.getpid()}) == 3  # each step in its own process
        (mat,) = result.asset_materializations_for_node("clicks__landed")
        md = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        assert md["landing_steps"] == 2 and md["records_consumed"] == 3000
        assert {p: r["end"] for p, r in md["offset_ranges"].items()} == {str(p): n for p, n in report.per_partition.items()}
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} >= {"records_accounted"}
        assert all(c.passed for c in checks if c.check_name == "records_accounted")

    # One step: the same topic, a fresh lake and metastore, parallel off.
    one_lake = tmp_path / "one" / "lake"
    flowsuite = _resource(kafka_bootstrap, str(one_lake), f"sqlite:///{tmp_path / 'one' / 'metastore.db'}", str(tmp_path))
    one_lake.mkdir(parents=True)
    single = dg.materialize(build_landing_definitions(spec).assets, resources={"flowsuite": flowsuite},
                            run_config={"ops": {"clicks__landed": {"config": {"parallel": False}}}})
    assert single.success
    assert [e.step_key for e in single.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS
            and "partition" in e.step_key] == ["clicks__landed.clicks__landed_partition[all]"]

    # Independent reader: both lakes hold the same rows, each valid record of the topic once.
    par, one = read_hive(par_lake / "clicks"), read_hive(one_lake / "clicks")
    assert par.num_rows == one.num_rows > 0
    assert positions(par) == positions(one)
    assert max(positions(par).values()) == 1
    assert _sorted_rows(par) == _sorted_rows(one)
    topic_positions = set(read_topic(kafka_bootstrap, topic, 2))
    quarantined = read_hive(par_lake / "_quarantine" / "clicks")
    assert set(positions(par)) | set(positions(quarantined)) == topic_positions
    committed = Metastore(par_meta).committed_offsets("clicks")
    assert {p: s.next_offset for p, s in committed.items()} == report.per_partition
