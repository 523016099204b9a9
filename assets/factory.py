"""Everything Dagster knows about one data product, built from its spec.

`product_definitions(spec)` merges the parts each package contributes — the landed asset
(assets/landing.py), the warehouse table (assets/warehouse.py, when the spec has a database
sink), the hourly compaction (assets/hourly.py) and the standalone quality checks
(quality/checks.py) — then builds the product's ingest job over
the landed and warehouse assets and the offset sensor that triggers it. Dagster freshness
policies derived from the spec go on `P/landed` and `P/hourly` (quality/freshness.py). Every part is imported
here explicitly: a part that fails to import fails the code location.
"""

from __future__ import annotations

import dagster as dg

from assets.hourly import build_hourly_definitions
from assets.inbound import build_inbound_definitions, inbound_key
from assets.landing import build_landing_definitions, landed_key
from assets.sources import build_source_definitions
from assets.table import build_table_definitions
from assets.warehouse import build_warehouse_definitions
from connectors.spec import DataProductSpec
from orchestration.jobs import ingest_job
from orchestration.keys import published_key, warehouse_key
from quality.checks import build_quality_definitions
from quality.freshness import health_checks, with_freshness_policies
from sensors.offsets import build_offset_sensor


def _asset_keys(defs: dg.Definitions) -> set[dg.AssetKey]:
    keys: set[dg.AssetKey] = set()
    for a in defs.assets or []:
        if isinstance(a, dg.AssetsDefinition):
            keys |= set(a.keys)
        elif isinstance(a, dg.AssetSpec):
            keys.add(a.key)
    return keys


def product_definitions(spec: DataProductSpec) -> dg.Definitions:
    """Assets, checks, jobs, sensors and schedules of one data product."""
    parts = []
    db = spec.sinks.database
    if db is not None and db.enabled:
        parts.append(build_warehouse_definitions(spec))
    parts.append(build_hourly_definitions(spec))
    parts.append(build_table_definitions(spec))  # sealed hours as an Iceberg table
    parts.append(build_quality_definitions(spec))  # freshness and volume checks
    parts.append(dg.Definitions(asset_checks=health_checks(spec)))  # hours_sealed, product_health
    parts.append(build_source_definitions(spec))  # a legacy table published to the topic
    parts.append(build_inbound_definitions(spec))  # other organisations push to the topic

    # What writes the topic — a source connector's <P>/published, or the organisations pushing
    # to <P>/inbound — is drawn as the landing's parent.
    keys = set().union(*(_asset_keys(d) for d in parts))
    writer = next((k for k in (published_key(spec), inbound_key(spec)) if k in keys), None)
    parts.append(build_landing_definitions(spec, upstream=writer))
    keys.add(landed_key(spec))
    ingest_keys = [k for k in (landed_key(spec), warehouse_key(spec)) if k in keys]
    job = ingest_job(spec, ingest_keys)
    defs = dg.Definitions.merge(*parts, dg.Definitions(jobs=[job], sensors=[build_offset_sensor(spec, job)]))
    return with_freshness_policies(spec, defs)  # Dagster's own freshness state of landed and hourly
