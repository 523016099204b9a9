"""The project's defs folder (`[tool.dg.project] defs_module`): one sub-folder per data product
declared as a Dagster component, `<name>/defs.yaml` of type `flowsuite.DataProduct`.

`dg scaffold defs flowsuite.DataProduct <name>` writes one here; `orchestration.definitions`
loads this folder next to `dataproducts/*.yaml` (docs/dagster.md). The repository ships none:
its products are the YAML files, and a name or topic may be declared through only one door.
"""
