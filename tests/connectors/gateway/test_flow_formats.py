"""Every product format may allow flow: avro, protobuf and CDC (Debezium-shaped CloudEvents)
products delivered through the gateway, their events' `data` the product's record as JSON with
the spec's types, `dataschema` the product's schema in the gateway's xRegistry."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import jsonschema
import pyarrow as pa
import pytest
from confluent_kafka import Producer
from standardwebhooks import Webhook

from connectors.formats import binary_headers
from connectors.gateway import FlowService, Gateway, GatewayStore
from connectors.gateway.events import events_from_batch, product_source, record_json, schema_url
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec, FlowSpec, parse_spec_file
from examples.demo_data import encode_clicks, generate_clicks, produce
from tests.support import wait_for
from tests.support.cdc import orders_product
from tests.support.gateway import ApiServer, test_settings

REPO = Path(__file__).resolve().parents[3]
PUBLIC = "https://flow.example.com"
FIELDS_AVRO = ["event_id", "user_id", "partner_id", "ad_id", "kind", "cost_micros", "event_time", "country", "os"]


def flowing(spec: DataProductSpec, topic: str, **flow) -> DataProductSpec:
    """The spec on `topic`, offered to partner p-001 without the owner's approval."""
    return spec.model_copy(update={"topic": topic, "flow": FlowSpec.model_validate(
        {"enabled": True, "auto_approve": ["p-001"], **flow})})


class Env:
    """Store, service and API for one product; subscriptions of partner p-001."""

    def __init__(self, tmp_path: Path, bootstrap: str, spec: DataProductSpec):
        self.spec, self.bootstrap = spec, bootstrap
        self.metastore = Metastore(f"sqlite:///{tmp_path / 'metastore.db'}")
        self.store = GatewayStore(self.metastore)
        self.settings = test_settings(public_url=PUBLIC)
        self.api = ApiServer(FlowService(self.store, [spec], self.settings, bootstrap), public_url=PUBLIC)
        self.token = self.store.create_token("p-001")

    def subscribe(self, **body) -> dict:
        with self.api.client(self.token) as c:
            resp = c.post("/subscriptions", json={"source": product_source(self.spec), "protocol": "HTTP", **body})
        assert resp.status_code == 201, resp.text
        assert resp.json()["state"] == "active"
        return resp.json()

    def schema(self) -> dict:
        """The JSON Schema `dataschema` names, as the gateway serves it."""
        with self.api.client(None) as c:
            resp = c.get(f"/schemagroups/{self.spec.name}/schemas/{self.spec.name}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def close(self) -> None:
        self.api.stop()
        self.metastore.dispose()


@pytest.fixture
def env_of(tmp_path, kafka_bootstrap):
    envs = []

    def make(spec: DataProductSpec) -> Env:
        envs.append(Env(tmp_path, kafka_bootstrap, spec))
        return envs[-1]

    yield make
    for e in envs:
        e.close()


# --- the record as JSON with the spec's types --------------------------------------------------


def test_record_json_renders_decimals_timestamps_dates_and_bytes_as_the_spec_says():
    spec = DataProductSpec.model_validate({
        "name": "ledger", "owner": "team:fin", "topic": "ledger", "format": "avro",
        "fields": [{"name": "id", "type": "int64", "required": True},
                   {"name": "amount", "type": "decimal", "precision": 20, "scale": 9},
                   {"name": "at", "type": "timestamp"}, {"name": "day", "type": "date"},
                   {"name": "blob", "type": "bytes"}, {"name": "ok", "type": "boolean"}],
        "event_time": {"field": "at", "fallback": "kafka_timestamp"},
        "partitioning": {"start": "2026-01-01T00:00:00Z"},
        "schemas": {"source": "registry"},
    })
    valid = pa.table({
        "id": pa.array([1, 2], pa.int64()),
        "amount": pa.array([Decimal("0.000000150"), None], pa.decimal128(20, 9)),  # Arrow's text: 1.50E-7
        "at": pa.array([datetime(2026, 11, 30, 8, 0, 1, 250_000, tzinfo=UTC), None], pa.timestamp("us", tz="UTC")),
        "day": pa.array([date(2026, 11, 30), None], pa.date32()),
        "blob": pa.array([b"\x00\xff", None], pa.binary()),
        "ok": pa.array([True, None], pa.bool_()),
        "_partition": pa.array([0, 0], pa.int32()), "_offset": pa.array([7, 8], pa.int64()),
    })
    first, second = (json.loads(b) for b in record_json(spec, valid))
    assert first == {"id": 1, "amount": "0.000000150", "at": "2026-11-30T08:00:01.250000Z", "day": "2026-11-30",
                     "blob": base64.b64encode(b"\x00\xff").decode(), "ok": True}
    assert second == {"id": 2}  # nulls left out, as the served JSON Schema has no null types
    assert list(first) == [f.name for f in spec.fields]  # the spec's order, no provenance columns

    class Msg:  # what events_from_batch reads of a Kafka message
        def __init__(self, offset):
            self.offset_ = offset

        def value(self):
            return b"\x00\x00\x00\x00\x01avro bytes"

        def key(self):
            return None

        def timestamp(self):
            return (1, 1_764_489_600_000)

    events = events_from_batch(spec, 0, {7: Msg(7), 8: Msg(8)}, valid, schema_url(PUBLIC + "/", spec))
    assert [json.loads(e.data) for e in events] == [first, second]  # never the Avro bytes
    assert {e.attributes["dataschema"] for e in events} == {f"{PUBLIC}/schemagroups/ledger/schemas/ledger"}
    assert schema_url(None, spec) is None
    assert "dataschema" not in events_from_batch(spec, 0, {7: Msg(7), 8: Msg(8)}, valid)[0].attributes


# --- avro and protobuf products, pushed to a receiver -------------------------------------------


@pytest.mark.parametrize("fmt", ["avro", "protobuf"])
def test_avro_and_protobuf_products_flow_as_json_records(fmt, env_of, receiver, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1)
    shipped = parse_spec_file(REPO / "dataproducts" / ("clicks_avro.yaml" if fmt == "avro" else "clicks_proto.yaml"))
    spec = flowing(shipped, topic, attributes={"partner_id": "partnerid"})
    clicks = list(generate_clicks(24, 1, 0.0, seed=11))
    sent = {json.loads(value)["event_id"]: json.loads(value) for _, value, _ in clicks}
    produce(kafka_bootstrap, topic, encode_clicks(clicks, fmt), partitions=1)
    env = env_of(spec)
    created = env.subscribe(sink=receiver.url, config={"startfrom": "earliest"})
    gateway = Gateway(env.store, [spec], kafka_bootstrap, env.settings).start()
    try:
        wait_for(lambda: len(receiver.deliveries()) >= len(sent), what=f"{len(sent)} {fmt} events delivered")
    finally:
        gateway.stop()
    got = receiver.deliveries()
    assert len(got) == len(sent)
    hook, schema = Webhook(created["webhooksecret"]), env.schema()
    assert [int(r.headers["ce-sequence"]) for r in got] == list(range(len(sent)))  # in order
    for r in got:
        record = hook.verify(r.body, r.headers)  # signed over the JSON body
        assert r.headers["content-type"] == "application/json"
        assert set(record) <= {f.name for f in spec.fields} and {"event_id", "event_time"} <= set(record)
        source = sent[record["event_id"]]
        for name in ("event_id", "user_id", "partner_id", "kind", "cost_micros"):
            assert record[name] == source[name], name
        assert datetime.fromisoformat(record["event_time"]) == datetime.fromisoformat(source["event_time"])
        assert r.headers["ce-partnerid"] == record["partner_id"]
        jsonschema.validate(record, schema)  # what dataschema promises


# --- CDC: Debezium-shaped change events ---------------------------------------------------------


def produce_changes(bootstrap: str, topic: str) -> None:
    """An insert, an update, a delete and its tombstone of one orders row, as the CDC source
    publishes them (connectors/sources/cdc/events.py)."""
    row = {"id": 7, "customer": "c-1", "amount": "12.50", "status": "new",
           "placed_at": "2026-11-30T08:00:00Z", "note": None, "attrs": None, "blob": None, "tags": None}
    changes = [("c", None, row), ("u", row, {**row, "status": "paid"}), ("d", {"id": 7}, None)]
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for n, (op, before, after) in enumerate(changes):
        value = {"before": before, "after": after, "op": op, "ts_ms": 1_764_489_600_000 + n,
                 "source": {"connector": "postgresql", "table": "orders", "lsn": 100 + n}}
        headers = binary_headers(id=f"slot:{100 + n}:0", source="/flowsuite/cdc/shop_orders",
                                 type="flowsuite.cdc.orders.change", time=datetime(2026, 11, 30, 8, n, tzinfo=UTC),
                                 subject="7")
        producer.produce(topic, key=b"7", value=json.dumps(value).encode(), headers=headers, partition=0)
    producer.produce(topic, key=b"7", value=None, partition=0)  # the tombstone after the delete
    assert producer.flush(30) == 0


def test_cdc_products_flow_as_records_with_their_change_kind(env_of, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1)
    spec = flowing(orders_product(topic), topic, attributes={"customer": "customer"})
    produce_changes(kafka_bootstrap, topic)
    env = env_of(spec)
    sub = env.subscribe(config={"delivery": "pull", "startfrom": "earliest"})
    with env.api.client(env.token) as c:
        items = c.post(f"/subscriptions/{sub['id']}:receive", params={"maxEvents": 10, "maxWaitTime": 5}).json()["value"]
    events = [i["event"] for i in items]
    assert [e["flowop"] for e in events] == ["c", "u", "d"]  # the tombstone is no event
    assert [e["sequence"] for e in events] == [f"{o:020d}" for o in (0, 1, 2)]
    assert {e["dataschema"] for e in events} == {f"{PUBLIC}/schemagroups/orders/schemas/orders"}
    insert, update, delete = (e["data"] for e in events)
    assert insert == {"id": 7, "customer": "c-1", "amount": "12.50", "status": "new",
                      "placed_at": "2026-11-30T08:00:00.000000Z"}  # nulls left out
    assert update == {**insert, "status": "paid"}
    assert delete == {"id": 7}  # the key is what is left of a deleted row
    assert events[0]["customer"] == "c-1" and events[0]["type"] == "com.flowsuite.orders"
    for record in (insert, update):
        jsonschema.validate(record, env.schema())


def test_cdc_products_are_pushed_to_a_receiver(env_of, receiver, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1)
    spec = flowing(orders_product(topic), topic)
    produce_changes(kafka_bootstrap, topic)
    env = env_of(spec)
    env.subscribe(sink=receiver.url, config={"startfrom": "earliest"})
    gateway = Gateway(env.store, [spec], kafka_bootstrap, env.settings).start()
    try:
        wait_for(lambda: len(receiver.deliveries()) >= 3, 15, what="3 change events pushed")
    finally:
        gateway.stop()
    got = receiver.deliveries()
    assert [r.headers["ce-flowop"] for r in got] == ["c", "u", "d"]  # the tombstone is no event
    assert [int(r.headers["ce-sequence"]) for r in got] == [0, 1, 2]
    assert {r.headers["ce-dataschema"] for r in got} == {f"{PUBLIC}/schemagroups/orders/schemas/orders"}
    insert, update, delete = (json.loads(r.body) for r in got)
    assert insert["status"] == "new" and update["status"] == "paid" and delete == {"id": 7}
