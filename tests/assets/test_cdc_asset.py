"""`orders/published` materialized against a real logical PostgreSQL: the capture runs until
caught up, reports what it did, the retained-WAL check runs with it, and the poll sensor asks
for a run only when the slot has unconfirmed WAL."""

from __future__ import annotations

import dagster as dg

from assets.cdc import RETAINED_WAL_CHECK, build_cdc_definitions
from orchestration.resources import FlowsuiteResource
from tests.support.cdc import ORDERS_DDL, orders_product, orders_source, sql


def test_materialize_published_then_sensor(cdc_db, make_topic, tmp_path, kafka_bootstrap):
    sql(cdc_db, ORDERS_DDL, "INSERT INTO orders (id, customer) VALUES (1, 'a'), (2, 'b')")
    product = orders_product(make_topic(partitions=1))
    source = orders_source(cdc_db)
    published = dg.AssetKey(["orders", "published"])
    defs = build_cdc_definitions(product, source, published, dg.AssetKey(["legacy", "orders"]))
    flowsuite = FlowsuiteResource(kafka_bootstrap=kafka_bootstrap, lake_url=str(tmp_path / "lake"),
                                  metastore_url=f"sqlite:///{tmp_path / 'ms.db'}",
                                  warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}")
    asset = next(a for a in defs.assets if isinstance(a, dg.AssetsDefinition))
    with dg.instance_for_test() as instance:
        result = dg.materialize([asset], resources={"flowsuite": flowsuite}, instance=instance)
        assert result.success
        meta = result.get_asset_materialization_events()[0].materialization.metadata
        assert meta["snapshot_rows"].value == 2 and meta["events"].value == 2
        checks = result.get_asset_check_evaluations()
        assert [(c.check_name, c.passed) for c in checks] == [(RETAINED_WAL_CHECK, True)]

        sensor = next(s for s in defs.sensors)
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
        idle = sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(idle, dg.SkipReason) and "confirmed everything" in idle.skip_message
        sql(cdc_db, "UPDATE orders SET status = 'paid' WHERE id = 1")
        request = sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(request, dg.RunRequest) and request.run_key.startswith("shop_orders:0/")
        result = dg.materialize([asset], resources={"flowsuite": flowsuite}, instance=instance)
        meta = result.get_asset_materialization_events()[0].materialization.metadata
        assert meta["transactions"].value == 1 and meta["events"].value == 1 and meta["snapshot_rows"].value == 0
