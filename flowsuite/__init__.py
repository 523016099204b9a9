"""flowsuite's Dagster Components: a data product declared in a `defs.yaml` (`dg` CLI).

`flowsuite.DataProduct` is the component type; `dg scaffold defs flowsuite.DataProduct <name>`
writes a product folder, `dg list defs` / `dg check defs` load it (docs/dagster.md). This
package is the `dagster_dg_cli.registry_modules` entry point of the distribution.
"""

from flowsuite.component import DataProduct, DataProductScaffolder, shared_flowsuite_resource

__all__ = ["DataProduct", "DataProductScaffolder", "shared_flowsuite_resource"]
