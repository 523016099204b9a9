"""Records a quarantine replay lands reach the warehouse table, exactly once.

They keep their original offsets, which the warehouse sink has already passed, so the sink
follows replays by id (a second watermark kept with its offsets) as well as by offset.
"""

from __future__ import annotations

from connectors.flows import replay_quarantine
from connectors.spec import DataProductSpec
from connectors.warehouse import WarehouseSink, sync
from tests.support.quarantine import N_GOOD, N_HIGH, land_quarantine_demo, spec_data


def _event_ids(sink: WarehouseSink) -> list[str]:
    return sorted(row["event_id"] for row in sink.read_rows())


def test_replayed_records_reach_the_warehouse_once(kafka_bootstrap, make_topic, tmp_path):
    topic, lake, metastore = land_quarantine_demo(kafka_bootstrap, make_topic, tmp_path)
    narrow = DataProductSpec.model_validate(spec_data(topic))
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    first = sync(narrow, lake=lake, metastore=metastore, url=url)
    assert first.inserted == N_GOOD and first.replays_applied == 0

    wide = DataProductSpec.model_validate(spec_data(topic, max_cost=1_000_000_000))
    assert replay_quarantine(wide, lake=lake, metastore=metastore).replayed == N_HIGH
    second = sync(wide, lake=lake, metastore=metastore, url=url)
    assert second.inserted == N_HIGH, "replayed records carry old offsets and must still arrive"
    assert second.replays_applied >= 1

    third = sync(wide, lake=lake, metastore=metastore, url=url)
    assert (third.inserted, third.updated, third.replays_applied) == (0, 0, 0)
    sink = WarehouseSink(wide, url)
    try:
        expected = sorted([f"e-{i}" for i in range(N_GOOD)] + [f"e-{100 + i}" for i in range(N_HIGH)])
        assert _event_ids(sink) == expected
        assert all(p >= 0 for p in sink.sink_offsets()), "the replay watermark is not a partition"
    finally:
        sink.dispose()
