"""The provider against real Apache Airflow 3: `airflow dags test` on the example DAGs.

Airflow runs from `.venv-airflow` (make airflow-env) in subprocesses; the data is landed by
the real broker and compacted by the engine in this process, the way Dagster would, and the
DAGs see it through the metastore only. One migrated Airflow database per session, copied
for each test (a migration costs ~20 s; a copy nothing).
"""

from __future__ import annotations

import csv
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.flows import compact_hour, land
from connectors.lake import Lake, hour_key
from connectors.metastore import Metastore
from connectors.spec import parse_spec_file
from examples.demo_data import generate_clicks, produce
from tests.support import airflow as af
from tests.support.runs import run_at

ROOT = Path(__file__).resolve().parents[2]
DAG_TEST_TIMEOUT_S = 240  # an `airflow dags test` takes ~30-60 s on 2 busy cores


@pytest.fixture
def flowsuite_env(tmp_path: Path, kafka_bootstrap: str) -> dict[str, str]:
    home = tmp_path / "flowsuite"
    return {
        "FLOWSUITE_HOME": str(home),
        "FLOWSUITE_METASTORE_URL": f"sqlite:///{home / 'metastore.db'}",
        "FLOWSUITE_LAKE_URL": str(home / "lake"),
        "FLOWSUITE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLOWSUITE_REPORTS_DIR": str(tmp_path / "reports"),
        "FLOWSUITE_AIRFLOW_POKE_INTERVAL": "1",
    }


@pytest.fixture
def airflow_env(airflow_template: Path, tmp_path: Path, flowsuite_env: dict[str, str]) -> dict[str, str]:
    """Airflow finds the metastore and the lake through a `flowsuite` connection, not the
    environment, whose FLOWSUITE_HOME points elsewhere: were the connection ignored, the
    sensor would wait on an empty metastore until the test's timeout."""
    conn = {"conn_type": "flowsuite", "extra": {"metastore_url": flowsuite_env["FLOWSUITE_METASTORE_URL"],
                                                "lake_url": flowsuite_env["FLOWSUITE_LAKE_URL"]}}
    env = {k: v for k, v in flowsuite_env.items() if k not in ("FLOWSUITE_METASTORE_URL", "FLOWSUITE_LAKE_URL")}
    env |= {"FLOWSUITE_HOME": str(tmp_path / "not-this-home"), "AIRFLOW_CONN_FLOWSUITE_DEFAULT": json.dumps(conn)}
    return af.airflow_env(af.fresh_home(airflow_template, tmp_path / "airflow"), env)


def _clicks(topic: str):
    return parse_spec_file(ROOT / "dataproducts" / "clicks.yaml").model_copy(update={"topic": topic})


def _land_hour(env: dict[str, str], bootstrap: str, topic: str, hour: datetime, n: int, seed: int) -> None:
    """Produce n clicks whose event times all fall in `hour`, and land them."""
    produce(bootstrap, topic, generate_clicks(n, hours=1, invalid_rate=0.0, seed=seed,
                                              now=hour + timedelta(minutes=59, seconds=59)), partitions=2)
    result = land(_clicks(topic), lake=Lake(env["FLOWSUITE_LAKE_URL"]),
                  metastore=Metastore(env["FLOWSUITE_METASTORE_URL"]), bootstrap=bootstrap, idle_timeout_s=5)
    assert result.landed >= n


def _compact(env: dict[str, str], topic: str, hour: str):
    r = compact_hour(_clicks(topic), hour, run_at(lake=Lake(env["FLOWSUITE_LAKE_URL"]), metastore=Metastore(env["FLOWSUITE_METASTORE_URL"])))
    assert r.marker_written, r.summary()
    return r


def _past_hour(days: int) -> datetime:
    """A whole, closed hour `days` ago (each test its own, so their runs never meet)."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(days=days, hours=3)


def _report(env: dict[str, str], hour: str) -> dict[str, int]:
    """The rows of `hour` in the day's report: total events per partner."""
    path = Path(env["FLOWSUITE_REPORTS_DIR"]) / "clicks_daily" / f"{hour[:10]}.csv"
    with open(path, newline="") as f:
        return {r["partner_id"]: int(r["impressions"]) + int(r["clicks"]) for r in csv.DictReader(f) if r["hour"] == hour}


def test_sensor_defers_resumes_when_sealed_and_waits_again_for_a_reopened_hour(
        airflow_env, flowsuite_env, kafka_bootstrap, make_topic, tmp_path):
    topic = make_topic(partitions=2)
    start = _past_hour(1)
    hour = hour_key(start)
    logical = (start + timedelta(hours=1)).isoformat()  # the @hourly run covering `hour`
    _land_hour(flowsuite_env, kafka_bootstrap, topic, start, 3000, seed=1)

    # Landed, not compacted: the sensor defers and its trigger waits.
    run = af.dags_test(airflow_env, "flowsuite_clicks_hourly", logical, tmp_path / "run1.log")
    try:
        run.wait_for("running trigger in line", DAG_TEST_TIMEOUT_S)
        run.wait_for(f"waiting: clicks {hour} is open, not compacted", 60)
        assert "Pausing task as DEFERRED" in run.output()
        assert run.proc.poll() is None
        first = _compact(flowsuite_env, topic, hour)
        assert run.wait(DAG_TEST_TIMEOUT_S) == 0, run.output()[-4000:]
    finally:
        run.stop()
    out = run.output()
    assert "DagRun Finished" in out and "state=success" in out.split("DagRun Finished")[-1][:2000], out[-3000:]
    assert f"{hour}: {first.rows} rows of generation {first.generation}" in out
    assert sum(_report(flowsuite_env, hour).values()) == first.rows == 3000

    # A late record reopens the hour: the marker is gone, the sensor waits for the next generation.
    _land_hour(flowsuite_env, kafka_bootstrap, topic, start, 7, seed=2)
    assert Metastore(flowsuite_env["FLOWSUITE_METASTORE_URL"]).hour("clicks", hour).state == "reopened"
    run = af.dags_test(airflow_env, "flowsuite_clicks_hourly", logical, tmp_path / "run2.log")
    try:
        run.wait_for(f"waiting: clicks {hour} is reopened, not compacted (generation {first.generation})",
                     DAG_TEST_TIMEOUT_S)
        second = _compact(flowsuite_env, topic, hour)
        assert run.wait(DAG_TEST_TIMEOUT_S) == 0, run.output()[-4000:]
    finally:
        run.stop()
    assert second.generation == first.generation + 1
    assert f"{hour}: 3007 rows of generation {second.generation}" in run.output()
    assert sum(_report(flowsuite_env, hour).values()) == 3007  # the hour's rows replaced, not added


def test_blocked_hour_fails_the_sensor_with_the_reason(airflow_env, flowsuite_env, kafka_bootstrap, make_topic,
                                                       tmp_path):
    topic = make_topic(partitions=2)
    start = _past_hour(2)
    hour = hour_key(start)
    _land_hour(flowsuite_env, kafka_bootstrap, topic, start, 500, seed=3)
    reason = f"expect_column_values_to_match_regex failed on partner_id ({uuid.uuid4().hex[:8]})"
    Metastore(flowsuite_env["FLOWSUITE_METASTORE_URL"]).block_hours("clicks", [hour], reason)

    run = af.dags_test(airflow_env, "flowsuite_clicks_hourly", (start + timedelta(hours=1)).isoformat(),
                       tmp_path / "run.log")
    try:
        run.wait(DAG_TEST_TIMEOUT_S)
    finally:
        run.stop()
    out = run.output()
    assert f"clicks {hour} is blocked by a failing quality gate: {reason}" in out, out[-4000:]
    assert "AirflowFailException" in out
    assert "running trigger in line" not in out  # failed at once, not after a wait
    assert "DagRun failed" in out or "state=failed" in out
    assert not (Path(flowsuite_env["FLOWSUITE_REPORTS_DIR"]) / "clicks_daily").exists()
    assert not (tmp_path / "not-this-home" / "metastore.db").exists()  # the connection was used
