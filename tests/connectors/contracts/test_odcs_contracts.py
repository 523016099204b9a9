"""ODCS v3.1.0 data contracts: every product's contract validates against the vendored JSON
Schema whatever the installation's servers, an exported contract re-imports to an equal spec,
and what ODCS cannot say is listed and checked."""

from __future__ import annotations

import copy

import pytest

from connectors.contracts.odcs import (
    NOT_IN_ODCS,
    SCHEMA_FILE,
    ContractError,
    contract,
    spec_from_contract,
    validate,
)
from connectors.settings import REPO_ROOT
from connectors.spec import DataProductSpec, load_specs

SPECS = load_specs(REPO_ROOT / "dataproducts")
SERVERS = [
    pytest.param({"kafka_bootstrap": "broker:9092", "lake_url": "s3://bucket/lake",
                  "warehouse_url": "postgresql+psycopg://u:pw@pg:5432/wh",
                  "iceberg_catalog_url": "postgresql+psycopg://u:pw@pg:5432/meta"}, id="s3-postgres"),
    pytest.param({"kafka_bootstrap": "127.0.0.1:9092", "lake_url": "/var/lake",
                  "warehouse_url": "mysql+pymysql://root@maria:3306/wh",
                  "iceberg_catalog_url": "sqlite:////var/meta.db"}, id="local-mysql"),
    pytest.param({"warehouse_url": "sqlite:////var/wh.db"}, id="sqlite-minimal"),
]


@pytest.mark.parametrize("servers", SERVERS)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_products_contract_validates_and_round_trips(spec, servers):
    doc = contract(spec, **servers)
    validate(doc)  # the vendored ODCS JSON Schema
    assert DataProductSpec.model_validate(spec_from_contract(doc)) == spec


def test_the_contract_says_owner_schema_quality_sla_and_servers():
    clicks = next(s for s in SPECS if s.name == "clicks")
    doc = contract(clicks, **SERVERS[0].values[0])
    assert doc["apiVersion"] == "v3.1.0" and doc["kind"] == "DataContract" and doc["status"] == "active"
    assert doc["team"]["members"] == [{"username": "team:ads", "role": "owner"}] and doc["domain"] == "ads"
    props = {p["name"]: p for p in doc["schema"][0]["properties"]}
    assert props["event_id"]["primaryKey"] is True and props["event_id"]["required"] is True
    assert props["cost_micros"]["logicalType"] == "integer" and props["cost_micros"]["physicalType"] == "int64"
    assert props["cost_micros"]["logicalTypeOptions"] == {"format": "i64", "minimum": 0, "maximum": 100000000}
    assert props["partner_id"]["logicalTypeOptions"]["pattern"] == "^p-[0-9]{3}$"
    assert props["kind"]["quality"][0]["arguments"]["validValues"] == ["impression", "click"]
    regex = props["partner_id"]["quality"][0]
    assert regex["type"] == "custom" and regex["engine"] == "greatExpectations"
    assert regex["implementation"]["expectation_type"] == "expect_column_values_to_match_regex"
    assert props["user_id"]["quality"][0]["severity"] == "warning"
    sla = {s["property"]: s for s in doc["slaProperties"]}
    assert (sla["latency"]["value"], sla["latency"]["unit"]) == (2, "h")
    assert (sla["allowedLateness"]["value"], sla["allowedLateness"]["unit"]) == (10, "m")
    servers = {s["server"]: s for s in doc["servers"]}
    assert servers["kafka"]["customProperties"] == [{"property": "topic", "value": "clicks"}]
    assert servers["lake"] == {**servers["lake"], "type": "s3", "location": "s3://bucket/lake/clicks/", "format": "parquet"}
    assert servers["warehouse"]["type"] == "postgresql" and servers["iceberg"]["customProperties"][0]["value"] == "flowsuite.clicks"
    assert "pw" not in str(doc["servers"])


def test_library_rules_map_both_ways():
    clicks = next(s for s in SPECS if s.name == "clicks")
    data = clicks.model_dump()
    data["quality"]["expectations"] += [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "ad_id"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "event_id"}, "severity": "warn"},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 10}},
    ]
    spec = DataProductSpec.model_validate(data)
    doc = contract(spec)
    validate(doc)
    props = {p["name"]: p for p in doc["schema"][0]["properties"]}
    assert props["ad_id"]["quality"][0]["metric"] == "nullValues"
    assert props["event_id"]["quality"][0]["metric"] == "duplicateValues"
    assert doc["schema"][0]["quality"][0]["metric"] == "rowCount"
    assert DataProductSpec.model_validate(spec_from_contract(doc)) == spec


def test_what_odcs_cannot_say_travels_in_custom_properties_and_is_listed():
    emitted = set()
    for spec in SPECS:
        emitted |= {c["property"].removeprefix("flowsuite.") for c in contract(spec)["customProperties"]}
    assert emitted <= set(NOT_IN_ODCS), emitted - set(NOT_IN_ODCS)
    doc = contract(SPECS[0])
    stripped = {k: v for k, v in doc.items() if k != "customProperties"}
    validate(stripped)  # still a valid contract ...
    with pytest.raises(ContractError, match="event_time"):  # ... but not a spec without them
        spec_from_contract(stripped)


def test_invalid_contracts_name_the_problem():
    doc = contract(SPECS[0])
    for key, words in (("id", "'id' is a required property"), ("kind", "'kind' is a required property")):
        broken = {k: v for k, v in doc.items() if k != key}
        with pytest.raises(ContractError, match=words):
            validate(broken)
    foreign = copy.deepcopy(doc)
    foreign["schema"][0]["properties"][0]["quality"] = [{"type": "sql", "query": "SELECT 1", "mustBe": 1}]
    with pytest.raises(ContractError, match="no expectation for it"):
        spec_from_contract(foreign)
    no_owner = copy.deepcopy(doc)
    no_owner["team"]["members"][0]["role"] = "steward"
    with pytest.raises(ContractError, match="role owner"):
        spec_from_contract(no_owner)


def test_the_vendored_schema_names_its_source():
    readme = (SCHEMA_FILE.parent / "README.md").read_text()
    assert "e6a1c66ffc08fd0135105cf5e8d6ce85c3099285" in readme and "Apache License" in readme
    assert '"default": "v3.1.0"' in SCHEMA_FILE.read_text()
