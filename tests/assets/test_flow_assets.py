"""Each product that allows flow shows its subscriptions in Dagster: an external asset, a
sensor (stopped by default) that observes state, lag and failures, and a check that fails
when an active subscription has been failing past its bound."""

from __future__ import annotations

import time

import dagster as dg

from assets.flow import CHECK_NAME, flow_definitions
from connectors.gateway.store import GatewayStore
from connectors.metastore import Metastore
from orchestration.definitions import defs
from orchestration.resources import FlowsuiteResource
from tests.support.gateway import SOURCE, clicks_flow_spec


def test_clicks_shows_its_subscriptions(flowsuite_home):
    definitions = defs()
    node = definitions.resolve_asset_graph().get(dg.AssetKey(["clicks", "subscriptions"]))
    assert node.group_name == "clicks" and node.owners == ["team:ads"]
    sensor = definitions.resolve_sensor_def("clicks_flow_subscriptions")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert not definitions.resolve_asset_graph().has(dg.AssetKey(["partners", "subscriptions"]))  # not enabled


def test_sensor_observes_and_check_fails_on_a_failing_subscription(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=2)
    spec = clicks_flow_spec(topic)
    url = f"sqlite:///{tmp_path / 'metastore.db'}"
    store = GatewayStore(Metastore(url))
    resource = FlowsuiteResource(kafka_bootstrap=kafka_bootstrap, lake_url=str(tmp_path / "lake"),
                                 metastore_url=url, warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}")
    sub, _ = store.create("p-001", "clicks", {"source": SOURCE, "sink": "https://8.8.8.8/h", "protocol": "HTTP"}, state="active")
    store.set_positions(sub.id, {0: 0, 1: 0})
    definitions = flow_definitions(spec)
    sensor = definitions.sensors[0]
    check = definitions.asset_checks[0]

    def run_check() -> dg.AssetCheckEvaluation:
        job = dg.Definitions(assets=definitions.assets, asset_checks=[check], resources={"flowsuite": resource}).resolve_implicit_global_asset_job_def()
        outcome = job.execute_in_process()
        (evaluation,) = outcome.get_asset_check_evaluations()
        return evaluation

    assert run_check().passed  # healthy: no failures yet
    with dg.build_sensor_context(resources={"flowsuite": resource}) as context:
        result = sensor(context)
    (obs,) = result.asset_events
    assert obs.metadata["subscriptions"].value == 1 and obs.metadata["failing"].value == 0
    # failing for longer than the bound
    store.set_values(sub.id, failures=7, last_outcome="HTTP 503", last_success_at=time.time() - 3600,
                     updated_at=time.time() - 3600)
    evaluation = run_check()
    assert not evaluation.passed and evaluation.check_name == CHECK_NAME
    assert "HTTP 503" in str(evaluation.metadata["problems"].value)
    with dg.build_sensor_context(resources={"flowsuite": resource}) as context:
        (obs,) = sensor(context).asset_events
    detail = obs.metadata[f"subscription {sub.id}"].value
    assert detail["failures"] == 7 and detail["state"] == "active" and detail["lag"] == 0
