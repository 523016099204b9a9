"""Formats: what a Kafka message's bytes mean. `decoder_for(spec)` picks the decoder of the
product's `format` explicitly; nothing here imports Kafka, the lake or the metastore."""

from __future__ import annotations

from connectors.formats.base import (
    Batch,
    Decoded,
)
from connectors.formats.cloudevents import (
    CE_COLUMNS,
    DEFAULT_DEDUPE_LOOKBACK,
    JSON_CONTENT_TYPE,
    REQUIRED_ATTRIBUTES,
    SPECVERSION,
    STRUCTURED_CONTENT_TYPE,
    CloudEventsDecoder,
    binary_headers,
    cloudevent_id,
    json_default,
    rfc3339,
    to_structured_value,
)
from connectors.formats.json import (
    Decoder,
    pieces_missing,
)
from connectors.formats.schema import (
    CE_FIELDS,
    PROVENANCE,
    QUARANTINE_SCHEMA,
    lake_schema,
)
from connectors.formats.validate import (
    field_violations,
    first_reason,
    record_violations,
)
from connectors.spec import DataProductSpec


def decoder_for(spec: DataProductSpec, topic: str | None = None, **options):
    """The decoder of a product's `format`: `Decoder` (JSON), or `CloudEventsDecoder`, which
    needs the messages' headers (its `needs_headers`) and takes `seen_ids` for de-duplication."""
    if spec.format == "cloudevents":
        return CloudEventsDecoder(spec, topic, **options)
    if spec.format == "json":
        return Decoder(spec, topic)
    raise ValueError(f"{spec.name}: no decoder for format {spec.format!r}")

__all__ = [
    "Batch",
    "CE_COLUMNS",
    "CE_FIELDS",
    "CloudEventsDecoder",
    "DEFAULT_DEDUPE_LOOKBACK",
    "Decoded",
    "Decoder",
    "JSON_CONTENT_TYPE",
    "PROVENANCE",
    "QUARANTINE_SCHEMA",
    "REQUIRED_ATTRIBUTES",
    "SPECVERSION",
    "STRUCTURED_CONTENT_TYPE",
    "binary_headers",
    "cloudevent_id",
    "decoder_for",
    "field_violations",
    "first_reason",
    "json_default",
    "lake_schema",
    "pieces_missing",
    "record_violations",
    "rfc3339",
    "to_structured_value",
]
