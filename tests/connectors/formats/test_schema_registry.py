"""The registry path, as far as it can be tested without a Schema Registry server (none is
installable here):

- confluent-kafka's own AvroSerializer and ProtobufSerializer frame records through its
  MockSchemaRegistryClient; our decoders read them through RegistrySchemas over the same client
  — the wire format is the client's, not ours;
- confluent-kafka's real SchemaRegistryClient speaks HTTP to a loopback server that answers the
  REST subset a consumer uses (`GET /schemas/ids/{id}`, `GET /subjects/{s}/versions/{v}`),
  so caching, basic auth passed through, an unknown id and a registry that is down are the
  client's real behaviour."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.formats.avro import AvroDecoder
from connectors.formats.protobuf import ProtobufDecoder
from connectors.formats.registry import (
    RegistrySchemas,
    SchemaUnavailableError,
    registry_config,
    schema_source,
)
from tests.support.avro import (
    CLICK_FIELDS,
    V1,
    V2,
    avro_spec,
    batch,
    click,
    wire,
)
from tests.support.protobuf import PROTO_V1, classes, everything, proto_spec

TS = datetime(2026, 11, 30, 10, 15, 30, tzinfo=UTC)


def mock_client():
    import uuid

    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": f"mock://flowsuite-{uuid.uuid4().hex}"})


def test_avro_framed_by_confluents_serializer_lands_through_the_registry_source():
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = mock_client()
    ctx = SerializationContext("clicks", MessageField.VALUE)
    v1 = AvroSerializer(client, json.dumps(V1), conf={"auto.register.schemas": True})
    v2 = AvroSerializer(client, json.dumps(V2), conf={"auto.register.schemas": True})
    values = [v1(click(0, 1), ctx), v2(click(1, 2), ctx)]
    ids = [int.from_bytes(v[1:5], "big") for v in values]
    assert ids[0] != ids[1]  # two writer schemas, two ids
    spec = avro_spec("clicks", {}, CLICK_FIELDS, schemas={"source": "registry", "subject": "clicks-value"})
    decoded = AvroDecoder(spec, source=RegistrySchemas({}, client=client)).decode(batch(values))
    assert decoded.invalid.num_rows == 0, decoded.invalid.to_pylist()
    assert [(r["event_id"], r["cost"], r["country"]) for r in decoded.valid.to_pylist()] == [("e-0", 0, None), ("e-1", 1, "NL")]


def test_protobuf_framed_by_confluents_serializer_with_message_indexes_and_references():
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = mock_client()
    cls = classes(PROTO_V1)
    ctx = SerializationContext("clicks", MessageField.VALUE)
    ser = ProtobufSerializer(cls["Everything"], client, conf={"use.deprecated.format": False})
    other = ProtobufSerializer(cls["Other"], client, conf={"use.deprecated.format": False})
    o = cls["Other"](s="other")
    o.event_time.seconds = int(TS.timestamp())
    values = [ser(everything(cls, 0), ctx), ser(everything(cls, 1), ctx), other(o, ctx)]
    assert values[2][5] != 0  # Other is the third message: a real index array, not the lone 0
    source = RegistrySchemas({}, client=client)
    spec = proto_spec(fields=[{"name": "s", "type": "string"}, {"name": "maybe", "type": "int64"},
                              {"name": "event_time", "type": "timestamp"}], message=None)
    decoded = ProtobufDecoder(spec, source=source).decode(batch(values))
    assert decoded.invalid.num_rows == 0, decoded.invalid.to_pylist()
    assert [(r["s"], r["maybe"]) for r in decoded.valid.to_pylist()] == [("héllo-0", 0), ("héllo-1", None), ("other", None)]
    assert decoded.valid.column("event_time").to_pylist()[2] == TS


class _Registry(BaseHTTPRequestHandler):
    schemas: dict[int, dict] = {}
    versions: dict[tuple[str, int], dict] = {}
    requests: list[str] = []
    auth: str | None = None

    def do_GET(self):  # the http.server API
        type(self).requests.append(self.path)
        if self.auth and self.headers.get("Authorization") != "Basic " + base64.b64encode(self.auth.encode()).decode():
            return self._send(401, {"error_code": 40101, "message": "Unauthorized"})
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["schemas", "ids"] and parts[2].isdigit() and int(parts[2]) in self.schemas:
            return self._send(200, self.schemas[int(parts[2])])
        if parts[0] == "subjects" and len(parts) == 4 and (parts[1], int(parts[3])) in self.versions:
            return self._send(200, self.versions[(parts[1], int(parts[3]))])
        return self._send(404, {"error_code": 40403, "message": "Schema not found"})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def registry():
    _Registry.schemas = {
        11: {"schema": json.dumps(V1)},  # schemaType absent: AVRO, as the registry answers
        12: {"schema": PROTO_V1.replace('import "google/protobuf/wrappers.proto";', 'import "google/protobuf/wrappers.proto";\nimport "extra.proto";'),
             "schemaType": "PROTOBUF", "references": [{"name": "extra.proto", "subject": "extra", "version": 1}]},
    }
    _Registry.schemas[14] = {"schema": json.dumps({"type": "record", "name": "Click", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "device", "type": "flowsuite.Device"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}),
        "references": [{"name": "flowsuite.Device", "subject": "device", "version": 2}]}
    _Registry.versions = {("device", 2): {"subject": "device", "version": 2, "id": 15, "schema": json.dumps(DEVICE)},
                          ("extra", 1): {"subject": "extra", "version": 1, "id": 13, "schemaType": "PROTOBUF",
                                         "schema": 'syntax = "proto3"; package flowsuite.extra; message Extra { string x = 1; }'}}
    _Registry.requests = []
    _Registry.auth = "reader:s3cret-pw"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


def test_the_real_client_over_http_fetches_once_per_id_with_basic_auth_passed_through(registry):
    url, _ = registry
    conf = registry_config({"FLOWSUITE_SCHEMA_REGISTRY_URL": url,
                            "FLOWSUITE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "reader:s3cret-pw"})
    assert conf == {"url": url, "basic.auth.user.info": "reader:s3cret-pw"}
    spec = avro_spec("clicks", {}, CLICK_FIELDS, schemas={"source": "registry"})
    decoder = AvroDecoder(spec, source=schema_source(spec, registry=conf))
    for _ in range(3):
        decoded = decoder.decode(batch([wire(11, V1, click(k, 1)) for k in range(20)]))
        assert decoded.valid.num_rows == 20
    assert [r for r in _Registry.requests if r.startswith("/schemas/ids/")] == ["/schemas/ids/11"]


def test_protobuf_text_with_a_reference_is_compiled_from_the_registry(registry):
    url, _ = registry
    source = RegistrySchemas({"url": url, "basic.auth.user.info": "reader:s3cret-pw"})
    writer = source.get(12)
    assert writer.kind == "PROTOBUF" and "Extra" in writer.references["extra.proto"]
    cls = classes(PROTO_V1)
    value = b"\x00" + (12).to_bytes(4, "big") + b"\x00" + everything(cls, 0).SerializeToString()
    decoded = ProtobufDecoder(proto_spec(fields=[{"name": "s", "type": "string"}]), source=source).decode(batch([value]))
    assert decoded.valid.column("s").to_pylist() == ["héllo-0"]


DEVICE = {"type": "record", "name": "Device", "namespace": "flowsuite", "fields": [{"name": "os", "type": "string"}]}


def test_avro_named_types_from_references_resolve(registry):
    url, _ = registry
    source = RegistrySchemas({"url": url, "basic.auth.user.info": "reader:s3cret-pw"})
    writer = {"type": "record", "name": "Click", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "device", "type": DEVICE},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    fields = [{"name": "event_id", "type": "string"}, {"name": "os", "type": "string", "path": "device.os"},
              {"name": "event_time", "type": "timestamp"}]
    spec = avro_spec("clicks", {}, fields, schemas={"source": "registry"})
    value = wire(14, writer, {"event_id": "e-1", "device": {"os": "ios"}, "event_time": TS})
    decoded = AvroDecoder(spec, source=source).decode(batch([value]))
    assert decoded.valid.select(["event_id", "os", "event_time"]).to_pylist() == [{"event_id": "e-1", "os": "ios", "event_time": TS}]


def test_an_unknown_id_stops_with_a_clear_error(registry):
    url, _ = registry
    source = RegistrySchemas({"url": url, "basic.auth.user.info": "reader:s3cret-pw"})
    with pytest.raises(SchemaUnavailableError, match=r"schema id 99 is unknown to the Schema Registry at http://127\.0\.0\.1:\d+"):
        source.get(99)


def test_wrong_credentials_stop_and_never_show_the_secret(registry):
    url, _ = registry
    source = RegistrySchemas({"url": url.replace("http://", "http://reader:wrong-pw@")})
    with pytest.raises(SchemaUnavailableError) as err:
        source.get(11)
    assert "401" in str(err.value) and "wrong-pw" not in str(err.value)


def test_a_registry_that_is_down_stops_the_run(registry):
    url, server = registry
    server.shutdown()
    server.server_close()
    source = RegistrySchemas({"url": url, "max.retries": 0, "timeout": 2})
    spec = avro_spec("clicks", {}, CLICK_FIELDS, schemas={"source": "registry"})
    with pytest.raises(SchemaUnavailableError, match="cannot be reached.*nothing was committed"):
        AvroDecoder(spec, source=source).decode(batch([wire(11, V1, click(0, 1))]))


def test_registry_source_without_a_url_says_which_variable():
    spec = avro_spec("clicks", {}, CLICK_FIELDS, schemas={"source": "registry"})
    with pytest.raises(SchemaUnavailableError, match="FLOWSUITE_SCHEMA_REGISTRY_URL is not set"):
        schema_source(spec, registry={})


def test_registry_settings_pass_through_and_hide_their_secrets():
    from connectors.settings import load_settings

    settings = load_settings({"FLOWSUITE_SCHEMA_REGISTRY_URL": "https://reader:url-pw@registry.example:8081",
                              "FLOWSUITE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "reader:top-secret",
                              "FLOWSUITE_SCHEMA_REGISTRY_SSL_CA_LOCATION": "/etc/ca.pem",
                              "FLOWSUITE_SCHEMA_REGISTRY_TIMEOUT": "7"})
    assert "top-secret" not in repr(settings) and "url-pw" not in repr(settings)
    assert settings.schema_registry_config() == {
        "url": "https://reader:url-pw@registry.example:8081", "basic.auth.user.info": "reader:top-secret",
        "ssl.ca.location": "/etc/ca.pem", "timeout": 7}
    with pytest.raises(SchemaUnavailableError) as err:  # the URL in a message: without its credentials
        RegistrySchemas({"url": "http://reader:url-pw@127.0.0.1:9", "max.retries": 0, "timeout": 1}).get(1)
    assert "url-pw" not in str(err.value) and "http://127.0.0.1:9" in str(err.value)
