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
from examples.derived import derived_definitions
from orchestration.resources import default_flowsuite_resource
from orchestration.schedules import build_schedules
from quality.expectations import load_checked_specs


def load_products() -> list[DataProductSpec]:
    """Every spec, checked (quality rules included); SpecError lists every problem."""
    return load_checked_specs(load_settings().products_dir)


def example_definitions(specs: list[DataProductSpec]) -> list[dg.Definitions]:
    """Products derived from others, as the specs declare them (`derived:`; examples/derived.py)."""
    return derived_definitions(specs)


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
