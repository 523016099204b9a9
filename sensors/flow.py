"""`<P>_flow_subscriptions`: records the state, lag and failures of a product's subscriptions as
an observation of `<P>/subscriptions` (stopped by default: turn it on where a gateway runs)."""

# No `from __future__ import annotations`: Dagster inspects the sensor function's signature.

import dagster as dg

from connectors.gateway.health import product_health
from connectors.gateway.store import GatewayStore
from connectors.spec import DataProductSpec
from orchestration.resources import FlowsuiteResource


def observation_metadata(health) -> dict:
    states: dict[str, int] = {}
    for h in health:
        states[h.sub.state] = states.get(h.sub.state, 0) + 1
    meta = {
        "subscriptions": len(health),
        "states": dg.MetadataValue.json(states),
        "failing": sum(1 for h in health if h.sub.state == "active" and h.sub.failures),
        "lag": sum(h.lag or 0 for h in health if h.sub.state == "active"),
    }
    for h in health:
        meta[f"subscription {h.sub.id}"] = dg.MetadataValue.json(h.metadata())
    return meta


def flow_subscriptions_sensor(spec: DataProductSpec, key: dg.AssetKey) -> dg.SensorDefinition:
    @dg.sensor(name=f"{spec.name}_flow_subscriptions", minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description=f"records the state, lag and failures of {spec.name}'s subscriptions")
    def observe(context: dg.SensorEvaluationContext, flowsuite: FlowsuiteResource):
        store = GatewayStore(flowsuite.metastore())
        health = product_health(store, spec, flowsuite.kafka_bootstrap, flowsuite.kafka())
        return dg.SensorResult(asset_events=[dg.AssetObservation(asset_key=key, metadata=observation_metadata(health))])

    return observe
