"""Metadata that links a product's assets to each other and to the lake, for the Dagster UI.

The landing and hourly assets keep their own run metadata (rows, files, offsets, hours,
lag); these helpers add what lets a person move on from there: where the data is
(`dagster/uri`, the lake path a batch job opens), and the product's other assets as links
(`/assets/<product>/<name>` is the UI's own route, so the links work in any deployment).
Called with one line from assets/landing.py and assets/hourly.py:

    metadata.update(landing_links(spec, lake, result.hours))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dagster as dg

from connectors.lake import Lake, hour_dir
from connectors.spec import DataProductSpec

ASSET_NAMES = ("landed", "hourly", "warehouse")
_WHAT = {
    "landed": "every record as landed from the topic, in small files per run",
    "hourly": "closed hours compacted into few large sorted files, with `_SUCCESS`",
    "warehouse": "the latest record per key, as a database table",
}


def _asset_names(spec: DataProductSpec) -> list[str]:
    db = spec.sinks.database
    has_table = db is not None and db.enabled
    return [n for n in ASSET_NAMES if n != "warehouse" or has_table]


def related_assets_md(spec: DataProductSpec, current: str, lake: Lake | None = None) -> str:
    """A markdown list of the product's assets (the current one in bold), linked in the UI."""
    lines = [f"**{spec.name}** (topic `{spec.topic}`, owner {spec.owner}):", ""]
    for name in _asset_names(spec):
        label = f"{spec.name}/{name}"
        link = f"**{label}**" if name == current else f"[{label}](/assets/{spec.name}/{name})"
        lines.append(f"- {link}: {_WHAT[name]}")
    if lake is not None:
        lines += ["", f"Lake: `{lake.uri(spec.name)}/dt=…/hour=…/`"]
        lines.append(f"Live files: `flowsuite read {spec.name} --hour <YYYY-MM-DD-HH>`")
    return "\n".join(lines)


def _hour_uris(lake: Lake, spec: DataProductSpec, hours: Iterable[str]) -> list[str]:
    return [lake.uri(hour_dir(spec.name, h)) for h in sorted(hours)]


def landing_links(spec: DataProductSpec, lake: Lake, hours: Iterable[str]) -> dict[str, Any]:
    """`dagster/uri` of the product's lake folder, the hour folders written, related assets."""
    uris = _hour_uris(lake, spec, hours)
    meta: dict[str, Any] = {
        "dagster/uri": dg.MetadataValue.path(lake.uri(spec.name)),
        "related": dg.MetadataValue.md(related_assets_md(spec, "landed", lake)),
    }
    if uris:
        meta["hour_folders"] = dg.MetadataValue.md("\n".join(f"- `{u}`" for u in uris[:48]))
    return meta


def hourly_links(spec: DataProductSpec, lake: Lake, hours: Iterable[str]) -> dict[str, Any]:
    """`dagster/uri` of the hour folder (one hour) or the product's, and related assets."""
    uris = _hour_uris(lake, spec, hours)
    meta: dict[str, Any] = {
        "dagster/uri": dg.MetadataValue.path(uris[0] if len(uris) == 1 else lake.uri(spec.name)),
        "related": dg.MetadataValue.md(related_assets_md(spec, "hourly", lake)),
    }
    if len(uris) == 1:
        meta["read_with"] = dg.MetadataValue.md(
            f"```sql\nSELECT * FROM read_parquet('{uris[0]}/*.parquet')\n```\n"
            f"or `flowsuite read {spec.name} --hour {sorted(hours)[0]}` (exactly the live files)"
        )
    return meta
