"""The declaration of a change-data-capture source: `dataproducts/sources/<name>.yaml`, `mode: cdc`.

```yaml
name: shop_orders
product: orders
mode: cdc
connection:
  url: "postgresql://cdc:${SHOP_PG_PASSWORD}@db.internal:5432/shop"
table: orders            # one table per source file
schema: public
publication: flowsuite_shop_orders   # created FOR TABLE public.orders when missing
slot: flowsuite_shop_orders          # a logical slot with the pgoutput plugin, created when missing
max_retained_wal: 1GB                # the Dagster check fails above this
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from connectors.errors import TransientError
from connectors.sources.common import SourceSpecModel, resolve_connection_url, sql_name
from connectors.spec import SpecModel, parse_duration


class CdcError(TransientError, RuntimeError):
    """Capture cannot go on; nothing unacknowledged was recorded or confirmed."""


class SnapshotNeededError(CdcError):
    """Capture cannot go on from its position until the source takes a new snapshot (its slot
    is gone, or a column changed type): retrying meets the same answer, so it is terminal. The
    faces say how to reset a source (the CLI: `flowsuite cdc reset NAME`)."""

    transient = False

    def __init__(self, source: str, message: str):
        self.source = source
        super().__init__(message)


class CdcConnectionSpec(SpecModel):
    url: str = Field(description="postgresql:// URL; ${VAR} and ${VAR:-default} come from the environment")


class CdcCloudEventsSpec(SpecModel):
    source: str | None = None  # ce_source; default /flowsuite/cdc/<name>
    type: str | None = None  # ce_type; default flowsuite.cdc.<table>.change

_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")  # what PostgreSQL allows for a replication slot
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|GB|TB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def parse_size(value: Any) -> int:
    """'512MB', '1GB', or a number of bytes → bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"expected a size such as '512MB' or '2GB', got {value!r}")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "B").lower()])


class CdcSourceSpec(SourceSpecModel):
    """Change data capture of one PostgreSQL table into one CloudEvents data product."""

    name: str
    product: str
    mode: Literal["cdc"]
    owner: str | None = None
    description: str = ""
    connection: CdcConnectionSpec
    table: str
    table_schema: str = Field(default="public", alias="schema")
    publication: str | None = None
    slot: str | None = None
    key: list[str] = Field(default_factory=list)  # default: the product's key
    max_batch_changes: int = Field(default=5000, ge=1)  # changes published per acknowledge → record step
    idle_feedback: timedelta = timedelta(seconds=1)  # confirm the server's position this often when idle
    max_retained_wal: int = Field(default=1024**3)  # bytes; the Dagster check fails above it
    poll_interval: timedelta = timedelta(seconds=30)  # the sensor's minimum interval
    topic_partitions: int = Field(default=1, ge=1, le=1)  # one: a truncate orders against every key
    cloudevents: CdcCloudEventsSpec = CdcCloudEventsSpec()

    @field_validator("table", "table_schema", "publication")
    @classmethod
    def _sql_name(cls, v: str | None) -> str | None:
        return sql_name(v)

    @field_validator("slot")
    @classmethod
    def _slot(cls, v: str | None) -> str | None:
        if v is not None and not _SLOT_NAME.match(v):
            raise ValueError(f"slot name {v!r} may hold only lower-case letters, digits and underscores (1-63)")
        return v

    @field_validator("idle_feedback", "poll_interval", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)

    @field_validator("max_retained_wal", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)

    @property
    def slot_name(self) -> str:
        return self.slot or f"flowsuite_{self.name}"

    @property
    def publication_name(self) -> str:
        return self.publication or f"flowsuite_{self.name}"

    @property
    def qualified_table(self) -> str:
        return f"{self.table_schema}.{self.table}"

    @property
    def ce_source(self) -> str:
        return self.cloudevents.source or f"/flowsuite/cdc/{self.name}"

    @property
    def ce_type(self) -> str:
        return self.cloudevents.type or f"flowsuite.cdc.{self.table}.change"

    def resolved_url(self, env: Mapping[str, str] | None = None) -> str:
        """The connection URL with ${VAR} / ${VAR:-default} filled in from the environment; an
        unset variable raises UnsetVariableError (terminal)."""
        return resolve_connection_url(self.connection.url, env, f"the connection URL of source {self.name}")
