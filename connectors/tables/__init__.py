"""Open table formats over the lake: each product's sealed hours as an Apache Iceberg table.

`iceberg` holds the catalog and the table (schema, partitioning, reading); `publish` registers
sealed hours in it exactly once, expires snapshots and deletes the files they no longer need.
Dagster-free, like the rest of `connectors`.
"""

from connectors.tables.iceberg import (
    CATALOG_NAME,
    NAMESPACE,
    IcebergTables,
    catalog_url,
    table_identifier,
)
from connectors.tables.publish import (
    PublishResult,
    defer_replaced,
    expire,
    last_published_seq,
    publish_lag_hours,
    publish_sealed_hours,
)

__all__ = [
    "CATALOG_NAME",
    "NAMESPACE",
    "IcebergTables",
    "PublishResult",
    "catalog_url",
    "defer_replaced",
    "expire",
    "last_published_seq",
    "publish_lag_hours",
    "publish_sealed_hours",
    "table_identifier",
]
