"""The code location `flowsuite`: one entry that assembles every data product.

The list of specs in FLOWSUITE_PRODUCTS_DIR drives everything: each spec becomes its assets,
checks, ingest job and offset sensor (assets/factory.py); cross-cutting schedules and the
shared resource are added once here.

Products come through two doors with one loader (connectors.spec): the YAML files of
FLOWSUITE_PRODUCTS_DIR, and the Dagster components of the defs folder (orchestration/defs/,
`flowsuite.DataProduct`, loaded as `dg.load_from_defs_folder` does). A product name or topic
declared through both is a SpecError naming both files.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets.factory import product_definitions
from assets.flow import flow_definitions
from connectors.settings import load_settings
from connectors.spec import DataProductSpec, SpecError, SpecProblem
from examples.derived import derived_definitions
from flowsuite.component import DataProduct, shared_flowsuite_resource
from orchestration.schedules import build_schedules
from quality.expectations import load_checked_specs


def load_products() -> list[DataProductSpec]:
    """Every spec, checked (quality rules included); SpecError lists every problem."""
    return load_checked_specs(load_settings().products_dir)


def example_definitions(specs: list[DataProductSpec]) -> list[dg.Definitions]:
    """Products derived from others, as the specs declare them (`derived:`; examples/derived.py)."""
    return derived_definitions(specs)


PROJECT = Path(__file__).resolve().parent  # inside the dg project: pyproject.toml's [tool.dg]


def check_doors(files: list[tuple[DataProductSpec, Path]], components: list[DataProduct]) -> None:
    """A product name or topic declared both as a YAML file and as a component is an error."""
    names = {s.name: path for s, path in files}
    topics = {s.topic: path for s, path in files}
    problems = []
    for c in components:
        if c.spec.name in names:
            problems.append(SpecProblem(c.path, "attributes.name", f"{c.spec.name!r} is already defined in {names[c.spec.name]}"))
        if c.spec.topic in topics:
            problems.append(SpecProblem(c.path, "attributes.topic", f"topic {c.spec.topic!r} is already owned by {topics[c.spec.topic]}"))
        names.setdefault(c.spec.name, c.path)
        topics.setdefault(c.spec.topic, c.path)
    if problems:
        raise SpecError(problems)


def component_tree() -> dg.ComponentTree | None:
    """The defs folder as `dg.load_from_defs_folder(...)` builds it, or None when it declares
    nothing (the repository ships no component): Dagster's tree then has nothing to add, and
    building it would read the instance's defs state for nothing."""
    folder = PROJECT / "defs"
    declared = [p for p in folder.rglob("*") if p.name in ("defs.yaml", "defs.yml")
                or (p.suffix == ".py" and p.name != "__init__.py")]
    return dg.ComponentTree.for_project(PROJECT) if declared else None


@dg.definitions
def defs() -> dg.Definitions:
    specs = load_products()
    products_dir = load_settings().products_dir
    tree = component_tree()
    components = tree.get_all_components(of_type=DataProduct) if tree else []
    check_doors([(s, products_dir / f"{s.name}.yaml") for s in specs], components)
    return dg.Definitions.merge(
        *(product_definitions(spec) for spec in specs),
        *example_definitions(specs + [c.spec for c in components]),
        *(flow_definitions(spec) for spec in specs),
        tree.build_defs() if tree else dg.Definitions(),
        dg.Definitions(
            schedules=list(build_schedules(specs)),
            resources={"flowsuite": shared_flowsuite_resource()},
            executor=dg.multiprocess_executor,
        ),
    )
