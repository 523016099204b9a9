"""The code location `flowsuite`: one entry that assembles every data product.

The list of specs in FLOWSUITE_PRODUCTS_DIR drives everything: each spec becomes its assets,
checks, ingest job and offset sensor (assets/factory.py); cross-cutting schedules and the
shared resource are added once here.
"""

from __future__ import annotations

import importlib

import dagster as dg

from assets.factory import product_definitions
from assets.flow import flow_definitions
from connectors.spec import DataProductSpec, load_specs
from orchestration.resources import default_flowsuite_resource
from orchestration.settings import load_settings


def _register_spec_checks() -> None:
    try:
        from quality.expectations import register_spec_checks
    except ImportError:
        return
    register_spec_checks()


def _schedules(specs: list[DataProductSpec]) -> list:
    try:
        schedules = importlib.import_module("orchestration.schedules")
    except ModuleNotFoundError as exc:
        if exc.name != "orchestration.schedules":
            raise
        return []
    return list(schedules.build_schedules(specs))


def load_products() -> list[DataProductSpec]:
    """Every spec, checked (quality rules included); SpecError lists every problem."""
    _register_spec_checks()
    return load_specs(load_settings().products_dir)


@dg.definitions
def defs() -> dg.Definitions:
    specs = load_products()
    return dg.Definitions.merge(
        *(product_definitions(spec) for spec in specs),
        *(flow_definitions(spec) for spec in specs),
        dg.Definitions(
            schedules=_schedules(specs),
            resources={"flowsuite": default_flowsuite_resource()},
            executor=dg.multiprocess_executor,
        ),
    )
