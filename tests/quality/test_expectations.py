"""The GX 1.x adapter, with real Great Expectations: load-time validation through
`parse_spec_file` with `spec_checks()`, check names, and suite runs on Arrow batches."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from connectors.spec import DataProductSpec, SpecError, load_specs, parse_spec_file
from quality.expectations import (
    CHECK_NAME,
    ExpectationOutcome,
    check_name,
    check_names,
    expectation_problems,
    load_checked_specs,
    run_suite,
    spec_checks,
    suite_columns,
)

REPO = Path(__file__).resolve().parents[2]

FIELDS = [
    {"name": "event_id", "type": "string", "required": True},
    {"name": "user_id", "type": "string"},
    {"name": "kind", "type": "string"},
    {"name": "cost_micros", "type": "int64"},
    {"name": "event_time", "type": "timestamp", "required": True},
]


@pytest.fixture
def suites_dir(tmp_path: Path) -> Path:
    """A tmp suites folder; `parse` checks specs with the expectation hook bound to it."""
    folder = tmp_path / "suites"
    folder.mkdir()
    return folder


def write_spec(tmp_path: Path, expectations: list[dict], name: str = "events") -> Path:
    path = tmp_path / f"{name}.yaml"
    spec = {
        "name": name,
        "owner": "team:data",
        "topic": name,
        "key": "event_id",
        "fields": FIELDS,
        "event_time": {"field": "event_time"},
        "partitioning": {"start": "2026-11-01T00:00:00Z"},
        "quality": {"expectations": expectations},
    }
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def write_suite(folder: Path, expectations: list[dict], name: str = "events") -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"name": name, "expectations": expectations}), encoding="utf-8")
    return path


def parse(path: Path) -> DataProductSpec:
    """The spec with the standard checks bound to the tmp suites folder (see `suites_dir`)."""
    return parse_spec_file(path, spec_checks(path.parent / "suites"))


def problems_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse(path)
    return [str(p) for p in info.value.problems]


def batch(**overrides: list) -> pa.Table:
    columns = {
        "event_id": ["e1", "e2", "e3", "e4"],
        "user_id": ["u1", "u2", "u3", "u4"],
        "kind": ["click", "impression", "click", "click"],
        "cost_micros": [10, 20, 30, 40],
        "event_time": [1_790_000_000_000_000 + i for i in range(4)],
    }
    columns.update(overrides)
    return pa.table(
        {
            "event_id": pa.array(columns["event_id"], pa.string()),
            "user_id": pa.array(columns["user_id"], pa.string()),
            "kind": pa.array(columns["kind"], pa.string()),
            "cost_micros": pa.array(columns["cost_micros"], pa.int64()),
            "event_time": pa.array(columns["event_time"], pa.timestamp("us", tz="UTC")),
            "_raw": pa.array([b"{}"] * len(columns["event_id"]), pa.binary()),
        }
    )


GOOD = [
    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "event_id"}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "user_id"}},
    {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "cost_micros", "min_value": 0, "max_value": 100},
    },
    {
        "type": "expect_column_values_to_be_in_set",
        "kwargs": {"column": "kind", "value_set": ["click", "impression"]},
    },
    {
        "type": "expect_column_mean_to_be_between",
        "kwargs": {"column": "cost_micros", "min_value": 0, "max_value": 1000},
        "severity": "warn",
    },
]


# --- load-time validation -------------------------------------------------------------------


def test_unknown_type_is_a_spec_error_with_suggestions(tmp_path: Path, suites_dir: Path) -> None:
    path = write_spec(
        tmp_path, [{"type": "expect_column_values_to_be_uniq", "kwargs": {"column": "event_id"}}]
    )
    [problem] = problems_of(path)
    assert str(path) in problem
    assert "quality.expectations[0](expect_column_values_to_be_uniq).type" in problem
    assert "unknown expectation type 'expect_column_values_to_be_uniq'" in problem
    assert "did you mean expect_column_values_to_be_unique" in problem


def test_unknown_type_in_suite_file_names_the_suite(tmp_path: Path, suites_dir: Path) -> None:
    write_suite(
        suites_dir,
        [*GOOD[:1], {"type": "expect_colum_values_to_not_be_nul", "kwargs": {"column": "user_id"}}],
    )
    [problem] = problems_of(write_spec(tmp_path, []))
    assert "events.json:expectations[1](expect_colum_values_to_not_be_nul).type" in problem
    assert "expect_column_values_to_not_be_null" in problem


def test_bad_kwargs_are_reported_per_kwarg(tmp_path: Path, suites_dir: Path) -> None:
    path = write_spec(
        tmp_path,
        [
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "kind"}},
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "cost_micros", "min_value": 0, "max_valu": 5},
            },
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "cost_micros", "min_value": "low"},
            },
            {
                "type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "user_id", "severity": "warn"},
            },
        ],
    )
    problems = problems_of(path)
    assert len(problems) == 4, problems
    assert (
        "expectations[0](expect_column_values_to_be_in_set).kwargs.value_set: is required"
        in problems[0]
    )
    assert (
        "kwargs.max_valu: is not a kwarg of expect_column_values_to_be_between; did you mean max_value?"
        in problems[1]
    )
    assert "kwargs.min_value: got 'low'" in problems[2]
    assert "kwargs.severity: goes beside type" in problems[3]


def test_column_not_in_spec(tmp_path: Path, suites_dir: Path) -> None:
    path = write_spec(
        tmp_path, [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "userid"}}]
    )
    [problem] = problems_of(path)
    assert "kwargs.column: 'userid' is not a field of this product" in problem
    assert "did you mean 'user_id'?" in problem


def test_suite_file_problems(tmp_path: Path, suites_dir: Path) -> None:
    spec_path = write_spec(tmp_path, [])
    (suites_dir / "events.json").write_text("{not json", encoding="utf-8")
    [problem] = problems_of(spec_path)
    assert "events.json" in problem and "is not a readable JSON suite" in problem
    write_suite(
        suites_dir,
        [
            {
                "expectation_type": "expect_column_values_to_be_unique",
                "kwargs": {"column": "event_id"},
            },
            {**GOOD[0], "meta": {"severity": "fatal"}},
        ],
    )
    problems = problems_of(spec_path)
    assert "GX 0.x key 'expectation_type'" in problems[0]
    assert "meta.severity: got 'fatal'" in problems[1]


def test_bad_and_duplicate_check_names(tmp_path: Path, suites_dir: Path) -> None:
    path = write_spec(
        tmp_path,
        [
            {**GOOD[0], "name": "unique-ids"},
            {**GOOD[1], "name": "users"},
            {**GOOD[2], "name": "users"},
        ],
    )
    problems = problems_of(path)
    assert len(problems) == 2
    assert "'unique-ids' must match" in problems[0]
    assert "check name 'users' is already used by quality.expectations[1]" in problems[1]


def test_good_spec_and_suite_load(tmp_path: Path, suites_dir: Path) -> None:
    # GX 1.x's own severity field is honoured when meta.severity is absent.
    write_suite(
        suites_dir, [{"type": GOOD[4]["type"], "kwargs": GOOD[4]["kwargs"], "severity": "warning"}]
    )
    spec = parse(write_spec(tmp_path, GOOD[:4]))
    assert expectation_problems(spec, suites_dir) == []
    named = check_names(spec, suites_dir)
    assert [exp.severity for _, exp in named] == ["error"] * 4 + ["warn"]


def test_checks_are_passed_not_installed(tmp_path: Path, suites_dir: Path) -> None:
    # A bad expectation is refused where the checks are passed, and only there: no global hook.
    path = write_spec(tmp_path, [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "nope"}}])
    assert parse_spec_file(path).name == "events"
    assert any("nope" in p for p in problems_of(path))
    with pytest.raises(SpecError, match="nope"):
        load_checked_specs(tmp_path, suites_dir)
    assert [s.name for s in load_specs(tmp_path)] == ["events"]


def test_demo_suite_is_valid() -> None:
    spec = parse_spec_file(REPO / "dataproducts" / "clicks.yaml")
    assert expectation_problems(spec) == []
    named = check_names(spec)
    assert len(named) >= 5
    assert {exp.severity for _, exp in named} == {"error", "warn"}


# --- check names ----------------------------------------------------------------------------


def test_check_names_unique_valid_and_stable(tmp_path: Path, suites_dir: Path) -> None:
    write_suite(suites_dir, [GOOD[1], {**GOOD[0], "meta": {"check_name": "ids_unique"}}])
    spec = parse(
        write_spec(
            tmp_path,
            [
                GOOD[0],
                GOOD[0],
                {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
                {**GOOD[1], "name": "values_not_null__user_id"},
            ],
        )
    )
    names = [name for name, _ in check_names(spec, suites_dir)]
    assert names == [
        "values_unique__event_id",
        "values_unique__event_id_2",
        "table_row_count_between",
        "values_not_null__user_id",
        "values_not_null__user_id_2",
        "ids_unique",
    ]
    assert all(CHECK_NAME.match(n) and len(n) <= 64 for n in names)
    assert names == [name for name, _ in check_names(spec, suites_dir)]


def test_check_name_of_long_type_is_bounded() -> None:
    from connectors.spec import ExpectationSpec

    exp = ExpectationSpec(
        type="expect_column_pair_values_a_to_be_greater_than_b",
        kwargs={
            "column_A": "a_very_long_column_name_for_testing",
            "column_B": "another_long_column_name",
        },
    )
    name = check_name(exp)
    assert CHECK_NAME.match(name) and len(name) <= 64
    assert name.startswith("pair_values_a_greater_than_b__a_very")


# --- running a suite ------------------------------------------------------------------------


@pytest.fixture
def spec(tmp_path: Path, suites_dir: Path):
    return parse(write_spec(tmp_path, GOOD))


def by_name(outcomes: list[ExpectationOutcome]) -> dict[str, ExpectationOutcome]:
    return {o.name: o for o in outcomes}


def test_good_data_passes(spec, suites_dir: Path) -> None:
    outcomes = run_suite(spec, batch(), suites_dir)
    assert [o.name for o in outcomes] == [n for n, _ in check_names(spec, suites_dir)]
    assert all(o.success for o in outcomes), outcomes
    assert all(o.exception is None and not o.blocks for o in outcomes)
    unique = outcomes[0]
    assert (unique.element_count, unique.unexpected_count, unique.unexpected_percent) == (4, 0, 0.0)
    assert by_name(outcomes)["mean_between__cost_micros"].observed_value == 25.0
    json.dumps([o.__dict__ for o in outcomes])


def test_failing_data_reports_counts_and_values(spec, suites_dir: Path) -> None:
    table = batch(
        event_id=["e1", "e1", "e3", "e4"],
        user_id=["u1", None, None, "u4"],
        kind=["click", "view", "click", "click"],
        cost_micros=[10, 500, None, 40],
    )
    outcomes = by_name(run_suite(spec, table, suites_dir))
    unique = outcomes["values_unique__event_id"]
    assert not unique.success and unique.blocks
    assert unique.unexpected_count == 2 and unique.partial_unexpected_list == ["e1", "e1"]
    assert unique.column == "event_id" and unique.severity == "error"
    nulls = outcomes["values_not_null__user_id"]
    assert (nulls.success, nulls.unexpected_count, nulls.unexpected_percent) == (False, 2, 50.0)
    between = outcomes["values_between__cost_micros"]
    # The int column with a null goes through pandas as floats; values come back as ints.
    assert between.unexpected_count == 1 and between.partial_unexpected_list == [500]
    assert between.details["missing_count"] == 1
    in_set = outcomes["values_in_set__kind"]
    assert in_set.unexpected_count == 1 and in_set.partial_unexpected_list == ["view"]
    json.dumps([o.__dict__ for o in outcomes.values()])


def test_warn_severity_is_carried_and_does_not_block(spec, suites_dir: Path) -> None:
    outcomes = by_name(run_suite(spec, batch(cost_micros=[5000, 5000, 5000, 5000]), suites_dir))
    mean = outcomes["mean_between__cost_micros"]
    assert mean.severity == "warn" and not mean.success and not mean.blocks
    assert mean.observed_value == 5000.0
    assert outcomes["values_between__cost_micros"].severity == "error"


def test_suite_file_severity_from_meta(tmp_path: Path, suites_dir: Path) -> None:
    write_suite(suites_dir, [{**GOOD[1], "meta": {"severity": "warn"}}])
    spec = parse(write_spec(tmp_path, []))
    [outcome] = run_suite(spec, batch(user_id=[None, "u", "u", "u"]), suites_dir)
    assert outcome.severity == "warn" and not outcome.success and not outcome.blocks


def test_empty_table_never_fails_on_missing_observations(spec, suites_dir: Path) -> None:
    outcomes = run_suite(spec, batch().slice(0, 0), suites_dir)
    assert len(outcomes) == 5
    for o in outcomes:
        assert o.success and o.exception is None, o
    assert all(
        o.element_count == 0 for o in outcomes if o.type != "expect_column_mean_to_be_between"
    )


def test_runtime_error_is_a_failed_outcome(tmp_path: Path) -> None:
    # Without the load-time checks a column missing from the batch reaches GX; it must not raise.
    spec = parse_spec_file(
        write_spec(
            tmp_path,
            [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "nope"}}],
        )
    )
    [outcome] = run_suite(spec, batch(), tmp_path)
    assert not outcome.success and outcome.blocks
    assert 'The column "nope" in BatchData does not exist' in outcome.exception


def test_no_expectations_runs_nothing(tmp_path: Path, suites_dir: Path) -> None:
    spec = parse(write_spec(tmp_path, []))
    assert run_suite(spec, batch(), suites_dir) == []


def test_suite_columns_are_what_column_expectations_read(tmp_path: Path, suites_dir: Path) -> None:
    # Only these columns are read, converted and fingerprinted by GX; in lake order.
    spec = parse(write_spec(tmp_path, GOOD))
    assert suite_columns(spec, suites_dir) == ["event_id", "user_id", "kind", "cost_micros"]
    pair = {"type": "expect_column_pair_values_to_be_equal", "kwargs": {"column_A": "user_id", "column_B": "kind"}}
    spec = parse(write_spec(tmp_path, [pair]))
    assert suite_columns(spec, suites_dir) == ["user_id", "kind"]


@pytest.mark.parametrize(
    "whole_batch",
    [
        {"type": "expect_table_column_count_to_equal", "kwargs": {"value": 5}},
        {"type": "expect_column_to_exist", "kwargs": {"column": "kind", "column_index": 2}},
        {"type": "expect_column_values_to_not_be_null",
         "kwargs": {"column": "user_id", "row_condition": 'kind=="click"', "condition_parser": "pandas"}},
    ],
)
def test_table_level_expectations_see_the_whole_batch(tmp_path: Path, suites_dir: Path, whole_batch) -> None:
    spec = parse(write_spec(tmp_path, [*GOOD, whole_batch]))
    assert suite_columns(spec, suites_dir) is None
    outcomes = run_suite(spec, batch(), suites_dir)
    assert all(o.success for o in outcomes), outcomes


def test_every_production_caller_loads_specs_with_the_checks() -> None:
    # Checks are passed, not installed: a `load_specs(` without `checks=` in production code would
    # load specs whose expectations nobody checked (the gateway, status, demo and Airflow once did).
    unchecked = []
    for package in ("assets", "sensors", "orchestration", "providers", "quality", "examples", "connectors"):
        for path in sorted((REPO / package).rglob("*.py")):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "load_specs(" in line and "def load_specs(" not in line and "checks=" not in line:
                    unchecked.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert unchecked == [], "load specs with quality.expectations.load_checked_specs or checks=spec_checks()"
