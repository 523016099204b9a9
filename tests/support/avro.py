"""Helpers of the Avro tests: schemas on disk, records in the Confluent wire format."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

from fastavro import parse_schema, schemaless_writer

from connectors.formats import Batch
from connectors.spec import DataProductSpec


def wire(schema_id: int, schema: dict, record: dict) -> bytes:
    """One record as Confluent's AvroSerializer frames it: 0, the id (big-endian), the payload."""
    out = io.BytesIO()
    out.write(b"\x00" + schema_id.to_bytes(4, "big"))
    schemaless_writer(out, parse_schema(schema), record)
    return out.getvalue()


def write_schemas(directory: Path, schemas: dict[int, dict]) -> dict[int, str]:
    """Each schema as `v<id>.avsc` in `directory`; the id → file mapping of a spec."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for sid, schema in schemas.items():
        (directory / f"v{sid}.avsc").write_text(json.dumps(schema))
        files[sid] = str(directory / f"v{sid}.avsc")
    return files


def avro_spec(topic: str, files: dict[int, str], fields: list[dict], **over) -> DataProductSpec:
    data = {
        "name": "clicks_avro", "owner": "team:ads", "topic": topic, "format": "avro",
        "fields": fields,
        "event_time": {"field": "event_time", "fallback": "kafka_timestamp"},
        "partitioning": {"start": "2026-01-01T00:00:00Z"},
        "schemas": {"source": "files", "files": files},
    }
    data.update(over)
    return DataProductSpec.model_validate(data)


def batch(values: list[bytes | None], keys: list | None = None, timestamp: int = 1_764_000_000_000) -> Batch:
    n = len(values)
    return Batch(0, list(values), keys or [None] * n, list(range(n)), [timestamp] * n)


# Five writer schemas of one record, for the evolution tests (v1 → v5).
CLICK_TS = datetime(2026, 11, 30, 10, 15, 30, tzinfo=UTC)
V1 = {"type": "record", "name": "Click", "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "kind", "type": ["null", "string"], "default": None},
    {"name": "cost", "type": "int"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
]}
# v2 adds `country` with a default and promotes cost int → long.
V2 = {"type": "record", "name": "Click", "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "kind", "type": ["null", "string"], "default": None},
    {"name": "cost", "type": "long"},
    {"name": "country", "type": "string", "default": "unknown"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
]}
# v3 removes the optional `kind`.
V3 = {"type": "record", "name": "Click", "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "cost", "type": "long"},
    {"name": "country", "type": "string", "default": "unknown"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
]}
# v4 changes cost to a string: incompatible with the spec's int64.
V4 = {"type": "record", "name": "Click", "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "cost", "type": "string"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
]}
# v5 drops the required event_id: nothing to read it from, no default.
V5 = {"type": "record", "name": "Click", "fields": [
    {"name": "cost", "type": "long"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
]}
CLICK_FIELDS = [
    {"name": "event_id", "type": "string", "required": True},
    {"name": "kind", "type": "string"},
    {"name": "cost", "type": "int64", "required": True},
    {"name": "country", "type": "string"},
    {"name": "event_time", "type": "timestamp", "required": True},
]


def click(k: int, version: int) -> dict:
    r = {"event_id": f"e-{k}", "kind": "click", "cost": k, "country": "NL", "event_time": CLICK_TS}
    if version in (3, 5):
        r.pop("kind")
    if version == 4:
        r = {"event_id": f"e-{k}", "cost": str(k), "event_time": r["event_time"]}
    if version == 5:
        r.pop("event_id")
    return r
