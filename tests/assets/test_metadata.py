"""Links between a product's assets and to the lake, as the UI shows them."""

from __future__ import annotations

from pathlib import Path

from assets.metadata import hourly_links, landing_links, related_assets_md
from connectors.lake import Lake
from connectors.spec import load_specs

REPO = Path(__file__).resolve().parents[2]


def _clicks():
    return next(s for s in load_specs(REPO / "dataproducts") if s.name == "clicks")


def test_related_assets_link_the_others_and_bold_the_current(tmp_path):
    spec = _clicks()
    md = related_assets_md(spec, "hourly", Lake(str(tmp_path / "lake")))
    assert "[clicks/landed](/assets/clicks/landed)" in md
    assert "[clicks/warehouse](/assets/clicks/warehouse)" in md
    assert "**clicks/hourly**" in md and "(/assets/clicks/hourly)" not in md
    assert f"`{tmp_path / 'lake' / 'clicks'}/dt=…/hour=…/`" in md


def test_no_warehouse_link_without_a_database_sink():
    spec = _clicks()
    spec = spec.model_copy(update={"sinks": spec.sinks.model_copy(update={"database": None})})
    assert "warehouse" not in related_assets_md(spec, "landed")


def test_uris_point_at_the_hour_folders(tmp_path):
    spec, lake = _clicks(), Lake(str(tmp_path / "lake"))
    landed = landing_links(spec, lake, ["2026-11-26-10", "2026-11-26-09"])
    assert landed["dagster/uri"].value == str(tmp_path / "lake" / "clicks")
    folders = landed["hour_folders"].value
    assert folders.index("hour=09") < folders.index("hour=10")
    one = hourly_links(spec, lake, ["2026-11-26-10"])
    assert one["dagster/uri"].value == str(
        tmp_path / "lake" / "clicks" / "dt=2026-11-26" / "hour=10"
    )
    assert "flowsuite read clicks --hour 2026-11-26-10" in one["read_with"].value
