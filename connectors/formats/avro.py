"""`format: avro`: Avro records in the Confluent wire format, decoded in batches into Arrow.

Each value is `0x00`, a 4-byte big-endian schema id, then the Avro binary encoding of one
record in the *writer* schema of that id (connectors/formats/registry.py finds it). fastavro's
schemaless reader decodes the payload; the spec's fields are the *reader* schema, and the
writer schema of each id is resolved against it once, by the Avro specification's rules
(https://avro.apache.org/docs/1.11.1/specification/#schema-resolution):

- fields are matched by name (a spec field's `path` reaches into nested records, flattened);
- a spec field the writer lacks reads as its default: null for an optional field; a required
  field has no default, so such a writer schema does not resolve;
- writer fields the spec does not declare are ignored;
- the promotions int → long, float, double; long → float, double; float → double; string ↔
  bytes hold; a union resolves when each of its non-null branches does.

A writer schema that does not resolve makes every record of its id quarantined with the reason
(the records are fine, the contract is not: replaying the quarantine after the spec is fixed
lands them). A record whose bytes cannot be read (wrong magic byte, truncated, trailing bytes)
is quarantined with its own reason. An unknown id stops the run (SchemaUnavailableError).

Logical types are read as their underlying numbers and converted by Arrow, column at a time,
without loss: timestamp-millis/micros → timestamp[us, UTC] (local-timestamp-* likewise, taken as
UTC), date → date32, uuid → its canonical text, time-millis/micros → their number (int32/int64),
decimal → its exact text (a `string` field; plain positional digits with the writer's scale,
`0.000000000`, never exponent notation such as `0E-9`) or a float (a `float64` field, by the
owner's choice).
Named types of referenced schemas (the registry's `references`) are parsed before the schema.
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass, field
from decimal import Decimal
from operator import itemgetter

import pyarrow as pa

from connectors.formats.json import Decoder
from connectors.formats.registry import SchemaUnavailableError, schema_source, split_header
from connectors.spec import DataProductSpec, FieldSpec

# Writer types (after logical types) each spec type accepts.
_ACCEPTS: dict[str, set[str]] = {
    "string": {"string", "bytes", "enum", "uuid", "decimal"},
    "int32": {"int", "time-millis"},
    "int64": {"int", "long", "timestamp-millis", "time-millis", "time-micros"},
    "float64": {"int", "long", "float", "double", "decimal"},
    "boolean": {"boolean"},
    "timestamp": {"timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros"},
    "date": {"date"},
    "bytes": {"bytes", "fixed", "string"},
    "decimal": {"decimal", "int", "long"},  # a value that needs more digits than the spec's is quarantined
}
# Logical types fastavro would turn into Python objects one by one: read as numbers instead.
_READ_RAW = {"timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros",
             "date", "uuid", "time-millis", "time-micros"}


@dataclass
class _Column:
    name: str
    path: list[str]
    kind: str | None  # the writer's (logical) type; None: the writer lacks it (reads as null)
    nullable_path: bool = False  # a record on the way may be null


@dataclass
class _Plan:
    schema_id: int
    error: str | None = None  # the writer schema does not resolve against the spec
    parsed: object = None
    columns: list[_Column] = field(default_factory=list)


class AvroDecoder(Decoder):
    """Decodes batches of a `format: avro` product; build once per run.

    `source`: the schema source (default: the spec's, registry.schema_source)."""

    stateless = False  # decoding plans are built and cached per writer schema as batches come: one thread decodes

    def __init__(self, spec: DataProductSpec, topic: str | None = None, source=None):
        if spec.format != "avro":
            raise ValueError(f"{spec.name}: AvroDecoder needs format: avro")
        super().__init__(spec, topic)
        self.source = source if source is not None else schema_source(spec)
        self._plans: dict[int, _Plan] = {}

    # Decoder.decode sorts out tombstones and empty values, then hands the rest here; it adds
    # provenance, the spec's record rules, event-time hours and the quarantine.
    def _parse(self, values: list[bytes | None], idx, pieces: list, reasons: list) -> None:
        from fastavro import schemaless_reader

        groups: dict[int, tuple[list[int], list[dict]]] = {}
        plans = self._plans
        header = None  # the 5 bytes of the record before: runs of one schema id skip the lookups
        sid = parsed = keep_index = keep_record = None
        BytesIO = io.BytesIO  # a local name for the hot loop
        for i in idx:
            value = values[i]
            if value[:5] != header:
                if len(value) < 5 or value[0] != 0:
                    reasons[i] = split_header(value)[1]
                    header = None
                    continue
                sid = int.from_bytes(value[1:5], "big")
                plan = plans.get(sid)
                if plan is None:
                    plan = plans[sid] = self._plan(sid)
                if plan.error is not None:
                    reasons[i] = plan.error
                    header = None
                    continue
                header, parsed = value[:5], plan.parsed
                group = groups.get(sid)
                if group is None:
                    group = groups[sid] = ([], [])
                keep_index, keep_record = group[0].append, group[1].append
            fo = BytesIO(value)
            fo.seek(5)
            try:
                record = schemaless_reader(fo, parsed, None)
            except Exception as exc:  # noqa: BLE001 - fastavro raises EOFError, ValueError, IndexError, ...
                reasons[i] = _unreadable(sid, exc)
                continue
            if fo.tell() != len(value):
                reasons[i] = f"schema id {sid}: {len(value) - fo.tell()} byte(s) left after the record (corrupt or not this schema)"
                continue
            keep_index(i)
            keep_record(record)
        for sid, (good, records) in groups.items():
            if good:
                self._columns(plans[sid], good, records, pieces, reasons)

    # --- writer schema → plan ---------------------------------------------------------------

    def _plan(self, sid: int) -> _Plan:
        from fastavro import parse_schema

        writer = self.source.get(sid)  # SchemaUnavailableError stops the run
        if writer.kind != "AVRO":
            return _Plan(sid, error=f"schema id {sid} is a {writer.kind} schema, the product reads avro")
        try:
            # Named types of referenced schemas (registry references) first, then the schema.
            named_parsed: dict = {}
            named: dict = {}
            for text in writer.references.values():
                ref = json.loads(text)
                parse_schema(_raw_logical(copy.deepcopy(ref)), named_schemas=named_parsed)
                _named_types(ref, named)
            schema = json.loads(writer.text)
            parsed = parse_schema(_raw_logical(copy.deepcopy(schema)), named_schemas=named_parsed)
            _named_types(schema, named)
        except Exception as exc:  # noqa: BLE001 - a broken schema file or registry entry
            raise SchemaUnavailableError(f"schema id {sid} ({writer.name}) is not a valid Avro schema: {exc}") from None
        plan = _Plan(sid, parsed=parsed)
        for f in self.spec.fields:
            path = (f.path or f.name).split(".")
            kind, nullable_path, problem = _resolve(schema, path, named)
            if problem is None and kind is None and f.required:
                problem = f"has no field '{'.'.join(path)}', which the product requires (a required field has no default)"
            if problem is None and kind is not None:
                problem = _mismatch(f, kind)
            if problem is not None:
                plan.error = f"schema id {sid} ({writer.name}) does not resolve against the product's spec: {problem}"
                return plan
            plan.columns.append(_Column(f.name, path, kind, nullable_path))
        return plan

    # --- records → Arrow --------------------------------------------------------------------

    def _columns(self, plan: _Plan, good: list[int], records: list[dict], pieces: list, reasons: list) -> None:
        n = len(records)
        arrays = []
        # The top-level values of every record in one C-level pass, transposed into columns.
        tops = list(dict.fromkeys(c.path[0] for c in plan.columns if c.kind is not None))
        if len(tops) > 1:
            top = dict(zip(tops, zip(*map(itemgetter(*tops), records), strict=True), strict=True)) if n else {t: () for t in tops}
        else:
            top = {t: [r[t] for r in records] for t in tops}
        for col, f in zip(plan.columns, self.spec.fields, strict=True):
            if col.kind is None:
                arrays.append(pa.nulls(n, f.arrow_type))
                continue
            raw = top[col.path[0]]
            for name in col.path[1:]:  # nested: a step at a time over the batch, null-safe
                raw = [None if r is None else r.get(name) for r in raw]
            try:
                arrays.append(_to_arrow(raw, col.kind, f))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError, UnicodeDecodeError) as whole:
                # Rare (a long beyond int64 cannot happen; bytes that are not UTF-8 for a
                # string field can): find the rows, quarantine them, keep the rest.
                bad = set()
                for k, v in enumerate(raw):
                    try:
                        _to_arrow([v], col.kind, f)
                    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError, UnicodeDecodeError) as exc:
                        reasons[good[k]] = f"schema id {plan.schema_id}: field '{f.name}' cannot be read as {f.type}: {exc}"[:300]
                        bad.add(k)
                if not bad:  # each value reads alone, not together: none is trusted
                    for k in range(n):
                        reasons[good[k]] = f"schema id {plan.schema_id}: field '{f.name}' cannot be read as {f.type}: {whole}"[:300]
                    return
                keep = [k for k in range(n) if k not in bad]
                self._columns(plan, [good[k] for k in keep], [records[k] for k in keep], pieces, reasons)
                return
        if not n:
            return
        table = pa.Table.from_arrays(arrays, schema=self.value_schema)
        pieces.append((pa.array(good, pa.int64()), self._with_deleted(table, False)))


def _unreadable(sid: int, exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    if isinstance(exc, EOFError | StopIteration) or "EOF" in text or "unpack" in text or "index out of range" in text:
        return f"schema id {sid}: truncated payload: the record ends before its schema does ({type(exc).__name__}: {text})"
    return f"schema id {sid}: payload cannot be read with its writer schema ({type(exc).__name__}: {text})"


def _raw_logical(schema):
    """The schema with the logical types of _READ_RAW dropped: fastavro reads their numbers."""
    if isinstance(schema, dict):
        if schema.get("logicalType") in _READ_RAW:
            schema = {k: v for k, v in schema.items() if k != "logicalType"}
        for key in ("fields", "items", "values", "type"):
            if key in schema:
                schema[key] = _raw_logical(schema[key])
        return schema
    if isinstance(schema, list):
        return [_raw_logical(s) for s in schema]
    return schema


def _named_types(schema, out: dict | None = None) -> dict:
    out = {} if out is None else out
    if isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed", "error") and "name" in schema:
            out[schema["name"]] = schema
            if "namespace" in schema:
                out[f"{schema['namespace']}.{schema['name']}"] = schema
        for key in ("fields", "items", "values", "type"):
            if key in schema:
                _named_types(schema[key], out)
    elif isinstance(schema, list):
        for s in schema:
            _named_types(s, out)
    return out


def _kind(t, named: dict) -> str | list:
    """A writer type's name for matching: the logical type when there is one; a union → list."""
    if isinstance(t, list):
        return [_kind(b, named) for b in t]
    if isinstance(t, str):
        if t in named:
            return _kind(named[t], named)
        return t
    if isinstance(t, dict):
        if t.get("logicalType") in {*_READ_RAW, "decimal"}:
            return t["logicalType"]
        inner = t.get("type")
        if inner in ("record", "error"):
            return "record"
        if isinstance(inner, str) and inner not in ("record", "error", "enum", "fixed", "array", "map"):
            return _kind(inner, named)
        return inner
    return str(t)


def _non_null(t, named: dict):
    """(the type without its null branch(es), nullable, problem) for unions."""
    if isinstance(t, str) and t in named:
        t = named[t]
    if isinstance(t, list):
        branches = [b for b in t if b != "null"]
        if len(branches) == 1:
            return branches[0], True, None
        return t, True, None  # several branches: each must resolve (checked by the caller)
    return t, False, None


def _resolve(schema: dict, path: list[str], named: dict) -> tuple[str | None, bool, str | None]:
    """(writer kind of the field at `path` or None when absent, a record on the way may be null, problem)."""
    node = schema
    nullable = False
    for depth, name in enumerate(path):
        node, n, _ = _non_null(node, named)
        if isinstance(node, dict) and node.get("type") in ("record", "error"):
            found = next((f for f in node["fields"] if f["name"] == name), None)
        elif isinstance(node, list):
            return None, nullable, f"'{'.'.join(path[:depth])}' is a union of several types; a path cannot go through it"
        elif depth == 0:
            return None, nullable, "the writer schema is not a record"
        else:
            return None, nullable, f"'{'.'.join(path[:depth])}' is not a record; '{'.'.join(path)}' cannot be reached"
        if depth:
            nullable = nullable or n
        if found is None:
            return None, nullable, None
        node = found["type"]
    kind = _kind(node, named)
    return kind, nullable, None


def _mismatch(f: FieldSpec, kind) -> str | None:
    where = f.path or f.name
    kinds = [k for k in kind if k != "null"] if isinstance(kind, list) else [kind]
    bad = [k for k in kinds if not isinstance(k, str) or k not in _ACCEPTS[f.type]]
    if not bad:
        if len(kinds) > 1 and len(set(kinds)) > 1:
            return f"field '{where}' is a union of {kinds}; only one non-null type per field is read"
        return None
    shown = bad[0] if isinstance(bad[0], str) else "a union"
    if shown in ("record", "array", "map"):
        return f"field '{where}' is a{'n' if shown[0] in 'a' else ''} {shown}, the spec's {f.type} cannot hold it (declare its leaves with `path`)"
    return f"field '{where}' is {shown} in the writer schema, which does not resolve to the spec's {f.type}"


def _kind_of(kind) -> str:
    if isinstance(kind, list):
        return next((k for k in kind if k != "null"), "null")
    return kind


def _to_arrow(raw: list, kind, f: FieldSpec) -> pa.Array:
    kind = _kind_of(kind)
    t = f.type
    if t == "timestamp":
        ints = pa.array(raw, pa.int64())
        unit = "ms" if kind.endswith("millis") else "us"
        return ints.cast(pa.timestamp(unit, tz="UTC")).cast(pa.timestamp("us", tz="UTC"))
    if t == "date":
        return pa.array(raw, pa.int32()).cast(pa.date32())
    if t == "string":
        if kind == "decimal":  # positional, scale kept: str() would give 1.5E-7 or 0E-9
            raw = [None if v is None else format(v, "f") for v in raw]
        elif kind == "bytes":
            raw = [None if v is None else v.decode("utf-8") for v in raw]
        return pa.array(raw, pa.string())
    if t == "bytes" and kind == "string":
        raw = [None if v is None else v.encode("utf-8") for v in raw]
    if t == "decimal":  # exact, or ArrowInvalid (a value's digits do not fit): that record is quarantined
        return pa.array([None if v is None else Decimal(v) for v in raw], f.arrow_type)
    if t == "float64" and kind == "decimal":
        raw = [None if v is None else float(v) for v in raw]
    return pa.array(raw, f.arrow_type)

