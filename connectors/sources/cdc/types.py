"""PostgreSQL values (pgoutput's text format) → JSON values, without losing information.

The rule: a JSON number only where JSON's number is exact for the type (integers, and
floats as their shortest round-trip text); everything else a string in a canonical form that
parses back to the same value. docs/cdc.md has the table.

| PostgreSQL | event JSON | product field |
|---|---|---|
| smallint, integer, bigint, oid | number | int32 / int64 |
| real, double precision | number (`"NaN"`, `"Infinity"`, `"-Infinity"` as strings) | float64 |
| numeric, decimal | **string**, exactly as stored (`"1234.5600"`, `"NaN"`) | string |
| boolean | true / false | boolean |
| text, varchar, char, name, uuid, enum, citext, … | string | string |
| timestamp with time zone | string, RFC 3339 in UTC with microseconds (`…Z`) | timestamp |
| timestamp without time zone | string, ISO 8601 without offset (wall time as stored) | timestamp (read as UTC) or string |
| date | string `YYYY-MM-DD` (`infinity` as is) | date |
| time, timetz, interval | string as PostgreSQL prints it (interval in ISO 8601, `P1DT2H`) | string |
| json, jsonb | **string** holding the JSON text (as Debezium's io.debezium.data.Json) | string |
| bytea | string, base64 of the bytes (Debezium's default) | bytes |
| arrays of the above | JSON array of the element values, nested, NULLs as null | string (the array's JSON) |
| anything else (inet, money, ranges, geometry, …) | string as PostgreSQL prints it | string |

The replication connection sets `TimeZone=UTC`, `DateStyle=ISO` and
`IntervalStyle=iso_8601`, so the server's text is stable whatever its defaults.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any

# Type OIDs (pg_type.h); stable across PostgreSQL versions.
BOOL, BYTEA, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 19, 20, 21, 23, 25, 26
JSON, FLOAT4, FLOAT8, BPCHAR, VARCHAR, DATE, TIME, TIMESTAMP, TIMESTAMPTZ = 114, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184
INTERVAL, TIMETZ, NUMERIC, UUID, JSONB = 1186, 1266, 1700, 2950, 3802

# array type OID → element type OID
ARRAY_ELEMENT = {
    1000: BOOL, 1001: BYTEA, 1003: NAME, 1016: INT8, 1005: INT2, 1007: INT4, 1009: TEXT, 1028: OID,
    199: JSON, 1021: FLOAT4, 1022: FLOAT8, 1014: BPCHAR, 1015: VARCHAR, 1182: DATE, 1183: TIME,
    1115: TIMESTAMP, 1185: TIMESTAMPTZ, 1187: INTERVAL, 1270: TIMETZ, 1231: NUMERIC, 2951: UUID, 3807: JSONB,
}

TYPE_NAMES = {
    BOOL: "boolean", BYTEA: "bytea", NAME: "name", INT8: "bigint", INT2: "smallint", INT4: "integer",
    TEXT: "text", OID: "oid", JSON: "json", FLOAT4: "real", FLOAT8: "double precision", BPCHAR: "character",
    VARCHAR: "character varying", DATE: "date", TIME: "time", TIMESTAMP: "timestamp without time zone",
    TIMESTAMPTZ: "timestamp with time zone", INTERVAL: "interval", TIMETZ: "time with time zone",
    NUMERIC: "numeric", UUID: "uuid", JSONB: "jsonb",
}

# What a product field should be declared as, per PostgreSQL type (validate's advice).
PRODUCT_TYPE = {
    BOOL: "boolean", BYTEA: "bytes", INT2: "int32", INT4: "int32", INT8: "int64", OID: "int64",
    FLOAT4: "float64", FLOAT8: "float64", TIMESTAMPTZ: "timestamp", TIMESTAMP: "timestamp", DATE: "date",
}


def type_name(oid: int) -> str:
    if oid in ARRAY_ELEMENT:
        return type_name(ARRAY_ELEMENT[oid]) + "[]"
    return TYPE_NAMES.get(oid, f"type {oid}")


def _float(text: str) -> Any:
    v = float(text)
    return text if math.isnan(v) or math.isinf(v) else v


def _timestamptz(text: str) -> str:
    # With TimeZone=UTC the server prints "2026-11-30 10:00:00.123456+00" (or without fraction).
    if text in ("infinity", "-infinity"):
        return text
    date_part, _, rest = text.partition(" ")
    for sep in ("+", "-"):
        if sep in rest:
            clock, _, offset = rest.partition(sep)
            if offset.strip("0:") == "":
                break
            return f"{date_part}T{clock}{sep}{offset if ':' in offset else offset + ':00'}"  # not UTC: keep the offset
    else:
        clock = rest
    if "." not in clock:
        clock += ".000000"
    else:
        whole, frac = clock.split(".")
        clock = f"{whole}.{frac.ljust(6, '0')}"
    return f"{date_part}T{clock}Z"


def _timestamp(text: str) -> str:
    return text if text in ("infinity", "-infinity") else text.replace(" ", "T", 1)


def _bytea(text: str) -> str:
    if text.startswith("\\x"):
        return base64.b64encode(bytes.fromhex(text[2:])).decode("ascii")
    raise ValueError("bytea not in hex output format (bytea_output must be 'hex')")


_SCALAR: dict[int, Callable[[str], Any]] = {
    BOOL: lambda t: t in ("t", "true"),  # pgoutput prints t; boolean::text in the snapshot, true
    INT2: int, INT4: int, INT8: int, OID: int,
    FLOAT4: _float, FLOAT8: _float,
    TIMESTAMPTZ: _timestamptz, TIMESTAMP: _timestamp,
    BYTEA: _bytea,
}


def to_json_value(text: str | None, type_oid: int) -> Any:
    """One column's text → its JSON value (see the table above). None stays None."""
    if text is None:
        return None
    return json_converter(type_oid)(text)


def _same(text: str) -> str:
    return text


def json_converter(type_oid: int) -> Callable[[str], Any]:
    """The function turning a (non-NULL) column text of this type into its JSON value:
    to_json_value without the per-value lookups, for a row decoder that builds it once per column."""
    element = ARRAY_ELEMENT.get(type_oid)
    if element is not None:
        return lambda text: _array(text, element)
    return _SCALAR.get(type_oid, _same)


def _array(text: str, element: int) -> Any:
    """A PostgreSQL array literal (`{1,2,NULL}`, `{{a,"b c"},{d,e}}`, `[0:1]={…}`) → nested lists."""
    if text.startswith("["):  # explicit bounds: drop them, keep the elements
        text = text[text.index("=") + 1:]
    pos = 0

    def parse() -> list:
        nonlocal pos
        assert text[pos] == "{"
        pos += 1
        items: list = []
        if text[pos] == "}":
            pos += 1
            return items
        while True:
            if text[pos] == "{":
                items.append(parse())
            elif text[pos] == '"':
                pos += 1
                buf = []
                while text[pos] != '"':
                    if text[pos] == "\\":
                        pos += 1
                    buf.append(text[pos])
                    pos += 1
                pos += 1
                items.append(to_json_value("".join(buf), element))
            else:
                start = pos
                while text[pos] not in ",}":
                    pos += 1
                raw = text[start:pos]
                items.append(None if raw == "NULL" else to_json_value(raw, element))
            if text[pos] == ",":
                pos += 1
                continue
            pos += 1  # "}"
            return items

    return parse()


def json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
