"""The `flowsuite.DataProduct` component: a data product declared in a Dagster `defs.yaml`.

```yaml
type: flowsuite.DataProduct
attributes:       # exactly a dataproducts/<name>.yaml, without `name` (the folder's name)
  owner: team:ads
  topic: clicks
  ...
```

Its attributes *are* the spec: the component's attribute model lets any mapping through, and
the one spec loader (`connectors.spec.parse_spec_data`, with the expectation checks of
`quality.expectations.spec_checks`) validates it, so a bad spec is reported as
`<folder>/defs.yaml at attributes.<field>: <what was expected>`, the same messages as
`dataproducts/*.yaml`. Dagster's templates (`{{ env.NAME }}`) work in any string attribute.
No second spec format: what the component builds is what
`orchestration.definitions` builds for a YAML file (`assets.factory.product_definitions`,
`assets.flow.flow_definitions`), plus its own compaction schedule `hourly_compaction_<name>`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import BaseModel, ConfigDict

from connectors.spec import DataProductSpec, parse_spec_data
from orchestration.resources import FlowsuiteResource, default_flowsuite_resource

TYPE_NAME = "flowsuite.DataProduct"
DEFS_FILE = "defs.yaml"
RESOURCE_KEY = "flowsuite"

_RESOURCES: dict[str, FlowsuiteResource] = {}


def shared_flowsuite_resource() -> FlowsuiteResource:
    """The `flowsuite` resource of the process's settings, one instance per distinct settings.

    Every product (each component and definitions.py) hands Dagster this same object, since
    `Definitions.merge` refuses two different objects under one resource key."""
    from connectors.settings import load_settings

    settings = load_settings()
    dumped = settings.model_dump(mode="python")
    reveal = lambda v: v.get_secret_value() if hasattr(v, "get_secret_value") else str(v)  # noqa: E731
    key = hashlib.sha256(json.dumps(dumped, default=reveal, sort_keys=True).encode()).hexdigest()
    if key not in _RESOURCES:
        _RESOURCES[key] = default_flowsuite_resource()
    return _RESOURCES[key]


class DataProductAttributes(BaseModel):
    """Any mapping: the spec loader validates it (one model, one set of messages).

    Its JSON schema, what `dg check yaml` checks a defs.yaml against, is the spec's own
    (`DataProductSpec`) without `name`, the folder's: so `dg check yaml` points at a wrong type,
    a missing required field or an unknown key by line; the checks no schema states (a key
    that names no field, an expectation's kwargs) are the loader's, reported by `dg check defs`."""

    model_config = ConfigDict(extra="allow")

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        schema = DataProductSpec.model_json_schema(*args, **kwargs)
        schema["properties"].pop("name", None)
        schema["required"] = [r for r in schema.get("required", []) if r != "name"]
        schema["title"] = cls.__name__
        return schema


SCAFFOLD = """\
type: {type_name}
# The data product {name}: the attributes are a flowsuite spec (docs/specs.md), exactly as in
# dataproducts/<name>.yaml; its name is this folder's. `dg check defs` validates it.
attributes:
  owner: team:data                # an e-mail address or team:<name>
  description: Events of {name}, one record per event, keyed by id.
  topic: {name}                   # the Kafka topic the product lands
  format: json
  key: id
  fields:
    - {{name: id,         type: string,    required: true, max_length: 64}}
    - {{name: event_time, type: timestamp, required: true, description: when it happened (UTC)}}
  event_time:
    field: event_time
  partitioning:
    start: "-1d"                  # first hour partition: a timestamp, or -<N>d (UTC midnight N days back)
    allowed_lateness: 10m
  trigger:
    min_records: 1000
    max_latency: 5m               # P/landed warns in Dagster's freshness after this
  sinks:
    database:
      table: {name}
  quality:
    freshness:
      max_age: 2h                 # P/landed fails its freshness policy after this
"""


class DataProductScaffolder(dg.Scaffolder):
    """`dg scaffold defs flowsuite.DataProduct <name>`: a product folder with a working defs.yaml."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        folder = Path(request.target_path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DEFS_FILE).write_text(SCAFFOLD.format(type_name=request.type_name, name=folder.name))


def _templated(value: Any, context: dg.ResolutionContext) -> Any:
    """`value` with Dagster's component templates rendered (`{{ env.KAFKA_TOPIC }}`,
    `{{ env.X or 'default' }}`, the scopes a component's YAML has), each at its path, so an
    undefined name is reported by file and line as for any component.

    Only strings that hold a template are rendered: Dagster's native rendering would otherwise
    turn a plain `"1000"` or `"None"` into a number or None, and the spec loader judges types
    as written. The spec's own `${VAR:-default}` (connection URLs) is left to the loader."""
    if isinstance(value, str):
        return context.resolve_value(value) if "{{" in value or "{%" in value else value
    if isinstance(value, dict):
        return {k: _templated(v, context.at_path(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_templated(v, context.at_path(i)) for i, v in enumerate(value)]
    return value


@dg.scaffold_with(DataProductScaffolder)
class DataProduct(dg.Component):
    """A flowsuite data product: landed, hourly and warehouse assets, checks, jobs, sensors."""

    def __init__(self, spec: DataProductSpec, path: Path):
        self.spec = spec
        self.path = path  # the defs.yaml the spec came from (duplicate names/topics name it)

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        return DataProductAttributes

    @classmethod
    def get_spec(cls) -> dg.ComponentTypeSpec:
        return dg.ComponentTypeSpec(
            description="A Kafka topic as a data product: hourly Parquet lake, UPSERT warehouse, quality checks.",
            tags=["kafka", "parquet"],
            produces=["asset", "asset_check", "job", "schedule", "sensor", "resource"],
        )

    @classmethod
    def load(cls, attributes: BaseModel | None, context: dg.ComponentLoadContext) -> DataProduct:
        from quality.expectations import spec_checks

        folder = Path(context.path)
        path = folder / DEFS_FILE if folder.is_dir() else folder
        data: Any = attributes.model_dump() if attributes is not None else {}
        data = _templated(data, context.resolution_context.at_path("attributes"))
        name = folder.name if folder.is_dir() else folder.parent.name
        spec = parse_spec_data(path, data, name=name, prefix="attributes", checks=spec_checks())
        return cls(spec, path)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from assets.factory import product_definitions
        from assets.flow import flow_definitions
        from orchestration.schedules import SCHEDULE_NAME, build_schedule

        return dg.Definitions.merge(
            product_definitions(self.spec),
            flow_definitions(self.spec),
            dg.Definitions(
                schedules=[build_schedule(f"{SCHEDULE_NAME}_{self.spec.name}", [self.spec])],
                resources={RESOURCE_KEY: shared_flowsuite_resource()},
            ),
        )


