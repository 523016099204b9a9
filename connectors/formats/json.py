# Over 400 lines: one decoder whose fast path, bisection and per-record slow path must agree on every reason.
"""Decoding a batch of Kafka messages into Arrow: valid rows, and quarantined rows with reasons.

The hot path joins the batch's values into newline-delimited JSON and parses it in one call
to `pyarrow.json` with the spec's schema (≈830k rows/s here vs ≈250k for `json.loads` alone).
When that parse fails — a malformed or mistyped record somewhere in the batch — the batch is
bisected, so only small slices containing bad records fall back to a per-record parse that
can say exactly what is wrong with each. Values that are null (tombstones), empty, or span
lines (pretty-printed JSON would break the line framing) are sorted out vectorized first.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, date, datetime
from decimal import ROUND_DOWN, Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from connectors.formats.base import Batch, Decoded
from connectors.formats.schema import PROVENANCE, QUARANTINE_SCHEMA, payload_lake_schema
from connectors.formats.validate import record_violations
from connectors.spec import DataProductSpec, FieldSpec

SLOW_PATH_SLICE = 16  # below this many records, parse one by one
CHUNK = 512  # a failing batch is re-parsed in slices of this size, then row by row
_ROW_IN_ERROR = re.compile(r"in row (\d+)")



def _parse_schema(spec: DataProductSpec) -> pa.Schema:
    # JSON has no bytes; a bytes field arrives as a string and is cast after parsing.
    return pa.schema(
        [pa.field(f.name, pa.string() if f.type == "bytes" else f.arrow_type) for f in spec.fields]
    )


class Decoder:
    """Decodes batches for one product; build once per run."""

    needs_headers = False
    # decode() reads only the batch and what __init__ built, so batches may be decoded in
    # several threads at once (landing does, connectors/flows/landing.py decoded_batches).
    # Subclasses that keep state across batches (a schema cache, seen ids) set it False.
    stateless = True

    def __init__(self, spec: DataProductSpec, topic: str | None = None):
        self.spec = spec
        self.topic = topic or spec.topic
        self.schema = payload_lake_schema(spec)  # a CloudEvents product's ce_* come on top
        self.value_schema = spec.arrow_schema()
        self._topic_dict = pa.array([self.topic], pa.string())
        self._parse_options = pj.ParseOptions(
            explicit_schema=_parse_schema(spec), unexpected_field_behavior="ignore"
        )

    # --- public -------------------------------------------------------------------------

    def decode(self, batch: Batch) -> Decoded:
        n = len(batch)
        values = batch.values
        reasons: list[str | None] = [None] * n
        pieces: list[tuple[pa.Array, pa.Table]] = []  # (row indices, parsed rows)
        # Tombstones (None) and empty values are rare: find them with C-level scans first.
        # A value spanning lines needs no check: it breaks the line framing, so the parse
        # fails or returns the wrong row count, and bisection hands it to the slow path.
        tombstone_idx = [i for i, v in enumerate(values) if v is None] if None in values else []
        empty_idx = [i for i, v in enumerate(values) if v == b""] if b"" in values else []
        if tombstone_idx or empty_idx:
            odd = set(tombstone_idx) | set(empty_idx)
            self._parse(values, [i for i in range(n) if i not in odd], pieces, reasons)
        elif n:
            self._parse(values, range(n), pieces, reasons)
        for i in empty_idx:
            reasons[i] = "value is empty"
        deletes = self.spec.deletes_enabled
        if tombstone_idx:
            if deletes:
                self._tombstones(batch, tombstone_idx, pieces, reasons)
            else:
                for i in tombstone_idx:
                    reasons[i] = "tombstone (null value) but the product does not accept deletes (sinks.database.deletes)"

        provenance = self._provenance(batch)
        if len(pieces) == 1 and len(pieces[0][0]) == n:  # the common case: everything parsed at once
            index, parsed = pieces[0]
            rows = parsed
            for name in PROVENANCE.names:
                rows = rows.append_column(name, provenance[name])
        else:
            if pieces:
                index = pa.chunked_array([p[0] for p in pieces], pa.int64()).combine_chunks()
                parsed = pa.concat_tables([p[1] for p in pieces]).combine_chunks()
            else:
                index = pa.array([], pa.int64())
                parsed = self._empty_values(deletes)
            order = pc.sort_indices(index)
            index = pc.take(index, order)
            rows = parsed.take(order)
            for name in PROVENANCE.names:
                rows = rows.append_column(name, pc.take(provenance[name], index))
        if deletes:
            deleted = rows.column("_deleted")
            rows = rows.drop_columns(["_deleted"]).append_column("_deleted", deleted)
        if rows.schema != self.schema:
            rows = rows.select(self.schema.names).cast(self.schema)

        # Record-level rules on everything that parsed; tombstones carry only their key.
        skip = pc.fill_null(rows.column("_deleted"), False).combine_chunks() if deletes else None
        violation = record_violations(self.spec, rows, skip=skip) if rows.num_rows else pa.array([], pa.string())
        event_hours, no_time = self._hours(rows)
        if pc.any(no_time).as_py():
            violation = pc.coalesce(violation, pc.if_else(no_time, pa.scalar(self._no_time_reason()), pa.scalar(None, pa.string())))
        q_idx = [i for i, r in enumerate(reasons) if r is not None] if pieces_missing(pieces, n) else []
        if violation.null_count == len(violation):  # every parsed row passed the rules
            valid, hours = rows, event_hours
            bad_rows = pa.array([], pa.int64())
        else:
            bad = pc.is_valid(violation)
            valid = rows.filter(pc.invert(bad))
            hours = event_hours.filter(pc.invert(bad))
            bad_rows = pc.indices_nonzero(bad)
        if not q_idx and not len(bad_rows):
            return Decoded(valid=valid, hours=hours, invalid=QUARANTINE_SCHEMA.empty_table())
        # Quarantine: parse/type failures, then rule violations of parsed rows.
        q_reasons = [reasons[i] for i in q_idx]
        q_index = pa.concat_arrays([pa.array(q_idx, pa.int64()), pc.take(index, bad_rows).cast(pa.int64())])
        q_reason = pa.concat_arrays([pa.array(q_reasons, pa.string()), pc.take(violation, bad_rows)])
        order = pc.sort_indices(q_index)
        q_index, q_reason = pc.take(q_index, order), pc.take(q_reason, order)
        raw = pa.array([values[i] for i in q_index.to_pylist()], pa.binary())
        invalid = pa.table(
            {name: pc.take(provenance[name], q_index) for name in PROVENANCE.names}
            | {"_error": q_reason, "_raw": raw},
            schema=QUARANTINE_SCHEMA,
        )
        return Decoded(valid=valid, hours=hours, invalid=invalid)

    # --- parsing ------------------------------------------------------------------------

    def _parse(self, values: list[bytes | None], idx, pieces: list, reasons: list) -> None:
        """Parse values[idx] (a list or range of indices) on the fast path.

        A failing call costs a fixed ~100 µs, so bad records are isolated with as few calls
        as possible: pyarrow names the first failing row ("… in row 7"), the rows before it
        are re-parsed in one call, the bad one goes to the per-record path, and parsing
        resumes after it. Failures that name no row (a number that does not fit) split the
        slice instead. Every accepted parse must return exactly one row per value.
        """
        todo = [idx]
        while todo:
            idx = todo.pop()
            if len(idx) <= SLOW_PATH_SLICE:
                self._parse_slow(values, list(idx), pieces, reasons)
                continue
            whole = isinstance(idx, range) and idx.start == 0 and idx.stop == len(values)
            data = b"\n".join(values if whole else [values[i] for i in idx])
            if data.count(b"\n") != len(idx) - 1 or b"\r" in data:
                # A value spans lines and would shift the row numbering: set those aside.
                multiline = [i for i in idx if b"\n" in values[i] or b"\r" in values[i]]
                self._parse_slow(values, multiline, pieces, reasons)
                rest = [i for i in idx if not (b"\n" in values[i] or b"\r" in values[i])]
                if rest:
                    todo.append(rest)
                continue
            try:
                # pyarrow.json does not validate UTF-8: a bad byte would land as a broken string.
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                culprit = self._value_at(values, idx, exc.start)
                self._parse_slow(values, [idx[culprit]], pieces, reasons)
                if culprit + 1 < len(idx):
                    todo.append(idx[culprit + 1 :])
                if culprit:
                    todo.append(idx[:culprit])
                continue
            table, bad_row = self._read_json(data)
            if table is not None and table.num_rows == len(idx):
                index = pa.arange(idx.start, idx.stop) if isinstance(idx, range) else pa.array(idx, pa.int64())
                pieces.append((index, self._finish(table)))
                continue
            if bad_row is not None and 0 <= bad_row < len(idx) and len(idx) <= CHUNK:
                self._parse_slow(values, [idx[bad_row]], pieces, reasons)
                if bad_row + 1 < len(idx):
                    todo.append(idx[bad_row + 1 :])
                if bad_row:
                    todo.append(idx[:bad_row])
                continue
            step = CHUNK if len(idx) > CHUNK else max(SLOW_PATH_SLICE, -(-len(idx) // 8))
            for lo in range(0, len(idx), step):
                todo.append(idx[lo : lo + step])

    @staticmethod
    def _value_at(values: list[bytes | None], idx, byte_pos: int) -> int:
        """Position in `idx` of the value holding byte `byte_pos` of the newline-joined data."""
        end = 0
        for k, i in enumerate(idx):
            end += len(values[i]) + 1
            if byte_pos < end:
                return k
        return len(idx) - 1

    def _read_json(self, data: bytes) -> tuple[pa.Table | None, int | None]:
        """Parse NDJSON; on failure return the failing row when pyarrow names it."""
        try:
            table = pj.read_json(
                io.BytesIO(data),
                read_options=pj.ReadOptions(use_threads=False, block_size=max(1 << 20, len(data) + 1)),
                parse_options=self._parse_options,
            )
            return table, None
        except (pa.ArrowInvalid, UnicodeDecodeError, ValueError) as exc:
            match = _ROW_IN_ERROR.search(str(exc))
            return None, int(match.group(1)) if match else None

    def _parse_slow(self, values: list[bytes | None], idx: list[int], pieces: list, reasons: list) -> None:
        good_idx: list[int] = []
        rows: list[dict] = []
        for i in idx:
            row, reason = self._decode_one(values[i])
            if reason is None:
                good_idx.append(i)
                rows.append(row)
            else:
                reasons[i] = reason
        if rows:
            table = pa.Table.from_pylist(rows, schema=self.value_schema)
            pieces.append((pa.array(good_idx, pa.int64()), self._with_deleted(table, False)))

    def _decode_one(self, value: bytes) -> tuple[dict | None, str | None]:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"value is not valid UTF-8 (byte {exc.start})"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        except RecursionError:
            return None, "malformed JSON: nested too deeply"
        if not isinstance(obj, dict):
            return None, f"value is a JSON {_json_type(obj)}, expected an object"
        row: dict = {}
        for field in self.spec.fields:
            v = obj.get(field.name)
            if v is None:
                row[field.name] = None
                continue
            converted, problem = _convert(field, v)
            if problem:
                return None, problem
            row[field.name] = converted
        return row, None

    def _finish(self, table: pa.Table) -> pa.Table:
        for f in self.spec.fields:
            if f.type == "bytes":
                i = table.schema.get_field_index(f.name)
                table = table.set_column(i, f.name, pc.cast(table.column(f.name), pa.binary()))
        return self._with_deleted(table, False)

    def _with_deleted(self, table: pa.Table, deleted: bool) -> pa.Table:
        if self.spec.deletes_enabled:
            table = table.append_column("_deleted", pa.repeat(pa.scalar(deleted, pa.bool_()), table.num_rows))
        return table

    def _empty_values(self, deletes: bool) -> pa.Table:
        return self._with_deleted(self.value_schema.empty_table(), False)

    def _tombstones(self, batch: Batch, idx: list[int], pieces: list, reasons: list) -> None:
        good_idx, rows = [], []
        for i in idx:
            key = batch.keys[i]
            row, problem = self._key_fields(key)
            if problem:
                reasons[i] = problem
            else:
                good_idx.append(i)
                rows.append(row)
        if rows:
            table = pa.Table.from_pylist(rows, schema=self.value_schema)
            pieces.append((pa.array(good_idx, pa.int64()), self._with_deleted(table, True)))

    def _key_fields(self, key: bytes | None) -> tuple[dict | None, str | None]:
        """A tombstone carries only its Kafka key: one key field's value, or a JSON object of them."""
        if key is None:
            return None, "tombstone without a key cannot delete anything"
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            return None, "tombstone key is not valid UTF-8"
        fields = [self.spec.field(k) for k in self.spec.key]
        if len(fields) == 1:
            parsed: dict = {fields[0].name: text}
            if fields[0].type != "string":
                try:
                    parsed = {fields[0].name: json.loads(text)}
                except json.JSONDecodeError:
                    return None, f"tombstone key {text[:80]!r} is not a valid {fields[0].type}"
        else:
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                return None, f"tombstone key {text[:80]!r} must be a JSON object of {self.spec.key}"
        row = {f.name: None for f in self.spec.fields}
        for f in fields:
            if parsed.get(f.name) is None:
                return None, f"tombstone key lacks key field '{f.name}'"
            converted, problem = _convert(f, parsed[f.name])
            if problem:
                return None, f"tombstone key: {problem}"
            row[f.name] = converted
        return row, None

    # --- provenance and event time ------------------------------------------------------

    def _provenance(self, batch: Batch) -> dict[str, pa.Array]:
        n = len(batch)
        keys = pa.array(batch.keys, pa.binary())
        return {
            # pa.repeat of a string scalar loops in Python (13 ms per 10k); a one-word dictionary
            # decoded to strings costs 0.2 ms.
            "_topic": pa.DictionaryArray.from_arrays(pa.repeat(pa.scalar(0, pa.int32()), n), self._topic_dict).cast(pa.string()),
            "_partition": pa.repeat(pa.scalar(batch.partition, pa.int32()), n),
            "_offset": pa.array(batch.offsets, pa.int64()),
            "_timestamp": pa.array(batch.timestamps, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "_key": _utf8_or_hex(keys),
        }

    def _hours(self, rows: pa.Table) -> tuple[pa.Array, pa.Array]:
        """Epoch hour of each row's event time, and a mask of rows without one."""
        et = self.spec.event_time
        kafka_ts = rows.column("_timestamp").combine_chunks().cast(pa.timestamp("us", tz="UTC"))
        if et.source == "kafka_timestamp" or not rows.num_rows:
            ts = kafka_ts
        else:
            column = rows.column(et.field).combine_chunks() if et.source == "field" else None
            if column is None:
                ts = kafka_ts
            elif pa.types.is_integer(column.type):  # epoch milliseconds
                ts = pc.cast(column, pa.int64()).cast(pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("us", tz="UTC"))
            else:
                ts = column
            if et.fallback == "kafka_timestamp":
                ts = pc.coalesce(ts, kafka_ts)
            if self.spec.deletes_enabled:  # a delete marker has no event time: use when it was written
                ts = pc.if_else(pc.fill_null(rows.column("_deleted").combine_chunks(), False), kafka_ts, ts)
        micros = pc.cast(ts, pa.int64())
        hours = pc.floor(pc.divide(pc.cast(micros, pa.float64()), 3_600_000_000.0)).cast(pa.int64())
        return hours, pc.is_null(micros)

    def _no_time_reason(self) -> str:
        return f"no event time: field '{self.spec.event_time.field}' is null and event_time.fallback is 'none'"


def pieces_missing(pieces: list[tuple[pa.Array, pa.Table]], n: int) -> bool:
    """True when some rows of the batch did not parse (their reasons are set)."""
    return sum(len(p[0]) for p in pieces) != n


def _utf8_or_hex(keys: pa.Array) -> pa.Array:
    try:
        return keys.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([None if k is None else _key_text(k) for k in keys.to_pylist()], pa.string())


def _key_text(k: bytes) -> str:
    try:
        return k.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + k.hex()


def _json_type(v: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(v), "null")


def _convert(field: FieldSpec, v: object) -> tuple[object, str | None]:
    """Check one JSON value against the field's type; the same acceptance as the Arrow parser."""
    t = field.type

    def wrong() -> tuple[None, str]:
        shown = json.dumps(v)[:80] if not isinstance(v, bytes) else repr(v)[:80]
        return None, f"field '{field.name}': expected {t}, got {_json_type(v)} {shown}"

    if t == "string":
        return (v, None) if isinstance(v, str) else wrong()
    if t in ("int32", "int64"):
        if isinstance(v, bool) or not isinstance(v, int):
            return wrong()
        bits = 31 if t == "int32" else 63
        if not -(2**bits) <= v < 2**bits:
            return None, f"field '{field.name}': {v} does not fit in {t}"
        return v, None
    if t == "float64":
        if isinstance(v, bool) or not isinstance(v, int | float):
            return wrong()
        return float(v), None
    if t == "decimal":  # a JSON string of decimal text, or a number
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            return wrong()
        try:
            d = Decimal(v if isinstance(v, str) else repr(v))
        except ArithmeticError:
            return None, f"field '{field.name}': {str(v)[:80]!r} is not a decimal number"
        if not d.is_finite():
            return None, f"field '{field.name}': {v!r} is not a finite decimal"
        scale = field.scale or 0
        if d != d.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_DOWN) or \
                len(d.quantize(Decimal(1).scaleb(-scale)).as_tuple().digits) > (field.precision or 38):
            return None, f"field '{field.name}': {str(v)[:80]} does not fit decimal({field.precision},{scale})"
        return d, None
    if t == "boolean":
        return (v, None) if isinstance(v, bool) else wrong()
    if t == "timestamp":
        if not isinstance(v, str):
            return wrong()
        try:
            ts = datetime.fromisoformat(v)
        except ValueError:
            return None, f"field '{field.name}': {v[:80]!r} is not an ISO-8601 timestamp"
        return (ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)), None
    if t == "date":
        if not isinstance(v, str):
            return wrong()
        try:
            return date.fromisoformat(v), None
        except ValueError:
            return None, f"field '{field.name}': {v[:80]!r} is not an ISO-8601 date"
    if t == "bytes":
        return (v.encode("utf-8"), None) if isinstance(v, str) else wrong()
    return wrong()
