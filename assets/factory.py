"""Everything Dagster knows about one data product, built from its spec.

`product_definitions(spec)` merges the parts each package contributes — the landed asset
(assets/landing.py), the warehouse table (assets/warehouse.py, when the spec has a database
sink), the hourly compaction (assets/hourly.py) and the standalone quality checks
(quality/checks.py) — then builds the product's ingest job over
the landed and warehouse assets and the offset sensor that triggers it. A part whose module is
not installed is skipped, so the product still loads.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

import dagster as dg

from assets.landing import build_landing_definitions, landed_key
from connectors.spec import DataProductSpec
from orchestration.jobs import ingest_job
from sensors.offsets import build_offset_sensor

log = logging.getLogger(__name__)


def _optional_builder(module: str, name: str) -> Callable[[DataProductSpec], dg.Definitions] | None:
    """A part's builder, or None when its module is not there (yet)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # the module exists but one of its imports is missing: a bug
            raise
        return None
    return getattr(mod, name, None)


def warehouse_key(spec: DataProductSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.name, "warehouse"])


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
        build_warehouse = _optional_builder("assets.warehouse", "build_warehouse_definitions")
        if build_warehouse is not None:
            parts.append(build_warehouse(spec))
    for module, builder in (
        ("assets.hourly", "build_hourly_definitions"),
        ("assets.table", "build_table_definitions"),  # sealed hours as an Iceberg table
        ("quality.checks", "build_quality_definitions"),  # freshness and volume checks
        ("assets.sources", "build_source_definitions"),  # a legacy table published to the topic
    ):
        build = _optional_builder(module, builder)
        if build is not None:
            parts.append(build(spec))

    # A source connector's <P>/published writes the topic: it is drawn as the landing's parent.
    keys = set().union(*(_asset_keys(d) for d in parts))
    writer = dg.AssetKey([spec.name, "published"])
    parts.append(build_landing_definitions(spec, upstream=writer if writer in keys else None))
    keys.add(landed_key(spec))
    ingest_keys = [k for k in (landed_key(spec), warehouse_key(spec)) if k in keys]
    job = ingest_job(spec, ingest_keys)
    return dg.Definitions.merge(*parts, dg.Definitions(jobs=[job], sensors=[build_offset_sensor(spec, job)]))
