"""`flowsuite.DataProduct`: a defs.yaml's attributes are the spec, checked by the one loader."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from connectors.settings import REPO_ROOT
from connectors.spec import SpecError, parse_spec_file
from flowsuite import DataProduct, shared_flowsuite_resource
from flowsuite.component import SCAFFOLD, TYPE_NAME
from orchestration.definitions import check_doors
from quality.expectations import spec_checks

CLICKS = Path(REPO_ROOT) / "dataproducts" / "clicks.yaml"


def _component_yaml(attributes: dict) -> str:
    return yaml.safe_dump({"type": TYPE_NAME, "attributes": attributes}, sort_keys=False)


def _clicks_attributes() -> dict:
    data = yaml.safe_load(CLICKS.read_text())
    data.pop("name")  # the folder's name
    return data


def _spec_error(exc: BaseException) -> SpecError:
    """The SpecError under Dagster's wrapping (it names the component's place in the tree)."""
    while exc is not None and not isinstance(exc, SpecError):
        exc = exc.__cause__
    assert exc is not None, "no SpecError in the cause chain"
    return exc


def _write(defs: Path, name: str, text: str) -> Path:
    (defs / name).mkdir()
    path = defs / name / "defs.yaml"
    path.write_text(text)
    return path


def test_attributes_are_the_spec_of_a_yaml_product(dg_project):
    root, defs = dg_project()
    _write(defs, "clicks", _component_yaml(_clicks_attributes()))
    tree = dg.ComponentTree.for_project(root)
    [component] = tree.get_all_components(of_type=DataProduct)
    assert component.path == defs / "clicks" / "defs.yaml"
    assert component.spec == parse_spec_file(CLICKS, spec_checks())


def test_the_scaffold_builds_every_part_of_a_product_with_one_shared_resource(dg_project):
    root, defs = dg_project()
    _write(defs, "events", SCAFFOLD.format(type_name=TYPE_NAME, name="events"))
    built = dg.ComponentTree.for_project(root).build_defs()
    keys = {k.to_user_string() for k in built.resolve_all_asset_keys()}
    assert {"events/landed", "events/hourly", "events/warehouse"} <= keys
    checks = {c.name for c in built.resolve_asset_graph().asset_check_keys}
    assert {"hours_sealed", "product_health", "records_accounted"} <= checks
    assert built.resolve_schedule_def("hourly_compaction_events").cron_schedule == "5 * * * *"
    assert built.resolve_sensor_def("events_offsets") is not None
    assert built.resources["flowsuite"] is shared_flowsuite_resource()
    landed = next(s for s in built.resolve_all_asset_specs() if s.key == dg.AssetKey(["events", "landed"]))
    assert landed.freshness_policy is not None and landed.owners == ["team:data"]


def test_a_spec_error_names_the_file_and_field_as_for_dataproducts(dg_project, tmp_path: Path):
    attributes = _clicks_attributes()
    attributes["fields"][5]["type"] = "int65"
    root, defs = dg_project()
    path = _write(defs, "clicks", _component_yaml(attributes))
    with pytest.raises(Exception) as component_error:
        dg.ComponentTree.for_project(root).get_all_components(of_type=DataProduct)
    assert "clicks" in str(component_error.value)  # Dagster's tree marks the failing component
    yaml_file = tmp_path / "clicks.yaml"
    yaml_file.write_text(yaml.safe_dump({"name": "clicks", **attributes}, sort_keys=False))
    with pytest.raises(SpecError) as file_error:
        parse_spec_file(yaml_file, spec_checks())
    [component_problem], [file_problem] = _spec_error(component_error.value).problems, file_error.value.problems
    assert component_problem.path == path
    assert component_problem.location == "attributes.fields[5](cost_micros).type"
    assert component_problem.location == "attributes." + file_problem.location
    assert component_problem.message == file_problem.message
    assert "'int65'" in component_problem.message
    assert str(component_problem).startswith(f"{path} at attributes.fields[5](cost_micros).type: ")


def test_a_name_other_than_the_folder_is_an_error(dg_project):
    root, defs = dg_project()
    path = _write(defs, "events", SCAFFOLD.format(type_name=TYPE_NAME, name="events").replace(
        "attributes:\n", "attributes:\n  name: other\n", 1))
    with pytest.raises(Exception) as err:
        dg.ComponentTree.for_project(root).get_all_components(of_type=DataProduct)
    assert str(_spec_error(err.value)) == f"{path} at attributes.name: 'other' must match the folder name 'events'"


def test_a_product_through_both_doors_names_both_files(dg_project):
    root, defs = dg_project()
    attributes = _clicks_attributes()
    path = _write(defs, "clicks", _component_yaml(attributes))
    [component] = dg.ComponentTree.for_project(root).get_all_components(of_type=DataProduct)
    with pytest.raises(SpecError) as err:
        check_doors([(parse_spec_file(CLICKS, spec_checks()), CLICKS)], [component])
    assert str(err.value).splitlines() == [
        f"{path} at attributes.name: 'clicks' is already defined in {CLICKS}",
        f"{path} at attributes.topic: topic 'clicks' is already owned by {CLICKS}",
    ]


def test_templates_in_attributes_are_rendered_and_plain_strings_kept(dg_project, monkeypatch: pytest.MonkeyPatch):
    """Dagster's `{{ env.NAME }}` works in a product's attributes; a string without a template
    keeps its type (Dagster's native rendering would read "1000" as a number)."""
    monkeypatch.setenv("FLOWSUITE_TEST_TOPIC", "clicks_from_env")
    attributes = _clicks_attributes()
    attributes["topic"] = "{{ env.FLOWSUITE_TEST_TOPIC }}"
    attributes["description"] = "1000"
    root, defs = dg_project()
    _write(defs, "clicks", _component_yaml(attributes))
    [component] = dg.ComponentTree.for_project(root).get_all_components(of_type=DataProduct)
    assert component.spec.topic == "clicks_from_env"
    assert component.spec.description == "1000"


def test_an_undefined_template_name_is_reported_at_its_line(dg_project):
    attributes = _clicks_attributes()
    attributes["topic"] = "{{ nope.TOPIC }}"
    root, defs = dg_project()
    path = _write(defs, "clicks", _component_yaml(attributes))
    with pytest.raises(Exception) as err:
        dg.ComponentTree.for_project(root).get_all_components(of_type=DataProduct)
    exc: BaseException | None = err.value
    text = str(exc)
    while exc is not None and "nope" not in text:  # under Dagster's wrapping
        exc = exc.__cause__
        text = str(exc)
    assert "'nope' not found in scope" in text and "attributes.topic" in text, text
    line = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if "nope.TOPIC" in line)
    assert f"defs.yaml:{line}" in text, text
