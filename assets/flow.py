"""Each product that allows flow shows its subscriptions in Dagster: `<P>/subscriptions`.

An external asset (the gateway, not Dagster, delivers) whose observations carry every
subscription's state, lag and failures as metadata, recorded by the sensor
`<P>_flow_subscriptions` (stopped by default: turn it on where a gateway runs), and the check
`flow_subscriptions_healthy`, which fails when an active subscription has been failing for
longer than FAILING_AFTER_S or trails its partitions by more than MAX_LAG records.
"""

# No `from __future__ import annotations`: Dagster inspects the decorated functions' signatures.

import dagster as dg

from connectors.gateway.health import FAILING_AFTER_S, MAX_LAG, product_health
from connectors.gateway.store import GatewayStore
from connectors.spec import DataProductSpec
from orchestration.keys import landed_key, subscriptions_key
from orchestration.resources import FlowsuiteResource
from sensors.flow import flow_subscriptions_sensor, observation_metadata

CHECK_NAME = "flow_subscriptions_healthy"



def flow_definitions(spec: DataProductSpec) -> dg.Definitions:
    if not spec.flow.enabled:
        return dg.Definitions()
    key = subscriptions_key(spec)
    asset = dg.AssetSpec(
        key, group_name=spec.name, owners=[spec.owner], kinds={"http", "cloudevents"},
        description=(f"Subscriptions of other organisations to {spec.name}, delivered as signed CloudEvents "
                     "by the flow gateway (docs/flow.md): state, lag and failures in the metadata."),
        deps=[landed_key(spec)],
    )

    @dg.asset_check(asset=key, name=CHECK_NAME, description="no active subscription failing or lagging past its bound")
    def healthy(flowsuite: FlowsuiteResource) -> dg.AssetCheckResult:
        store = GatewayStore(flowsuite.metastore())
        health = product_health(store, spec, flowsuite.kafka_bootstrap, flowsuite.kafka())
        problems = [p for h in health for p in h.problems()]
        return dg.AssetCheckResult(
            passed=not problems,
            metadata={"problems": dg.MetadataValue.json(problems), "failing_after_s": FAILING_AFTER_S, "max_lag": MAX_LAG,
                      **{k: v for k, v in observation_metadata(health).items() if not k.startswith("subscription ")}},
        )

    return dg.Definitions(assets=[asset], asset_checks=[healthy], sensors=[flow_subscriptions_sensor(spec, key)])
