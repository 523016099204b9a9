"""Jobs of each data product."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dagster as dg

from connectors.spec import DataProductSpec


def ingest_job_name(spec: DataProductSpec) -> str:
    return f"{spec.name}_ingest"


def ingest_job(spec: DataProductSpec, asset_keys: Iterable[dg.AssetKey]) -> Any:  # an unresolved asset job (its class is not public)
    """`<P>_ingest`: land the new offset ranges, then whatever follows them in the same run
    (the warehouse UPSERT, and the checks of both). The offset sensor targets it."""
    return dg.define_asset_job(
        ingest_job_name(spec),
        selection=dg.AssetSelection.assets(*asset_keys),
        description=f"Land new records of topic {spec.topic} (and deliver them downstream).",
        tags={"flowsuite/product": spec.name, "flowsuite/kind": "ingest"},
    )
