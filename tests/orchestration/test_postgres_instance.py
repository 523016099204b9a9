"""The production profile: a Dagster instance stored in PostgreSQL, built from deploy/dagster.yaml.

A throwaway database on the machine's PostgreSQL server holds the instance (runs, event logs,
schedule state); a temp DAGSTER_HOME gets deploy/dagster.yaml with its `{env: …}` settings
pointed at it. A landing and a compaction run through that instance, and the runs and
materializations are then read back from PostgreSQL itself, not only through Dagster.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from sqlalchemy.engine import make_url

from assets.hourly import build_hourly_definitions
from assets.landing import build_landing_definitions
from connectors.settings import REPO_ROOT
from examples.demo_data import generate_clicks, produce
from orchestration.resources import FlowsuiteResource
from tests.support.compaction import HOURS, NOW, clicks_spec

PROFILE = Path(REPO_ROOT) / "deploy" / "dagster.yaml"


@pytest.fixture
def instance_db(pg_url: str):
    """(host, port, user, database) of a fresh database for the Dagster instance."""
    url = make_url(pg_url)
    name = f"flowsuite_dagster_{uuid.uuid4().hex[:10]}"
    admin = dict(host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.host, url.port, url.username, name
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_landing_and_compaction_through_a_postgres_instance(
    instance_db, kafka_bootstrap, topic, tmp_path, monkeypatch
):
    host, port, user, db = instance_db
    profile = yaml.safe_load(PROFILE.read_text())
    # The profile as shipped; only TLS is off, for the local server has none.
    assert profile["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    profile["storage"]["postgres"]["postgres_db"].pop("params")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(profile))
    for var, value in {
        "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": host, "DAGSTER_PG_PORT": str(port),
        "DAGSTER_PG_DB": db, "DAGSTER_PG_USER": user, "DAGSTER_PG_PASSWORD": "trust-auth-ignores-it",
        "DAGSTER_COMPUTE_LOG_DIR": str(tmp_path / "compute_logs"),
    }.items():
        monkeypatch.setenv(var, value)

    spec = clicks_spec(topic)
    produce(kafka_bootstrap, topic, generate_clicks(1200, 3, 0.02, seed=5, now=NOW), partitions=2)
    flowsuite = FlowsuiteResource(
        kafka_bootstrap=kafka_bootstrap, lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'metastore.db'}", warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}",
    )
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        landing = dg.materialize(build_landing_definitions(spec).assets, instance=instance,
                                 resources={"flowsuite": flowsuite}, tags={"flowsuite/product": spec.name})
        assert landing.success
        hour = f"{HOURS[1]}:00"
        compaction = dg.materialize(build_hourly_definitions(spec).assets, instance=instance, partition_key=hour,
                                    resources={"flowsuite": flowsuite}, tags={"flowsuite/product": spec.name})
        assert compaction.success
        (mat,) = compaction.asset_materializations_for_node("clicks__hourly")
        assert mat.metadata["files_after"].value == 1 and mat.metadata["markers_written"].value == 1

        # Through Dagster's API, from the instance...
        runs = instance.get_runs()
        assert {r.run_id for r in runs} == {landing.run_id, compaction.run_id}
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert instance.get_latest_materialization_event(dg.AssetKey(["clicks", "landed"])) is not None
        assert instance.get_materialized_partitions(dg.AssetKey(["clicks", "hourly"])) == {hour}

    # ...and in PostgreSQL itself: the runs, their tags and the materializations are stored there.
    with psycopg.connect(host=host, port=port, user=user, dbname=db) as conn:
        stored = dict(conn.execute("SELECT run_id, status FROM runs").fetchall())
        assert stored == {landing.run_id: "SUCCESS", compaction.run_id: "SUCCESS"}
        tagged = conn.execute(
            "SELECT count(*) FROM run_tags WHERE key = 'flowsuite/product' AND value = %s", (spec.name,)
        ).fetchone()[0]
        assert tagged == 2
        mats = dict(conn.execute(
            "SELECT asset_key, count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
            "GROUP BY asset_key"
        ).fetchall())
        assert mats == {'["clicks", "landed"]': 1, '["clicks", "hourly"]': 1}
        checks = conn.execute(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_CHECK_EVALUATION'"
        ).fetchone()[0]
        assert checks >= 1  # the landed asset's in-run quality checks
