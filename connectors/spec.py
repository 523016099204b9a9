# Over 400 lines: the spec is the contract; every field's model and its cross-field rules stay together.
"""Data-product specs: one YAML file per product, parsed into pydantic models.

A spec is the owner's contract for a topic: its schema and key, how event time maps to hour
partitions, when a landing should run, what quality it promises and where it is delivered.
Every problem is reported with the file, the field and what was expected, and one bad spec
never hides the errors of the others (`load_specs` collects them all).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from connectors.errors import TerminalError

# Identifiers become SQL table/column names, file path segments and Dagster names, so they
# are restricted to a portable, injection-free alphabet.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")  # \Z: "$" would accept a trailing newline
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}\Z")
# The lake's hive partition keys (`<product>/dt=…/hour=…/`): hive readers (DuckDB, Spark, Trino,
# pyarrow datasets) replace a file column of the same name by the directory's string.
PARTITION_COLUMNS = ("dt", "hour")
RESERVED_COLUMNS = {"_topic", "_partition", "_offset", "_timestamp", "_key", "_deleted", "_error", "_raw"}

FieldType = Literal["string", "int32", "int64", "float64", "decimal", "boolean", "timestamp", "date", "bytes"]
# `type: decimal` takes `precision` (total digits) and `scale` (digits after the point): Arrow's
# decimal128, so 38 digits at most.
MAX_DECIMAL_PRECISION = 38

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "bytes": pa.binary(),
}

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: Any) -> timedelta:
    """'90s', '10m', '2h', '1d' or a number of seconds → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '10m', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})
        if value.strip().upper().startswith("P"):  # ISO-8601, as specs serialize to JSON
            try:
                return TypeAdapter(timedelta).validate_python(value.strip())
            except ValidationError:
                pass
    raise ValueError(f"expected a duration such as '90s', '10m', '2h' or '1d', got {value!r}")


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(SpecModel):
    """One column of the product's schema, with its record-level rules."""

    name: str
    type: FieldType
    required: bool = False
    description: str = ""
    enum: list[str | int] | None = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    max_length: int | None = Field(default=None, gt=0)
    # type: decimal only: total digits (1..38) and digits after the point (0..precision).
    precision: int | None = None
    scale: int | None = None
    # avro/protobuf: a dotted path into nested records/messages (`device.os`), flattened into
    # this column; the field's own name by default.
    path: str | None = None

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        # Checked first: reserved names start with "_", which IDENTIFIER rejects anyway, and
        # "reserved" is the message that tells the owner what to do.
        if v in RESERVED_COLUMNS:
            raise ValueError(
                f"field name {v!r} is reserved for the provenance column every landed file carries; "
                "rename the field"
            )
        if v in PARTITION_COLUMNS:
            raise ValueError(
                f"field name {v!r} is the name of a lake partition directory (…/dt=…/hour=…/); hive "
                f"readers such as DuckDB and Spark would replace the column by the directory's text; "
                f"rename the field (e.g. {v}_start or event_{v})"
            )
        if not IDENTIFIER.match(v):
            raise ValueError(
                f"field name {v!r} must match {IDENTIFIER.pattern} (lower case, digits, underscore)"
            )
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", v):
            raise ValueError(f"path {v!r} must be dot-separated field names, such as device.os")
        return v

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"pattern {v!r} is not a valid regular expression: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _decimal_digits(self) -> FieldSpec:
        if self.type != "decimal":
            if self.precision is not None or self.scale is not None:
                raise ValueError(f"precision/scale apply to type decimal, not to type {self.type!r}")
            return self
        p, sc = self.precision, self.scale
        if p is None:
            raise ValueError(f"type decimal needs precision: its total number of digits, 1 to {MAX_DECIMAL_PRECISION} "
                             "(and scale: the digits after the point, default 0)")
        if isinstance(p, bool) or not 1 <= p <= MAX_DECIMAL_PRECISION:
            raise ValueError(f"precision must be 1 to {MAX_DECIMAL_PRECISION} (Arrow's decimal128), got {p!r}")
        if sc is not None and (isinstance(sc, bool) or not 0 <= sc <= p):
            raise ValueError(f"scale must be 0 to the precision ({p}), got {sc!r}")
        return self

    @model_validator(mode="after")
    def _rules_fit_type(self) -> FieldSpec:
        numeric = self.type in ("int32", "int64", "float64")
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min/max apply to int32, int64 and float64 fields, not to type {self.type!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if (self.pattern is not None or self.max_length is not None) and self.type not in ("string", "bytes"):
            if self.pattern is not None:
                raise ValueError(f"pattern applies to string fields, not to type {self.type!r}")
            raise ValueError(f"max_length applies to string or bytes fields, not to type {self.type!r}")
        if self.enum is not None:
            if not self.enum:
                raise ValueError("enum must list at least one value")
            if self.type == "string" and not all(isinstance(x, str) for x in self.enum):
                raise ValueError("enum values of a string field must be strings")
            if self.type in ("int32", "int64") and not all(isinstance(x, int) for x in self.enum):
                raise ValueError("enum values of an integer field must be integers")
            if self.type not in ("string", "int32", "int64"):
                raise ValueError(f"enum applies to string or integer fields, not to type {self.type!r}")
        return self

    @property
    def arrow_type(self) -> pa.DataType:
        if self.type == "decimal":
            return pa.decimal128(self.precision or MAX_DECIMAL_PRECISION, self.scale or 0)
        return ARROW_TYPES[self.type]


class EventTimeSpec(SpecModel):
    """Which field gives the event time that picks the hour partition."""

    field: str | None = None
    # kafka_timestamp: use the record's Kafka timestamp when the field is absent or null.
    # none: a record without event time is invalid (quarantined).
    fallback: Literal["kafka_timestamp", "none"] = "none"
    # A CloudEvents product can take its event time from the envelope's `time` attribute.
    source: Literal["field", "kafka_timestamp", "ce_time"] = "field"

    @model_validator(mode="after")
    def _field_when_needed(self) -> EventTimeSpec:
        if self.source == "field" and not self.field:
            raise ValueError("event_time.field is required when event_time.source is 'field'")
        return self


class PartitioningSpec(SpecModel):
    """Hour partitions by event time (UTC)."""

    start: datetime = Field(description=(
        "first hour of the product's Dagster partitions (UTC): a timestamp, or `-<N>d` for the UTC "
        "midnight N days before the code location loads (a rolling window, for demos and sandboxes)"
    ))
    allowed_lateness: timedelta = Field(default=timedelta(minutes=10))

    @field_validator("start", mode="before")
    @classmethod
    def _relative_start(cls, v: Any) -> Any:
        # An explicit timestamp keeps its meaning; only the `-<N>d` form rolls with the clock.
        if isinstance(v, str) and (m := re.fullmatch(r"\s*-(\d+)d\s*", v)):
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            return today - timedelta(days=int(m.group(1)))
        return v

    @field_validator("allowed_lateness", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)

    @field_validator("start")
    @classmethod
    def _hour_aligned_utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        v = v.astimezone(UTC)
        if v.minute or v.second or v.microsecond:
            raise ValueError(f"partitioning.start must fall on a whole hour, got {v.isoformat()}")
        return v


class TriggerSpec(SpecModel):
    """When the offset sensor requests a landing, and how much one run may take."""

    min_records: int = Field(default=1000, ge=1)
    max_latency: timedelta = Field(default=timedelta(minutes=5))
    max_records_per_run: int = Field(default=2_000_000, ge=1)
    sensor_interval: timedelta = Field(default=timedelta(seconds=30))

    @field_validator("max_latency", "sensor_interval", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)


class IcebergSpec(SpecModel):
    """Publish sealed hours as the Iceberg table `flowsuite.<product>` (connectors/tables)."""

    enabled: bool = False
    retain: timedelta = Field(default=timedelta(days=3))  # snapshots younger than this stay readable

    @field_validator("retain", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)


class LakeSinkSpec(SpecModel):
    enabled: bool = True
    target_file_size_mb: int = Field(default=128, ge=1)
    row_group_rows: int = Field(default=131_072, ge=1000)
    iceberg: IcebergSpec = IcebergSpec()


class DatabaseSinkSpec(SpecModel):
    enabled: bool = True
    table: str | None = None  # defaults to the product's name
    deletes: Literal["tombstone", "none"] = "none"
    # offset: the Kafka (partition, offset) orders versions of a key (keys stay in one
    # partition). A field name: that column orders them instead.
    version: str = "offset"
    batch_rows: int = Field(default=50_000, ge=100)
    # PostgreSQL only: percent of each table page filled by inserts; the rest keeps updated
    # row versions on their page (HOT updates: no new index entry). 50 for products whose
    # keys are updated often (measured: update-heavy upserts ~2x faster); unset: 100, the
    # densest table, for products that mostly insert. Applies when the sink creates the table.
    fillfactor: int | None = Field(default=None, ge=10, le=100)

    @field_validator("table")
    @classmethod
    def _identifier(cls, v: str | None) -> str | None:
        if v is not None and not IDENTIFIER.match(v):
            raise ValueError(f"table name {v!r} must match {IDENTIFIER.pattern}")
        return v


class SinksSpec(SpecModel):
    lake: LakeSinkSpec = LakeSinkSpec()
    database: DatabaseSinkSpec | None = None


class ExpectationSpec(SpecModel):
    """One Great Expectations 1.x expectation, e.g. expect_column_values_to_not_be_null."""

    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["error", "warn"] = "error"
    name: str | None = None  # the asset check's name; derived from type and column if absent


class FreshnessSpec(SpecModel):
    max_age: timedelta | None = None  # no landing for longer than this fails the check
    max_lag: int | None = Field(default=None, ge=0)  # records waiting

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta | None:
        return None if v is None else parse_duration(v)


class VolumeSpec(SpecModel):
    trailing_hours: int = Field(default=24, ge=1)
    min_ratio: float = Field(default=0.2, ge=0)  # an hour below 0.2 × trailing median fails
    max_ratio: float = Field(default=5.0, gt=0)


class QualitySpec(SpecModel):
    on_invalid: Literal["quarantine", "dlq", "fail"] = "quarantine"
    expectations: list[ExpectationSpec] = Field(default_factory=list)
    freshness: FreshnessSpec | None = None
    volume: VolumeSpec | None = None


class CloudEventsSpec(SpecModel):
    # Drop an event whose ce_id already landed: within a run, and across runs against the
    # ce_ids of the live files of the last `dedupe_lookback` of hours (connectors/formats/cloudevents.py).
    dedupe_on_id: bool = False
    dedupe_lookback: timedelta = Field(default=timedelta(days=7))
    # debezium: the data is a change event (before/after/op/source, connectors/sources/cdc);
    # the after-image lands as the product's fields plus _op, _lsn and _unchanged.
    data_layout: Literal["record", "debezium"] = "record"

    @field_validator("dedupe_lookback", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)


class FlowSpec(SpecModel):
    """Subscriptions by other organisations (connectors/gateway, docs/flow.md): off unless enabled.

    `attributes` maps fields to CloudEvents extension attributes subscribers filter on;
    `require` lists filters every subscription must carry ("{org}" is the subscriber's org);
    `auto_approve` names organisations whose subscriptions need no owner approval;
    `max_rate` caps the requests per minute any one subscription is sent (a subscriber's
    `config.rate` above it is capped, and its status says so).
    """

    enabled: bool = False
    type: str | None = None  # CloudEvents `type`; default com.flowsuite.<product>
    attributes: dict[str, str] = Field(default_factory=dict)
    require: list[dict[str, Any]] = Field(default_factory=list)
    auto_approve: list[str] = Field(default_factory=list)
    max_rate: int | None = Field(default=None, ge=1)  # requests per minute per subscription; None: no cap

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, v: dict[str, str]) -> dict[str, str]:
        for attr in v.values():  # CloudEvents: lower-case letters and digits, at most 20
            if not re.match(r"^[a-z0-9]{1,20}\Z", attr):
                raise ValueError(f"extension attribute {attr!r} must be 1-20 lower-case letters or digits")
        return v
class InboundSenderSpec(SpecModel):
    """One organisation that may push CloudEvents to the product (`POST /inbound/<product>`).

    Its Standard Webhooks secret (`whsec_...`) is never in the YAML: `secret_env` names the
    environment variable that holds it; during a rotation `previous_secret_env` holds the old
    one, accepted until `previous_until`.
    """

    org: str  # the sending organisation, as its lineage shows it
    secret_env: str
    previous_secret_env: str | None = None
    previous_until: datetime | None = None  # end of the rotation's grace (UTC)
    origins: list[str]  # its WebHook-Request-Origin values (the handshake consents to these only)
    sources: list[str]  # CloudEvents `source`s accepted from it; a trailing * matches a prefix
    rate: int | None = Field(default=None, ge=1)  # requests per minute (WebHook-Allowed-Rate); none: no limit

    @model_validator(mode="before")
    @classmethod
    def _no_secret_values(cls, data: Any) -> Any:
        if isinstance(data, dict):
            inline = sorted(k for k in data if k in ("secret", "previous_secret", "webhooksecret"))
            if inline:
                raise ValueError(
                    f"{', '.join(inline)}: a secret never goes in the spec; put it in an environment "
                    "variable and name the variable in secret_env (previous_secret_env for the old one)"
                )
        return data

    @field_validator("org")
    @classmethod
    def _org(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z", v):
            raise ValueError(f"org {v!r} must be 1-128 letters, digits, '_', '.', ':' or '-'")
        return v

    @field_validator("secret_env", "previous_secret_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Z_][A-Z0-9_]{0,127}\Z", v):
            raise ValueError(f"{v!r} is not an environment variable name (upper case, digits, underscore)")
        return v

    @field_validator("previous_until")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return v if v is None or v.tzinfo else v.replace(tzinfo=UTC)

    @field_validator("origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("origins must list at least one WebHook-Request-Origin (a DNS name such as ads.example.com)")
        for origin in v:
            if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})\Z", origin):
                raise ValueError(f"origin {origin!r} must be a DNS name, as WebHook-Request-Origin carries it")
        return v

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("sources must list at least one CloudEvents source accepted from this organisation")
        for source in v:
            if not source or "*" in source[:-1]:
                raise ValueError(f"source {source!r}: a non-empty URI-reference, with * only at its end (a prefix)")
        return v

    @model_validator(mode="after")
    def _rotation(self) -> InboundSenderSpec:
        if (self.previous_secret_env is None) != (self.previous_until is None):
            raise ValueError("previous_secret_env and previous_until go together: the old secret and when its grace ends")
        if self.previous_secret_env is not None and self.previous_secret_env == self.secret_env:
            raise ValueError("previous_secret_env must name another variable than secret_env")
        return self


class InboundSpec(SpecModel):
    """Other organisations push signed CloudEvents to the product (docs/flow.md, "Inbound")."""

    senders: list[InboundSenderSpec]
    types: list[str] = Field(default_factory=list)  # CloudEvents `type`s accepted; empty: any
    tolerance: timedelta = Field(default=timedelta(minutes=5))  # webhook-timestamp this close to now
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    remember: timedelta = Field(default=timedelta(days=7))  # how long a webhook-id is known (retries)
    partitions: int = Field(default=2, ge=1, le=1000)  # of the topic, when the gateway creates it

    @field_validator("tolerance", "remember", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)

    @model_validator(mode="after")
    def _senders(self) -> InboundSpec:
        if not self.senders:
            raise ValueError("senders must list at least one organisation")
        orgs = [s.org for s in self.senders]
        dupes = sorted({o for o in orgs if orgs.count(o) > 1})
        if dupes:
            raise ValueError(f"senders: organisation(s) listed twice: {', '.join(dupes)}")
        if self.tolerance < timedelta(seconds=1):
            raise ValueError("tolerance must be at least 1s")
        if self.remember < self.tolerance:
            raise ValueError("remember must be at least the tolerance: a replay inside it must still be known")
        return self

    def sender(self, org: str) -> InboundSenderSpec | None:
        return next((s for s in self.senders if s.org == org), None)


class SchemaSpec(SpecModel):
    """Where the writer schemas of an avro/protobuf product come from (docs/formats.md).

    registry: the Schema Registry at FLOWSUITE_SCHEMA_REGISTRY_URL, by the id in each record.
    files: `files` maps each schema id to a file in the schemas folder (dataproducts/schemas/).
    """

    source: Literal["registry", "files"] = "files"
    files: dict[int, str] = Field(default_factory=dict)
    subject: str | None = None  # informational: the registry subject the ids belong to
    message: str | None = None  # protobuf: the fully qualified message type the product reads

    @model_validator(mode="after")
    def _files_when_needed(self) -> SchemaSpec:
        if self.source == "files" and not self.files:
            raise ValueError("schemas.files must map at least one schema id to a file when schemas.source is 'files'")
        for sid, name in self.files.items():
            if sid < 0:
                raise ValueError(f"schema id {sid} must not be negative")
            if ".." in Path(name).parts:
                raise ValueError(f"schema file {name!r} must stay inside the schemas folder")
        return self


class DataProductSpec(SpecModel):
    """One data product: a topic, its owner, schema, key, event time, quality and sinks."""

    name: str
    owner: str
    description: str = ""
    topic: str
    format: Literal["json", "cloudevents", "avro", "protobuf"] = "json"
    # A field name or a list of them (`_key_list`); the JSON schema says so for `dg check yaml`.
    key: Annotated[list[str], WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})] = \
        Field(default_factory=list)
    fields: list[FieldSpec]
    event_time: EventTimeSpec
    partitioning: PartitioningSpec
    trigger: TriggerSpec = TriggerSpec()
    sinks: SinksSpec = SinksSpec()
    quality: QualitySpec = QualitySpec()
    cloudevents: CloudEventsSpec = CloudEventsSpec()
    flow: FlowSpec = FlowSpec()
    inbound: InboundSpec | None = None  # other organisations push CloudEvents to it (docs/flow.md)
    schemas: SchemaSpec | None = None  # avro/protobuf: where the writer schemas come from
    tags: dict[str, str] = Field(default_factory=dict)
    # Products the code location computes from this one (examples/derived.py builds each name it
    # knows; an unknown one fails when the definitions load): declared here, never wired by name.
    derived: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not IDENTIFIER.match(v):
            raise ValueError(f"product name {v!r} must match {IDENTIFIER.pattern}")
        return v

    @field_validator("derived")
    @classmethod
    def _derived(cls, v: list[str]) -> list[str]:
        for name in v:
            if not IDENTIFIER.match(name):
                raise ValueError(f"derived product name {name!r} must match {IDENTIFIER.pattern}")
        if len(set(v)) < len(v):
            raise ValueError("a derived product is named twice")
        return v

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not TOPIC_NAME.match(v) or v in (".", ".."):
            raise ValueError(f"topic {v!r} is not a legal Kafka topic name ([A-Za-z0-9._-], 1-249 chars)")
        return v

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str) -> str:
        # Dagster owners are e-mail addresses or team:name.
        if not (re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", v) or re.match(r"^team:[A-Za-z0-9_.-]+$", v)):
            raise ValueError(f"owner {v!r} must be an e-mail address or 'team:<name>'")
        return v

    @field_validator("key", mode="before")
    @classmethod
    def _key_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _cross_field(self) -> DataProductSpec:
        names = [f.name for f in self.fields]
        if not names:
            raise ValueError("fields must list at least one field")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"fields are declared twice: {', '.join(dupes)}")
        reserved = sorted(set(names) & RESERVED_COLUMNS)
        if reserved:
            raise ValueError(f"field names {reserved} are reserved for provenance columns")
        for k in self.key:
            if k not in names:
                raise ValueError(f"key field {k!r} is not declared in fields (declared: {', '.join(names)})")
        if self.event_time.source == "field":
            et = self.field(self.event_time.field)
            if et is None:
                raise ValueError(f"event_time.field {self.event_time.field!r} is not declared in fields")
            if et.type not in ("timestamp", "int64"):
                raise ValueError(
                    f"event_time.field {et.name!r} has type {et.type!r}; expected timestamp "
                    "(ISO-8601) or int64 (epoch milliseconds)"
                )
        db = self.sinks.database
        if db is not None:
            if db.enabled and not self.key:
                raise ValueError("sinks.database needs a key: set `key` to the field(s) that identify a row")
            if db.deletes == "tombstone" and not self.key:
                raise ValueError("sinks.database.deletes: tombstone needs a key")
            if db.version != "offset" and db.version not in names:
                raise ValueError(
                    f"sinks.database.version {db.version!r} must be 'offset' or a declared field"
                )
        for field_name in self.flow.attributes:
            if field_name not in names:
                raise ValueError(f"flow.attributes: {field_name!r} is not declared in fields")
        if self.inbound is not None:
            if self.format != "cloudevents":
                raise ValueError("inbound: events pushed by other organisations land as format: cloudevents")
            if not self.cloudevents.dedupe_on_id:
                raise ValueError(
                    "inbound needs cloudevents.dedupe_on_id: true: a sender retries, and its copies of an "
                    "event must land once"
                )
        if self.format in ("avro", "protobuf") and self.schemas is None:
            raise ValueError(f"format: {self.format} needs a `schemas` section (schemas.source: registry or files)")
        if self.format not in ("avro", "protobuf"):
            if self.schemas is not None:
                raise ValueError("`schemas` applies to format: avro or protobuf")
            if any(f.path for f in self.fields):
                raise ValueError("a field's `path` applies to format: avro or protobuf")
        if self.format != "cloudevents":
            if self.event_time.source == "ce_time":
                raise ValueError("event_time.source 'ce_time' needs format: cloudevents")
            if self.cloudevents.dedupe_on_id:
                raise ValueError("cloudevents.dedupe_on_id needs format: cloudevents")
            if self.cloudevents.data_layout != "record":
                raise ValueError("cloudevents.data_layout needs format: cloudevents")
        return self

    def field(self, name: str | None) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def table_name(self) -> str:
        db = self.sinks.database
        return (db.table if db and db.table else None) or self.name

    @property
    def consumer_group(self) -> str:
        return f"flowsuite.{self.name}"

    @property
    def deletes_enabled(self) -> bool:
        db = self.sinks.database
        return bool(db and db.enabled and db.deletes == "tombstone")

    def arrow_schema(self) -> pa.Schema:
        """The product's value columns, in declaration order (provenance columns excluded)."""
        return pa.schema([pa.field(f.name, f.arrow_type, nullable=True) for f in self.fields])


# --- loading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecProblem:
    path: Path
    location: str  # dotted field path, or "" for the whole file
    message: str

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return f"{self.path}{where}: {self.message}"


class SpecError(TerminalError):
    """One or more specs are invalid; str() lists every problem, one per line."""

    def __init__(self, problems: list[SpecProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _location(loc: tuple[Any, ...], data: Any) -> str:
    """Render a pydantic error location, naming list items by their `name` when they have one."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and item < len(node) and isinstance(node[item], dict) else None
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]" + (f"({name})" if name else "")]
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)


def problems_from_validation(path: Path, exc: ValidationError, data: Any,
                             discriminator: str | None = None, tags: Sequence[str] = ()) -> list[SpecProblem]:
    """Every error as a problem naming the file and field. `discriminator`: the data was
    validated as a discriminated union on that field, whose values are `tags` (pydantic puts
    the tag first in each location; the reader wrote no such level, so it is dropped)."""
    problems = []
    for err in exc.errors():
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if discriminator is not None:
            if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
                got = "is required but missing" if err["type"] == "union_tag_not_found" else f"got {err['ctx']['tag']!r}"
                problems.append(SpecProblem(path, discriminator, f"{got}; expected one of {', '.join(tags)}"))
                continue
            loc = loc[1:]
        if err["type"] == "missing":
            msg = "is required but missing"
        elif err["type"] == "extra_forbidden":
            msg = "is not a known setting (check its spelling and indentation)"
        elif err["type"] == "literal_error":
            msg = f"got {err.get('input')!r}; {msg.lower()}"
        problems.append(SpecProblem(path, _location(loc, data), msg))
    return problems


def parse_spec_file(path: Path, checks: Sequence[SpecCheck] = ()) -> DataProductSpec:
    """Parse one spec file; raise SpecError listing every problem in it (`checks` as in
    `load_specs`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecProblem(path, "", f"cannot read the file: {exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecProblem(path, where, f"is not valid YAML: {problem}")]) from None
    return parse_spec_data(path, data, checks=checks)


def parse_spec_data(path: Path, data: Any, name: str | None = None, prefix: str = "",
                    checks: Sequence[SpecCheck] = ()) -> DataProductSpec:
    """Validate already-read spec data from `path`; raise SpecError listing every problem.

    The one loader behind both front doors: `dataproducts/<name>.yaml` (through
    `parse_spec_file`) and a Dagster component's `defs.yaml` (flowsuite/component.py), whose
    spec sits under `attributes` (`prefix`, put before every location) and whose product is
    named after its folder (`name`: filled in when the data has none, else it must match).
    Without `name` the file name is the product's name."""
    def located(problems: list[SpecProblem]) -> list[SpecProblem]:
        if not prefix:
            return problems
        return [SpecProblem(p.path, f"{prefix}.{p.location}" if p.location else prefix, p.message) for p in problems]

    if not isinstance(data, dict):
        raise SpecError(located([SpecProblem(path, "", f"expected a mapping of settings, got {type(data).__name__}")]))
    if name is not None and "name" not in data:
        data = {"name": name, **data}
    try:
        spec = DataProductSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(located(problems_from_validation(path, exc, data))) from None
    problems = located(_extra_checks(path, spec, checks, name=name))
    if problems:
        raise SpecError(problems)
    return spec


# A check of a part of a spec pydantic cannot check, such as expectation types and kwargs
# (quality.expectations.spec_checks): (location, message) pairs, none when the spec is fine.
# Callers pass them to `load_specs`; the engine knows none itself (quality/ sits above it).
SpecCheck = Callable[["DataProductSpec"], Iterable[tuple[str, str]]]


def _extra_checks(path: Path, spec: DataProductSpec, checks: Sequence[SpecCheck] = (),
                  name: str | None = None) -> list[SpecProblem]:
    problems = []
    if name is not None:
        if spec.name != name:
            problems.append(SpecProblem(path, "name", f"{spec.name!r} must match the folder name {name!r}"))
    elif path.stem != spec.name:
        problems.append(SpecProblem(path, "name", f"{spec.name!r} must match the file name {path.stem!r}"))
    for check in checks:
        problems.extend(SpecProblem(path, loc, msg) for loc, msg in check(spec))
    if spec.schemas is not None and spec.schemas.source == "files":  # avro/protobuf schema files
        folder = path.parent / "schemas"
        for sid, name in spec.schemas.files.items():
            if not (folder / name).is_file():
                problems.append(SpecProblem(path, f"schemas.files.{sid}", f"schema file {folder / name} does not exist"))
    return problems


def load_specs(products_dir: Path, checks: Sequence[SpecCheck] = ()) -> list[DataProductSpec]:
    """Every `*.yaml`/`*.yml` spec in the folder, sorted by name; SpecError lists all problems.

    `checks` add what pydantic cannot see; production callers pass
    `quality.expectations.spec_checks()` (or call `quality.expectations.load_checked_specs`),
    so a bad expectation is a spec error wherever specs load."""
    if not products_dir.is_dir():
        raise SpecError([SpecProblem(products_dir, "", "the data products folder does not exist")])
    parsed: list[tuple[DataProductSpec, Path]] = []
    problems: list[SpecProblem] = []
    for path in sorted([*products_dir.glob("*.yaml"), *products_dir.glob("*.yml")]):
        try:
            parsed.append((parse_spec_file(path, checks), path))
        except SpecError as exc:
            problems.extend(exc.problems)
    seen: dict[str, Path] = {}
    topics: dict[str, Path] = {}
    for spec, path in parsed:
        if spec.name in seen:
            problems.append(SpecProblem(path, "name", f"{spec.name!r} is already defined in {seen[spec.name]}"))
        seen[spec.name] = path
        if spec.topic in topics:
            problems.append(
                SpecProblem(path, "topic", f"topic {spec.topic!r} is already owned by {topics[spec.topic]}")
            )
        topics[spec.topic] = path
    if problems:
        raise SpecError(problems)
    return sorted((spec for spec, _ in parsed), key=lambda s: s.name)
