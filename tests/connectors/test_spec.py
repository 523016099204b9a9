"""Spec validation: each kind of bad spec gives its own clear message naming file and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.settings import REPO_ROOT
from connectors.spec import SpecError, load_specs, parse_spec_file

SHIPPED = REPO_ROOT / "dataproducts"
CLICKS: dict[str, Any] = yaml.safe_load((SHIPPED / "clicks.yaml").read_text())


def write_spec(folder: Path, spec: dict[str, Any], filename: str | None = None) -> Path:
    path = folder / (filename or f"{spec['name']}.yaml")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_specs(folder)
    return [str(p) for p in caught.value.problems]


def field_named(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in spec["fields"] if f["name"] == name)


def test_shipped_products_load_cleanly():
    specs = load_specs(SHIPPED)
    assert [s.name for s in specs] == sorted(p.stem for p in SHIPPED.glob("*.y*ml"))
    clicks = next(s for s in specs if s.name == "clicks")
    assert clicks.key == ["event_id"] and clicks.event_time.field == "event_time"


def _typo(s):
    s["descripton"] = s.pop("description")


def _missing_topic(s):
    del s["topic"]


def _bad_type(s):
    field_named(s, "ad_id")["type"] = "strng"


def _key_not_in_fields(s):
    s["key"] = "evt_id"


def _event_time_missing(s):
    s["event_time"]["field"] = "occurred_at"


def _event_time_wrong_type(s):
    s["event_time"]["field"] = "user_id"


def _bad_duration(s):
    s["partitioning"]["allowed_lateness"] = "ten minutes"


def _min_over_max(s):
    field_named(s, "cost_micros").update(min=10, max=5)


def _enum_on_float(s):
    field_named(s, "cost_micros").update(type="float64", enum=[1, 2], min=None, max=None)


def _bad_regex(s):
    field_named(s, "partner_id")["pattern"] = "^p-[0-9{3}$"


def _reserved_column(s):
    s["fields"].append({"name": "_offset", "type": "int64"})


def _bad_owner(s):
    s["owner"] = "the ads team"


def _zero_rate_cap(s):
    s["flow"]["max_rate"] = 0


@pytest.mark.parametrize(
    ("mutate", "location", "expected"),
    [
        (_typo, "descripton", "is not a known setting"),
        (_missing_topic, "topic", "is required but missing"),
        (_bad_type, "fields[3](ad_id).type", "'strng'"),
        (_key_not_in_fields, "", "key field 'evt_id' is not declared in fields"),
        (_event_time_missing, "", "event_time.field 'occurred_at' is not declared in fields"),
        (
            _event_time_wrong_type,
            "",
            "event_time.field 'user_id' has type 'string'; expected timestamp",
        ),
        (_bad_duration, "partitioning.allowed_lateness", "expected a duration such as '90s'"),
        (_min_over_max, "fields[5](cost_micros)", "min (10.0) is greater than max (5.0)"),
        (
            _enum_on_float,
            "fields[5](cost_micros)",
            "enum applies to string or integer fields, not to type 'float64'",
        ),
        (_bad_regex, "fields[2](partner_id).pattern", "is not a valid regular expression"),
        (_reserved_column, "fields[7](_offset).name", "reserved for the provenance column"),
        (_bad_owner, "owner", "must be an e-mail address or 'team:<name>'"),
        (_zero_rate_cap, "flow.max_rate", "greater than or equal to 1"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_each_bad_spec_has_its_own_message(tmp_path, mutate, location, expected):
    spec = copy.deepcopy(CLICKS)
    mutate(spec)
    path = write_spec(tmp_path, spec)
    problems = problems_of(tmp_path)
    assert len(problems) == 1, problems
    where = f" at {location}" if location else ""
    assert problems[0].startswith(f"{path}{where}: "), problems[0]
    assert expected in problems[0]


def test_invalid_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "clicks.yaml"
    path.write_text(
        "name: clicks\nowner: team:ads\nfields: [\n  {name: a, type: string\ntopic: x\n"
    )
    [problem] = problems_of(tmp_path)
    assert problem.startswith(f"{path} at line ")
    assert ", column " in problem and "is not valid YAML" in problem


def test_name_must_match_file_name(tmp_path):
    path = write_spec(tmp_path, copy.deepcopy(CLICKS), filename="ad_clicks.yaml")
    assert problems_of(tmp_path) == [
        f"{path} at name: 'clicks' must match the file name 'ad_clicks'"
    ]


def test_duplicate_topic_across_files(tmp_path):
    write_spec(tmp_path, copy.deepcopy(CLICKS))
    other = copy.deepcopy(CLICKS) | {"name": "clicks_copy"}
    other_path = write_spec(tmp_path, other)
    [problem] = problems_of(tmp_path)
    assert problem.startswith(f"{other_path} at topic: topic 'clicks' is already owned by ")
    assert problem.endswith("clicks.yaml")


def test_every_bad_file_is_reported(tmp_path):
    bad_owner = copy.deepcopy(CLICKS) | {"owner": "nobody"}
    bad_duration = copy.deepcopy(CLICKS) | {"name": "views", "topic": "views"}
    bad_duration["trigger"] = {"max_latency": "soon"}
    good = copy.deepcopy(CLICKS) | {"name": "orders", "topic": "orders"}
    clicks_path = write_spec(tmp_path, bad_owner)
    views_path = write_spec(tmp_path, bad_duration)
    write_spec(tmp_path, good)
    problems = problems_of(tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{clicks_path} at owner: ")
    assert problems[1].startswith(f"{views_path} at trigger.max_latency: ")


def test_missing_folder_is_a_problem_not_a_crash(tmp_path):
    [problem] = problems_of(tmp_path / "nowhere")
    assert "does not exist" in problem


@pytest.mark.parametrize("name", ["dt", "hour"])
def test_a_field_named_like_a_lake_partition_directory_is_refused_with_the_reason(name, tmp_path):
    s = yaml.safe_load((SHIPPED / "clicks.yaml").read_text())
    s["fields"].append({"name": name, "type": "string"})
    path = tmp_path / "clicks.yaml"
    path.write_text(yaml.safe_dump(s))
    with pytest.raises(SpecError) as raised:
        parse_spec_file(path)
    message = str(raised.value)
    assert "clicks.yaml" in message and name in message and "partition directory" in message


def test_relative_partition_start_rolls_and_an_explicit_one_stays(tmp_path):
    from datetime import UTC, datetime, timedelta

    s = yaml.safe_load((SHIPPED / "clicks.yaml").read_text())
    s["partitioning"]["start"] = "-2d"
    path = tmp_path / "clicks.yaml"
    path.write_text(yaml.safe_dump(s))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert parse_spec_file(path).partitioning.start == today - timedelta(days=2)
    s["partitioning"]["start"] = "2026-11-01T00:00:00Z"
    path.write_text(yaml.safe_dump(s))
    assert parse_spec_file(path).partitioning.start == datetime(2026, 11, 1, tzinfo=UTC)


def test_every_format_may_allow_flow_with_an_owners_rate_cap(tmp_path):
    """The flow gateway decodes with the landing's decoder, so avro/protobuf/cloudevents products
    may be subscribed to like json ones; `flow.max_rate` caps each subscription's requests/min."""
    for name in ("clicks_avro", "clicks_proto"):
        spec = yaml.safe_load((SHIPPED / f"{name}.yaml").read_text())
        spec["flow"] = {"enabled": True, "attributes": {"partner_id": "partnerid"}, "max_rate": 600}
        write_spec(tmp_path, spec)
    (tmp_path / "schemas").symlink_to(SHIPPED / "schemas")
    specs = {s.name: s for s in load_specs(tmp_path)}
    assert specs["clicks_avro"].flow.enabled and specs["clicks_proto"].flow.max_rate == 600
    assert next(s for s in load_specs(SHIPPED) if s.name == "clicks").flow.max_rate is None  # no cap unless set
