"""Helpers of the Avro tests: schemas on disk, records in the Confluent wire format."""

from __future__ import annotations

import io
import json
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
