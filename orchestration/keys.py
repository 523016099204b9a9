"""Every asset key of the code location, built in this one place.

Per data product `P` (DESIGN.md's Dagster surface): `P/landed`, `P/hourly`, `P/warehouse`, and
where the product has them `P/table` (Iceberg), `P/published` (a legacy source publishes it),
`P/inbound` (other organisations send it) and `P/subscriptions` (flow to other organisations);
`legacy/<table>` is the source table a SQL or CDC source reads. The asset factories, checks,
sensors, schedules and the CLI all ask here, so a key's spelling lives once.

A base module: it imports Dagster and the spec models only (tests/test_layering.py).
"""

from __future__ import annotations

import dagster as dg

from connectors.spec import DataProductSpec

LANDED, HOURLY, WAREHOUSE, TABLE = "landed", "hourly", "warehouse", "table"
PUBLISHED, INBOUND, SUBSCRIPTIONS = "published", "inbound", "subscriptions"


def product_key(product: DataProductSpec | str, asset: str) -> dg.AssetKey:
    """`<product>/<asset>`; `product` is a spec or a product's name."""
    name = product if isinstance(product, str) else product.name
    return dg.AssetKey([name, asset])


def landed_key(spec: DataProductSpec | str) -> dg.AssetKey:
    return product_key(spec, LANDED)


def hourly_key(spec: DataProductSpec | str) -> dg.AssetKey:
    return product_key(spec, HOURLY)


def warehouse_key(spec: DataProductSpec | str) -> dg.AssetKey:
    return product_key(spec, WAREHOUSE)


def table_key(spec: DataProductSpec | str) -> dg.AssetKey:
    return product_key(spec, TABLE)


def published_key(spec: DataProductSpec | str) -> dg.AssetKey:
    return product_key(spec, PUBLISHED)


def inbound_key(spec: DataProductSpec | str) -> dg.AssetKey:
    return product_key(spec, INBOUND)


def subscriptions_key(spec: DataProductSpec | str) -> dg.AssetKey:
    return product_key(spec, SUBSCRIPTIONS)


def legacy_key(table: str) -> dg.AssetKey:
    """`legacy/<table>`: the source table a SQL or CDC source reads (drawn upstream of P/published)."""
    return dg.AssetKey(["legacy", table])
