"""The demo products `clicks_avro` and `clicks_proto` end to end through the real broker: a topic
mixing three writer schema versions lands with consumed = landed + quarantined; an unknown
schema id stops the run with nothing committed, and the run after the fix lands everything;
quarantine replay, the warehouse sink and compaction work on them unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.flows import compact_hour, land, replay_quarantine
from connectors.formats.registry import SchemaUnavailableError
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec, parse_spec_file
from connectors.warehouse import WarehouseSink, sync
from examples.demo_data import encode_clicks, generate_clicks, produce
from tests.support.runs import run_at

REPO = Path(__file__).resolve().parents[3]
PRODUCT = {"avro": "clicks_avro", "protobuf": "clicks_proto"}
NOW = datetime(2026, 11, 30, 11, 30, tzinfo=UTC)


def product(fmt: str, topic: str, **changes) -> DataProductSpec:
    spec = parse_spec_file(REPO / "dataproducts" / f"{PRODUCT[fmt]}.yaml")
    data = spec.model_dump()
    data["topic"] = topic
    for k, v in changes.items():
        data[k] = v
    return DataProductSpec.model_validate(data)


@pytest.fixture
def stores(tmp_path):
    return Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'ms.db'}")


@pytest.mark.parametrize("fmt", ["avro", "protobuf"])
def test_three_schema_versions_land_then_replay_sync_and_compact(fmt, make_topic, kafka_bootstrap, stores, tmp_path):
    lake, ms = stores
    topic = make_topic(2)
    records = list(encode_clicks(generate_clicks(900, 2, 0.05, seed=7, now=NOW), fmt))
    report = produce(kafka_bootstrap, topic, records, partitions=2)
    assert report.invalid > 20

    # A narrow cost limit sends the clicks (cost >= 100,000) to the quarantine too; replay after
    # widening it lands them.
    narrow_fields = [f.model_dump(exclude_none=True) | ({"max": 99_999} if f.name == "cost_micros" else {})
                     for f in product(fmt, topic).fields]
    narrow = product(fmt, topic, fields=narrow_fields)
    result = land(narrow, lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert result.consumed == len(records) == result.landed + result.quarantined
    clicks = sum(1 for _, v, ok in records if ok and b"click" in v and b"impression" not in v)
    assert result.quarantined > report.invalid

    files = [f.path for f in ms.live_files(narrow.name)]
    rows = lake.read_tables(files).to_pylist()
    versions = {}
    for r in rows:
        versions.setdefault((r["ad_id"] is None, r["country"] is None, r["os"] is None), 0)
        versions[(r["ad_id"] is None, r["country"] is None, r["os"] is None)] += 1
    # v1: ad_id, no country/os; v2: all three; v3: no ad_id, country and os.
    assert set(versions) == {(False, True, True), (False, False, False), (True, False, False)}
    assert all(isinstance(r["event_time"], datetime) and r["event_time"].tzinfo for r in rows)

    wide = product(fmt, topic)
    replayed = replay_quarantine(wide, lake=lake, metastore=ms)
    assert replayed.replayed == result.quarantined - report.invalid
    assert clicks <= replayed.replayed
    live = lake.read_tables([f.path for f in ms.live_files(wide.name)])
    assert live.num_rows == report.valid

    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    synced = sync(wide, lake=lake, metastore=ms, url=url)
    assert synced.inserted == report.valid
    sink = WarehouseSink(wide, url)
    try:
        assert len(sink.read_rows()) == report.valid
    finally:
        sink.dispose()

    hour = sorted({f.hour for f in ms.live_files(wide.name)})[0]
    compacted = compact_hour(wide, hour, run_at(lake=lake, metastore=ms, now=NOW + timedelta(days=1)))
    assert compacted.status == "compacted", compacted.reason
    assert lake.read_tables([f.path for f in ms.live_files(wide.name)]).num_rows == report.valid


def test_an_unknown_schema_id_stops_the_run_with_nothing_committed(make_topic, kafka_bootstrap, stores):
    lake, ms = stores
    topic = make_topic(1)
    records = list(encode_clicks(generate_clicks(30, 1, 0.0, seed=3, now=NOW), "avro"))
    stray = records[5][1]
    records.insert(10, (b"k", b"\x00\x00\x00\x00\x09" + stray[5:], True))  # id 9: not mapped
    produce(kafka_bootstrap, topic, records, partitions=1)
    spec = product("avro", topic)
    with pytest.raises(SchemaUnavailableError, match="schema id 9 is not mapped"):
        land(spec, lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert ms.committed_offsets(spec.name) == {}  # no offset moved
    assert ms.live_files(spec.name, kinds=("landed", "quarantine")) == []

    files = dict(spec.schemas.files) | {9: "clicks-v3.avsc"}  # the writer's v3, registered as 9
    fixed = product("avro", topic, schemas=spec.schemas.model_dump() | {"files": files})
    result = land(fixed, lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert (result.consumed, result.landed, result.quarantined) == (31, 31, 0)


def test_cli_produce_demo_in_avro_lands_as_clicks_avro(make_topic, kafka_bootstrap, stores, monkeypatch, capsys):
    from orchestration.cli import main

    lake, ms = stores
    topic = make_topic(2)
    monkeypatch.setenv("FLOWSUITE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    code = main(["produce-demo", "--format", "avro", "--events", "300", "--invalid-rate", "0.1",
                 "--topic", topic, "--seed", "5"])
    assert code == 0
    out = capsys.readouterr().out
    valid, invalid = (int(x) for x in out.split("(")[1].split(" valid, ")[0:1] + out.split(" valid, ")[1].split(" invalid")[0:1])
    result = land(product("avro", topic), lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert (result.consumed, result.landed, result.quarantined) == (300, valid, invalid)
    assert invalid > 10
