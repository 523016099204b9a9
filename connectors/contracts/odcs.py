"""A data product's contract in the Open Data Contract Standard v3.1.0 (bitol-io), and back.

`contract(spec, ...)` maps the spec onto ODCS: owner and team, one schema object with typed
properties (logicalType, physicalType = the flowsuite type, required, primaryKey from the key,
enum/pattern/length/bounds), quality rules from the expectations (ODCS library metrics where
ODCS has one, else `type: custom, engine: greatExpectations` carrying the expectation),
freshness and lateness as `slaProperties`, and the servers (Kafka topic, lake, warehouse table,
Iceberg table). What ODCS has no field for (event time, partitioning start, trigger, sinks'
tuning, flow, inbound, CloudEvents options, writer schemas, tags) travels in the contract's
`customProperties` as `flowsuite.<section>`, so `spec_from_contract(contract(spec))` gives the
spec back; NOT_IN_ODCS lists those, NOT_READ_BACK what a contract says that the spec does not keep.

The vendored JSON Schema (schema/odcs-json-schema-v3.1.0.json) validates a contract:
`validate(doc)` raises ContractError naming every problem.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connectors.errors import TerminalError
from connectors.spec import DataProductSpec

API_VERSION = "v3.1.0"
SCHEMA_FILE = Path(__file__).with_name("schema") / "odcs-json-schema-v3.1.0.json"

# What ODCS has no field for: carried as `customProperties` `flowsuite.<key>`; a tool that drops
# them loses these, and spec_from_contract then needs at least event_time and partitioning.
NOT_IN_ODCS = {
    "format": "the topic's record format (json, cloudevents, avro, protobuf); servers[kafka].format says json|avro|protobuf only",
    "event_time": "which field (or envelope time) picks the hour partition",
    "partitioning": "the first hour of the product's partitions (allowed_lateness is the SLA allowedLateness)",
    "trigger": "when a landing runs",
    "sinks": "lake file sizes, the warehouse table's options, Iceberg retention",
    "cloudevents": "de-duplication on ce_id and the data layout",
    "flow": "subscriptions by other organisations (the xRegistry endpoint says it in its standard)",
    "inbound": "who may push events to the product",
    "schemas": "where the avro/protobuf writer schemas come from",
    "tags": "the spec's tags as a map (ODCS tags, a list of key:value strings, are written too)",
    "derived": "the products the code location computes from this one",
    "quality.on_invalid": "what happens to an invalid record",
    "quality.volume": "the volume check (ODCS rowCount is a fixed range, not a ratio to a trailing median)",
    "quality.freshness.max_lag": "records waiting in the topic; ODCS has no such SLA property",
    "fields.path": "avro/protobuf: the nested path a column is flattened from",
}
# What a contract says that the spec does not keep: not read back by spec_from_contract.
NOT_READ_BACK = {
    "apiVersion, id, version, status, contractCreatedTs": "the contract's own metadata; the spec has no version",
    "servers": "derived from the installation's settings (FLOWSUITE_KAFKA_BOOTSTRAP, _LAKE_URL, _WAREHOUSE_URL, "
               "_ICEBERG_CATALOG_URL), not from the spec",
    "domain, team (but its owner)": "the spec has one owner; domain and team name are derived from it",
    "description.usage/limitations, support, price, roles": "no place in the spec",
    "quality rules without a flowsuite expectation": "refused (ContractError), not dropped",
}

_LOGICAL = {"string": "string", "int32": "integer", "int64": "integer", "float64": "number", "boolean": "boolean",
            "timestamp": "timestamp", "date": "date", "bytes": "string", "decimal": "number"}
_DECIMAL = re.compile(r"decimal\((\d+),\s*(\d+)\)")
_INT_FORMAT = {"int32": "i32", "int64": "i64"}


class ContractError(TerminalError, ValueError):
    """A contract that is not valid ODCS v3, or that cannot become a spec; names every problem."""


@cache
def odcs_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def validate(doc: dict[str, Any]) -> None:
    """Raise ContractError listing every place `doc` breaks the ODCS v3.1.0 JSON Schema."""
    import jsonschema

    validator = jsonschema.Draft201909Validator(odcs_schema())
    problems = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if problems:
        lines = [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in problems]
        raise ContractError("not a valid ODCS v3.1.0 contract:\n" + "\n".join(lines))


def _duration(td: timedelta) -> tuple[int, str]:
    seconds = int(td.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return seconds // size, unit
    return seconds, "s"


def _seconds(value: Any, unit: str | None) -> timedelta:
    size = {"d": 86400, "day": 86400, "days": 86400, "h": 3600, "m": 60, "s": 1, None: 1}.get(unit)
    if size is None:
        raise ContractError(f"slaProperties: unit {unit!r} is not one of d, h, m, s")
    return timedelta(seconds=float(value) * size)


def _team(owner: str) -> str:
    return owner.removeprefix("team:").split("@")[0]


def _expectation_rule(exp) -> tuple[str | None, dict[str, Any]]:
    """(column or None for the table, the ODCS quality rule) of one expectation."""
    kw = dict(exp.kwargs)
    base: dict[str, Any] = {"severity": "warning" if exp.severity == "warn" else "error"}
    if exp.name:
        base["name"] = exp.name
    column = kw.get("column")
    if exp.type == "expect_column_values_to_not_be_null" and set(kw) == {"column"}:
        return column, {**base, "type": "library", "metric": "nullValues", "mustBe": 0, "dimension": "completeness"}
    if exp.type == "expect_column_values_to_be_unique" and set(kw) == {"column"}:
        return column, {**base, "type": "library", "metric": "duplicateValues", "mustBe": 0, "dimension": "uniqueness"}
    if exp.type == "expect_column_values_to_be_in_set" and set(kw) == {"column", "value_set"}:
        return column, {**base, "type": "library", "metric": "invalidValues", "mustBe": 0,
                        "arguments": {"validValues": list(kw["value_set"])}, "dimension": "conformity"}
    if exp.type == "expect_table_row_count_to_be_between" and set(kw) == {"min_value", "max_value"} \
            and kw["min_value"] is not None and kw["max_value"] is not None and kw["min_value"] < kw["max_value"]:
        return None, {**base, "type": "library", "metric": "rowCount", "mustBeBetween": [kw["min_value"], kw["max_value"]]}
    rule = {**base, "type": "custom", "engine": "greatExpectations",
            "implementation": {"expectation_type": exp.type, "kwargs": kw},
            "description": f"Great Expectations {exp.type}"}
    return (column if isinstance(column, str) else None), rule


def _property(spec: DataProductSpec, f) -> dict[str, Any]:
    physical = f"decimal({f.precision},{f.scale})" if f.type == "decimal" else f.type
    prop: dict[str, Any] = {"name": f.name, "logicalType": _LOGICAL[f.type], "physicalType": physical,
                            "required": f.required}
    if f.description:
        prop["description"] = f.description
    if f.name in spec.key:
        prop["primaryKey"] = True
        prop["primaryKeyPosition"] = spec.key.index(f.name) + 1
    opts: dict[str, Any] = {}
    if f.type in ("string", "bytes"):
        if f.pattern is not None:
            opts["pattern"] = f.pattern
        if f.max_length is not None:
            opts["maxLength"] = f.max_length
    if f.type == "bytes":
        opts["format"] = "byte"
    if f.type in _INT_FORMAT:
        opts["format"] = _INT_FORMAT[f.type]
    if f.min is not None:
        opts["minimum"] = f.min
    if f.max is not None:
        opts["maximum"] = f.max
    if f.type == "timestamp":
        opts["timezone"] = True
    if opts:
        prop["logicalTypeOptions"] = opts
    if f.enum is not None:
        prop["quality"] = [{"type": "library", "metric": "invalidValues", "mustBe": 0, "dimension": "conformity",
                            "arguments": {"validValues": list(f.enum)}, "description": "the field's enum",
                            "name": "enum"}]
    if spec.event_time.source == "field" and spec.event_time.field == f.name:
        prop["partitioned"] = True
        prop["partitionKeyPosition"] = 1
    return prop


def _servers(spec: DataProductSpec, kafka_bootstrap: str | None, lake_url: str | None,
             warehouse_url: str | None, iceberg_catalog_url: str | None) -> list[dict[str, Any]]:
    servers: list[dict[str, Any]] = []
    kafka_format = "json" if spec.format in ("json", "cloudevents") else spec.format
    servers.append({"server": "kafka", "type": "kafka", "host": kafka_bootstrap or "unknown", "format": kafka_format,
                    "description": f"the product's topic {spec.topic}",
                    "customProperties": [{"property": "topic", "value": spec.topic}]})
    if spec.sinks.lake.enabled and lake_url:
        if lake_url.startswith("s3://"):
            servers.append({"server": "lake", "type": "s3", "location": f"{lake_url.rstrip('/')}/{spec.name}/",
                            "format": "parquet", "description": "hourly Parquet: <product>/dt=YYYY-MM-DD/hour=HH/"})
        else:
            servers.append({"server": "lake", "type": "local", "path": f"{lake_url.rstrip('/')}/{spec.name}/",
                            "format": "parquet", "description": "hourly Parquet: <product>/dt=YYYY-MM-DD/hour=HH/"})
    db = spec.sinks.database
    if db is not None and db.enabled and warehouse_url:
        servers.append(_db_server("warehouse", warehouse_url, spec.table_name, "the UPSERTed warehouse table"))
    if spec.sinks.lake.iceberg.enabled and iceberg_catalog_url:
        server = _db_server("iceberg", iceberg_catalog_url, f"flowsuite.{spec.name}",
                            "Iceberg table flowsuite.<product> (pyiceberg SqlCatalog in this database)")
        servers.append(server)
    return servers


def _db_server(name: str, url: str, table: str, description: str) -> dict[str, Any]:
    """An ODCS server for a SQLAlchemy URL, credentials left out."""
    parts = urlsplit(url)
    dialect = parts.scheme.split("+")[0]
    table_prop = [{"property": "table", "value": table}]
    if dialect.startswith("postgres"):
        return {"server": name, "type": "postgresql", "host": parts.hostname or "localhost", "port": parts.port or 5432,
                "database": parts.path.lstrip("/") or "postgres", "schema": "public", "description": description,
                "customProperties": table_prop}
    if dialect in ("mysql", "mariadb"):
        return {"server": name, "type": "mysql", "host": parts.hostname or "localhost", "port": parts.port or 3306,
                "database": parts.path.lstrip("/"), "description": description, "customProperties": table_prop}
    # SQLite (and anything else): ODCS has no sqlite type; `custom` with the file's path.
    return {"server": name, "type": "custom", "format": dialect, "path": parts.path.lstrip("/") if dialect == "sqlite"
            else "", "description": description, "customProperties": [*table_prop, {"property": "dialect",
                                                                                    "value": dialect}]}


def contract(spec: DataProductSpec, *, kafka_bootstrap: str | None = None, lake_url: str | None = None,
             warehouse_url: str | None = None, iceberg_catalog_url: str | None = None,
             version: str = "1.0.0", status: str = "active") -> dict[str, Any]:
    """The product's ODCS v3.1.0 data contract (a JSON-able dict)."""
    props = [_property(spec, f) for f in spec.fields]
    by_name = {p["name"]: p for p in props}
    table_rules: list[dict[str, Any]] = []
    for i, exp in enumerate(spec.quality.expectations):
        column, rule = _expectation_rule(exp)
        rule = {"id": f"expectation_{i + 1}", **rule}  # the expectations' order, for the way back
        if column in by_name:
            by_name[column].setdefault("quality", []).append(rule)
        else:
            table_rules.append(rule)
    obj: dict[str, Any] = {"name": spec.name, "physicalName": spec.topic, "physicalType": "topic",
                           "logicalType": "object", "properties": props}
    if spec.description:
        obj["description"] = spec.description
    if table_rules:
        obj["quality"] = table_rules
    sla: list[dict[str, Any]] = []
    if spec.quality.freshness is not None and spec.quality.freshness.max_age is not None:
        value, unit = _duration(spec.quality.freshness.max_age)
        sla.append({"property": "latency", "value": value, "unit": unit,
                    "description": "at most this long without a landing (the freshness check fails after it)"})
    value, unit = _duration(spec.partitioning.allowed_lateness)
    sla.append({"property": "allowedLateness", "value": value, "unit": unit,
                **({"element": f"{spec.name}.{spec.event_time.field}"} if spec.event_time.field else {}),
                "description": "a record this late by event time still lands in its hour; later ones go to a later file"})
    dumped = spec.model_dump(mode="json", exclude_defaults=True)
    custom = {k: dumped[k] for k in ("format", "event_time", "partitioning", "trigger", "sinks", "cloudevents",
                                     "flow", "inbound", "schemas", "tags", "derived") if k in dumped}
    quality = dumped.get("quality", {})
    if "on_invalid" in quality:
        custom["quality.on_invalid"] = quality["on_invalid"]
    if "volume" in quality:
        custom["quality.volume"] = quality["volume"]
    if (quality.get("freshness") or {}).get("max_lag") is not None:
        custom["quality.freshness.max_lag"] = quality["freshness"]["max_lag"]
    paths = {f.name: f.path for f in spec.fields if f.path}
    if paths:
        custom["fields.path"] = paths
    doc: dict[str, Any] = {
        "apiVersion": API_VERSION, "kind": "DataContract", "id": f"urn:flowsuite:product:{spec.name}",
        "version": version, "status": status, "name": spec.name, "domain": _team(spec.owner),
        "team": {"name": _team(spec.owner), "members": [{"username": spec.owner, "role": "owner"}]},
        "schema": [obj], "slaProperties": sla,
        "servers": _servers(spec, kafka_bootstrap, lake_url, warehouse_url, iceberg_catalog_url),
        "customProperties": [{"property": f"flowsuite.{k}", "value": v} for k, v in custom.items()],
    }
    if spec.description:
        doc["description"] = {"purpose": spec.description}
    if spec.tags:
        doc["tags"] = [f"{k}:{v}" for k, v in sorted(spec.tags.items())]
    return doc


def _rule_expectation(rule: dict[str, Any], column: str | None) -> dict[str, Any] | None:
    """The flowsuite expectation of an ODCS quality rule (None: the rule is a field's enum)."""
    out: dict[str, Any] = {"severity": "warn" if rule.get("severity") == "warning" else "error"}
    if rule.get("name"):
        out["name"] = rule["name"]
    rtype = rule.get("type", "library")
    if rtype == "custom":
        impl = rule.get("implementation")
        if rule.get("engine") not in ("greatExpectations", "great-expectations") or not isinstance(impl, dict):
            raise ContractError(f"quality rule {rule!r}: only engine greatExpectations with an implementation "
                                "object {expectation_type, kwargs} becomes a flowsuite expectation")
        return {"type": impl["expectation_type"], "kwargs": dict(impl.get("kwargs") or {}), **out}
    metric = rule.get("metric") or rule.get("rule")
    if metric == "nullValues" and rule.get("mustBe") == 0 and column:
        return {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": column}, **out}
    if metric == "duplicateValues" and rule.get("mustBe") == 0 and column:
        return {"type": "expect_column_values_to_be_unique", "kwargs": {"column": column}, **out}
    if metric == "invalidValues" and rule.get("mustBe") == 0 and column:
        values = (rule.get("arguments") or {}).get("validValues")
        return {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": column, "value_set": values}, **out}
    if metric == "rowCount" and "mustBeBetween" in rule:
        lo, hi = rule["mustBeBetween"]
        return {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": lo, "max_value": hi}, **out}
    raise ContractError(f"quality rule {rule!r}{f' on {column}' if column else ''}: flowsuite has no expectation for it "
                        "(library nullValues/duplicateValues/invalidValues with mustBe 0, rowCount mustBeBetween, "
                        "or custom greatExpectations)")


def _order(item: tuple[str, dict[str, Any]]) -> tuple[int, int]:
    rid = item[0]
    if rid.startswith("expectation_") and rid[len("expectation_"):].isdigit():
        return 0, int(rid[len("expectation_"):])
    return 1, 0  # a rule of another tool's contract: after ours, in the contract's order (sort is stable)


def spec_from_contract(doc: dict[str, Any]) -> dict[str, Any]:
    """The spec (a dict, as in a spec YAML) an ODCS v3 contract describes. Validates the
    contract first; ContractError names what is missing or cannot map."""
    validate(doc)
    objects = doc.get("schema") or []
    if len(objects) != 1:
        raise ContractError(f"schema: a flowsuite product is one schema object, the contract has {len(objects)}")
    obj = objects[0]
    custom = {c["property"].removeprefix("flowsuite."): c["value"] for c in doc.get("customProperties") or []
              if c["property"].startswith("flowsuite.")}
    members = (doc.get("team") or {}).get("members") if isinstance(doc.get("team"), dict) else doc.get("team")
    owner = next((m["username"] for m in members or [] if m.get("role") == "owner"), None)
    if owner is None:
        raise ContractError("team.members: no member with role owner (the product's owner)")
    fields: list[dict[str, Any]] = []
    key: list[tuple[int, str]] = []
    expectations: list[tuple[str, dict[str, Any]]] = []
    for prop in obj.get("properties") or []:
        ftype = prop.get("physicalType")
        decimal = _DECIMAL.fullmatch(ftype or "")
        if decimal:
            ftype = "decimal"
        elif ftype not in _LOGICAL:
            ftype = {"string": "string", "integer": "int64", "number": "float64", "boolean": "boolean",
                     "timestamp": "timestamp", "date": "date"}.get(prop.get("logicalType", ""))
        if ftype is None:
            raise ContractError(f"schema[0].properties.{prop['name']}: logicalType {prop.get('logicalType')!r} "
                                "has no flowsuite type")
        f: dict[str, Any] = {"name": prop["name"], "type": ftype}
        if decimal:
            f["precision"], f["scale"] = int(decimal.group(1)), int(decimal.group(2))
        if prop.get("required"):
            f["required"] = True
        if prop.get("description"):
            f["description"] = prop["description"]
        opts = prop.get("logicalTypeOptions") or {}
        if "pattern" in opts:
            f["pattern"] = opts["pattern"]
        if "maxLength" in opts:
            f["max_length"] = opts["maxLength"]
        if "minimum" in opts:
            f["min"] = opts["minimum"]
        if "maximum" in opts:
            f["max"] = opts["maximum"]
        if prop["name"] in (custom.get("fields.path") or {}):
            f["path"] = custom["fields.path"][prop["name"]]
        if prop.get("primaryKey"):
            key.append((prop.get("primaryKeyPosition", len(key) + 1), prop["name"]))
        for rule in prop.get("quality") or []:
            if rule.get("name") == "enum" and rule.get("metric") == "invalidValues":
                f["enum"] = list(rule["arguments"]["validValues"])
                continue
            expectations.append((rule.get("id", ""), _rule_expectation(rule, prop["name"])))
        fields.append(f)
    for rule in obj.get("quality") or []:
        expectations.append((rule.get("id", ""), _rule_expectation(rule, None)))
    spec: dict[str, Any] = {"name": doc.get("name") or obj["name"], "owner": owner}
    if obj.get("description"):
        spec["description"] = obj["description"]
    spec["topic"] = obj.get("physicalName") or spec["name"]
    if "format" in custom:
        spec["format"] = custom["format"]
    if key:
        spec["key"] = [n for _, n in sorted(key)]
    spec["fields"] = fields
    for section in ("event_time", "partitioning", "trigger", "sinks", "cloudevents", "flow", "inbound", "schemas",
                    "derived"):
        if section in custom:
            spec[section] = custom[section]
    quality: dict[str, Any] = {}
    if "quality.on_invalid" in custom:
        quality["on_invalid"] = custom["quality.on_invalid"]
    if expectations:
        quality["expectations"] = [e for _, e in sorted(expectations, key=_order)]
    freshness: dict[str, Any] = {}
    for sla in doc.get("slaProperties") or []:
        if sla["property"] == "latency":
            freshness["max_age"] = _seconds(sla["value"], sla.get("unit")).total_seconds()
        elif sla["property"] == "allowedLateness":
            spec.setdefault("partitioning", {})["allowed_lateness"] = _seconds(sla["value"], sla.get("unit")).total_seconds()
    if "quality.freshness.max_lag" in custom:
        freshness["max_lag"] = custom["quality.freshness.max_lag"]
    if freshness:
        quality["freshness"] = freshness
    if "quality.volume" in custom:
        quality["volume"] = custom["quality.volume"]
    if quality:
        spec["quality"] = quality
    if "tags" in custom:
        spec["tags"] = custom["tags"]
    if "event_time" not in spec or "start" not in spec.get("partitioning", {}):
        raise ContractError("the contract carries no flowsuite.event_time / flowsuite.partitioning custom "
                            "properties: ODCS has no place for the event-time field and the partitions' start, "
                            "add them to make a spec")
    return spec
