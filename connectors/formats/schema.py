"""Columns of the lake: provenance, CloudEvents attributes promoted to columns, quarantine rows,
and `lake_schema(spec)`, the schema of every landed file of a product."""

from __future__ import annotations

import pyarrow as pa

from connectors.spec import DataProductSpec

PROVENANCE = pa.schema(
    [
        pa.field("_topic", pa.string()),
        pa.field("_partition", pa.int32()),
        pa.field("_offset", pa.int64()),
        pa.field("_timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("_key", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema([*PROVENANCE, pa.field("_error", pa.string()), pa.field("_raw", pa.binary())])


# CloudEvents attributes promoted to columns of `format: cloudevents` products, between the
# value columns and the provenance columns (connectors/formats/cloudevents.py fills them).
CE_FIELDS = [
    pa.field("ce_id", pa.string()),
    pa.field("ce_source", pa.string()),
    pa.field("ce_type", pa.string()),
    pa.field("ce_time", pa.timestamp("us", tz="UTC")),
    pa.field("ce_subject", pa.string()),
]


# Columns of a product fed by change data capture (`cloudevents.data_layout: debezium`), after
# the ce_* columns (connectors/formats/debezium.py fills them; docs/cdc.md says what they mean).
CDC_FIELDS = [
    pa.field("_op", pa.string()),
    pa.field("_lsn", pa.int64()),
    pa.field("_unchanged", pa.list_(pa.string())),
]


def lake_schema(spec: DataProductSpec) -> pa.Schema:
    """Columns of every landed file of the product: values, (ce_* attributes), then provenance."""
    if spec.format != "cloudevents":
        return payload_lake_schema(spec)
    cdc = CDC_FIELDS if spec.cloudevents.data_layout == "debezium" else []
    fields = [*spec.arrow_schema(), *CE_FIELDS, *cdc, *PROVENANCE]
    if spec.deletes_enabled:
        fields.append(pa.field("_deleted", pa.bool_()))
    return pa.schema(fields)


def payload_lake_schema(spec: DataProductSpec) -> pa.Schema:
    fields = [*spec.arrow_schema(), *PROVENANCE]
    if spec.deletes_enabled:
        fields.append(pa.field("_deleted", pa.bool_()))
    return pa.schema(fields)


def decimal_text(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A decimal column as plain positional text with its scale (`0.000000000`): Arrow's own
    cast to string, like Python's str(), gives exponent forms such as `0E-9` and `1.50E-7`."""
    return pa.array([None if v is None else format(v, "f") for v in arr.to_pylist()], pa.string())
