"""The code location `flowsuite`: one entry that assembles every data product.

The list of specs in FLOWSUITE_PRODUCTS_DIR drives everything: each spec becomes its assets,
checks, ingest job and offset sensor (assets/factory.py); cross-cutting schedules and the
shared resource are added once here.
"""

from __future__ import annotations

import dagster as dg

from assets.factory import product_definitions
from assets.flow import flow_definitions
from connectors.settings import load_settings
from connectors.spec import DataProductSpec
from examples.engagement import SOURCE_PRODUCT as ENGAGEMENT_SOURCE
from examples.engagement_assets import build_engagement_definitions
from orchestration.resources import default_flowsuite_resource
from orchestration.schedules import build_schedules
from quality.expectations import load_checked_specs


def load_products() -> list[DataProductSpec]:
    """Every spec, checked (quality rules included); SpecError lists every problem."""
    return load_checked_specs(load_settings().products_dir)


def example_definitions(specs: list[DataProductSpec]) -> list[dg.Definitions]:
    """Products derived from others (examples/): partner_engagement counts the clicks product."""
    by_name = {s.name: s for s in specs}
    if ENGAGEMENT_SOURCE not in by_name:
        return []
    return [build_engagement_definitions(by_name[ENGAGEMENT_SOURCE])]


@dg.definitions
def defs() -> dg.Definitions:
    specs = load_products()
    return dg.Definitions.merge(
        *(product_definitions(spec) for spec in specs),
        *example_definitions(specs),
        *(flow_definitions(spec) for spec in specs),
        dg.Definitions(
            schedules=list(build_schedules(specs)),
            resources={"flowsuite": default_flowsuite_resource()},
            executor=dg.multiprocess_executor,
        ),
    )
