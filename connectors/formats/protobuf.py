"""`format: protobuf`: Protobuf messages in the Confluent wire format, decoded in batches into Arrow.

Each value is `0x00`, a 4-byte big-endian schema id, the message-index array (zig-zag varints:
how many indexes, then each; a lone 0 stands for [0], the file's first message), then the
serialized message. The schema of an id is `.proto` text (a file of `schemas.files`, or the
registry's), compiled when first seen with protoc as the `grpcio-tools` wheel ships it
(`grpc_tools.protoc`, the reference compiler, so what compiles here compiles anywhere) into a
FileDescriptorSet, loaded into a descriptor pool of that id's own (two versions of one message
never clash), and the message the indexes name is parsed by protobuf's runtime (upb).

Fields are matched to the spec by name (the writer's descriptor names the numbers on the wire,
so evolution by field number holds); a spec field's `path` reaches into nested messages.
A spec field the message type lacks reads as null when optional and makes the schema id not
resolve when required. Scalars without presence (proto3 implicit fields) read as their value,
zero included; `optional` fields, messages and wrappers read as null when unset.
Well-known types: google.protobuf.Timestamp → timestamp[us, UTC] (nanoseconds below a
microsecond are cut: the spec's timestamps are microseconds), the wrappers (Int64Value, ...)
→ their value or null; enums → their name (string field) or number (int field).
Repeated fields and maps have no spec type and make the schema id not resolve.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

import pyarrow as pa

from connectors.formats.json import Decoder
from connectors.formats.registry import (
    SchemaUnavailableError,
    WriterSchema,
    schema_source,
    split_header,
)
from connectors.spec import DataProductSpec, FieldSpec

_WRAPPERS = {
    "google.protobuf.DoubleValue": "double", "google.protobuf.FloatValue": "float",
    "google.protobuf.Int64Value": "int64", "google.protobuf.UInt64Value": "uint64",
    "google.protobuf.Int32Value": "int32", "google.protobuf.UInt32Value": "uint32",
    "google.protobuf.BoolValue": "bool", "google.protobuf.StringValue": "string",
    "google.protobuf.BytesValue": "bytes",
}
_TIMESTAMP = "google.protobuf.Timestamp"
# Proto scalar types (after wrappers and Timestamp) each spec type accepts.
_ACCEPTS: dict[str, set[str]] = {
    "string": {"string", "enum", "bytes"},
    "int32": {"int32", "sint32", "sfixed32", "enum"},
    "int64": {"int32", "sint32", "sfixed32", "uint32", "fixed32", "int64", "sint64", "sfixed64"},
    "float64": {"float", "double", "int32", "sint32", "sfixed32", "uint32", "fixed32"},
    "boolean": {"bool"},
    "timestamp": {"timestamp"},
    "date": set(),
    "bytes": {"bytes", "string"},
    "decimal": set(),  # protobuf has no decimal scalar (google.type.Decimal is a message): not read
}


def _type_names() -> dict[int, str]:
    from google.protobuf.descriptor import FieldDescriptor as F

    return {
        F.TYPE_DOUBLE: "double", F.TYPE_FLOAT: "float", F.TYPE_INT64: "int64", F.TYPE_UINT64: "uint64",
        F.TYPE_INT32: "int32", F.TYPE_FIXED64: "fixed64", F.TYPE_FIXED32: "fixed32", F.TYPE_BOOL: "bool",
        F.TYPE_STRING: "string", F.TYPE_BYTES: "bytes", F.TYPE_UINT32: "uint32", F.TYPE_ENUM: "enum",
        F.TYPE_SFIXED32: "sfixed32", F.TYPE_SFIXED64: "sfixed64", F.TYPE_SINT32: "sint32",
        F.TYPE_SINT64: "sint64", F.TYPE_MESSAGE: "message", F.TYPE_GROUP: "group",
    }


@dataclass
class _Column:
    path: list[str]
    kind: str | None  # None: the message lacks the field (reads as null)
    presence: list[bool] = field(default_factory=list)  # per path step: test HasField first
    enum_names: dict[int, str] | None = None


@dataclass
class _Plan:
    key: tuple[int, tuple[int, ...]]
    error: str | None = None
    cls: type | None = None
    columns: list[_Column] = field(default_factory=list)


class ProtobufDecoder(Decoder):
    """Decodes batches of a `format: protobuf` product; build once per run."""

    stateless = False  # decoding plans are built and cached per writer schema as batches come: one thread decodes

    def __init__(self, spec: DataProductSpec, topic: str | None = None, source=None):
        if spec.format != "protobuf":
            raise ValueError(f"{spec.name}: ProtobufDecoder needs format: protobuf")
        super().__init__(spec, topic)
        self.source = source if source is not None else schema_source(spec)
        self._files: dict[int, object] = {}  # schema id → its FileDescriptor
        self._plans: dict[tuple[int, tuple[int, ...]], _Plan] = {}

    def _parse(self, values: list[bytes | None], idx, pieces: list, reasons: list) -> None:
        from google.protobuf.message import DecodeError

        groups: dict[tuple, tuple[list[int], list]] = {}
        plans = self._plans
        for i in idx:
            value = values[i]
            if len(value) < 5 or value[0] != 0:
                reasons[i] = split_header(value)[1]
                continue
            sid = int.from_bytes(value[1:5], "big")
            if len(value) > 5 and value[5] == 0:  # the common case: the lone 0, the first message
                indexes, pos, problem = (0,), 6, None
            else:
                indexes, pos, problem = message_indexes(value, 5)
            if problem is not None:
                reasons[i] = f"schema id {sid}: {problem}"
                continue
            key = (sid, indexes)
            plan = plans.get(key)
            if plan is None:
                plan = plans[key] = self._plan(sid, indexes)
            if plan.error is not None:
                reasons[i] = plan.error
                continue
            try:
                message = plan.cls.FromString(value[pos:])
            except (DecodeError, ValueError, RuntimeError) as exc:
                reasons[i] = f"schema id {sid}: payload cannot be read as {plan.cls.DESCRIPTOR.full_name} (truncated or corrupt: {exc})"[:300]
                continue
            group = groups.get(key)
            if group is None:
                group = groups[key] = ([], [])
            group[0].append(i)
            group[1].append(message)
        for key, (good, messages) in groups.items():
            self._columns(plans[key], good, messages, pieces, reasons)

    # --- schema → plan ----------------------------------------------------------------------

    def _file(self, sid: int):
        found = self._files.get(sid)
        if found is None:
            writer = self.source.get(sid)  # SchemaUnavailableError stops the run
            if writer.kind != "PROTOBUF":
                return None, f"schema id {sid} is a{'n' if writer.kind[0] in 'AEIOU' else ''} {writer.kind} schema, the product reads protobuf"
            found = self._files[sid] = compile_proto(writer)
        return found, None

    def _plan(self, sid: int, indexes: tuple[int, ...]) -> _Plan:
        from google.protobuf import message_factory

        plan = _Plan((sid, indexes))
        fd, problem = self._file(sid)
        if problem is not None:
            plan.error = problem
            return plan
        desc = None
        types = list(fd.message_types_by_name.values())
        for depth, k in enumerate(indexes):
            if k >= len(types):
                plan.error = f"schema id {sid}: message index {list(indexes)} names no message of {fd.name} (at depth {depth})"
                return plan
            desc = types[k]
            types = list(desc.nested_types)
        want = self.spec.schemas.message if self.spec.schemas else None
        if want and desc.full_name != want.lstrip("."):
            plan.error = f"schema id {sid}: the record is a {desc.full_name}, the product reads {want}"
            return plan
        plan.cls = message_factory.GetMessageClass(desc)
        names = _type_names()
        for f in self.spec.fields:
            path = (f.path or f.name).split(".")
            col, problem = _resolve(desc, path, names)
            if problem is None and col.kind is None and f.required:
                problem = f"{desc.full_name} has no field '{'.'.join(path)}', which the product requires"
            if problem is None and col.kind is not None and col.kind not in _ACCEPTS[f.type]:
                problem = f"field '{'.'.join(path)}' is {col.kind} in the writer schema, which does not resolve to the spec's {f.type}"
            if problem is not None:
                plan.error = f"schema id {sid} does not resolve against the product's spec: {problem}"
                return plan
            plan.columns.append(col)
        return plan

    # --- messages → Arrow ---------------------------------------------------------------------

    def _columns(self, plan: _Plan, good: list[int], messages: list, pieces: list, reasons: list) -> None:
        arrays = []
        for col, f in zip(plan.columns, self.spec.fields, strict=True):
            if col.kind is None:
                arrays.append(pa.nulls(len(messages), f.arrow_type))
                continue
            raw = _values(messages, col)
            try:
                arrays.append(_to_arrow(raw, col, f))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeDecodeError) as whole:
                bad = set()
                for k, v in enumerate(raw):
                    try:
                        _to_arrow([v], col, f)
                    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeDecodeError) as exc:
                        reasons[good[k]] = f"schema id {plan.key[0]}: field '{f.name}' cannot be read as {f.type}: {exc}"[:300]
                        bad.add(k)
                if not bad:  # each value reads alone, not together: none is trusted
                    for k in range(len(messages)):
                        reasons[good[k]] = f"schema id {plan.key[0]}: field '{f.name}' cannot be read as {f.type}: {whole}"[:300]
                    return
                keep = [k for k in range(len(messages)) if k not in bad]
                self._columns(plan, [good[k] for k in keep], [messages[k] for k in keep], pieces, reasons)
                return
        if not messages:
            return
        table = pa.Table.from_arrays(arrays, schema=self.value_schema)
        pieces.append((pa.array(good, pa.int64()), self._with_deleted(table, False)))


def message_indexes(value: bytes, pos: int) -> tuple[tuple[int, ...], int, str | None]:
    """The Confluent message-index array at `pos`: (indexes, position after it, problem)."""
    count, pos, problem = _zigzag(value, pos)
    if problem is not None:
        return (), pos, problem
    if count == 0:
        return (0,), pos, None
    if count < 0 or count > 64:
        return (), pos, f"message-index count {count} is not plausible (corrupt header)"
    out = []
    for _ in range(count):
        k, pos, problem = _zigzag(value, pos)
        if problem is not None:
            return (), pos, problem
        if k < 0:
            return (), pos, f"negative message index {k} (corrupt header)"
        out.append(k)
    return tuple(out), pos, None


def _zigzag(value: bytes, pos: int) -> tuple[int, int, str | None]:
    result = shift = 0
    while True:
        if pos >= len(value):
            return 0, pos, "truncated: the message-index array ends early"
        b = value[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            return 0, pos, "malformed message-index varint"
    return (result >> 1) ^ -(result & 1), pos, None


def encode_indexes(indexes: list[int]) -> bytes:
    """The message-index array for `indexes` ([0] is written as a lone 0, as Confluent's clients do)."""
    if list(indexes) == [0]:
        return b"\x00"
    out = bytearray()
    for n in (len(indexes), *indexes):
        z = (n << 1) ^ (n >> 63)
        while True:
            b = z & 0x7F
            z >>= 7
            if z:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
    return bytes(out)


def _resolve(desc, path: list[str], names: dict) -> tuple[_Column, str | None]:
    from google.protobuf.descriptor import FieldDescriptor

    col = _Column(path, None)
    for depth, name in enumerate(path):
        fdesc = desc.fields_by_name.get(name)
        if fdesc is None:
            return col, None
        if _is_repeated(fdesc):
            return col, f"field '{'.'.join(path[: depth + 1])}' is repeated (a list); the spec's types cannot hold it"
        has_presence = fdesc.has_presence
        col.presence.append(has_presence)
        if fdesc.type == FieldDescriptor.TYPE_MESSAGE:
            full = fdesc.message_type.full_name
            if full == _TIMESTAMP:
                col.kind = "timestamp"
            elif full in _WRAPPERS:
                col.kind = _WRAPPERS[full]
                col.presence.append(False)  # .value of a set wrapper
                col.path = [*path[: depth + 1], "value"]
            else:
                if depth == len(path) - 1:
                    return col, f"field '{'.'.join(path)}' is a message ({full}); declare its leaves with `path`"
                desc = fdesc.message_type
                continue
            if depth != len(path) - 1:
                return col, f"'{'.'.join(path[: depth + 1])}' is a {full}; '{'.'.join(path)}' cannot be reached"
            return col, None
        if depth != len(path) - 1:
            return col, f"'{'.'.join(path[: depth + 1])}' is not a message; '{'.'.join(path)}' cannot be reached"
        col.kind = names[fdesc.type]
        if col.kind == "enum":
            col.enum_names = {v.number: v.name for v in fdesc.enum_type.values}
    return col, None


def _is_repeated(fdesc) -> bool:
    label = getattr(fdesc, "label", None)
    return bool(getattr(fdesc, "is_repeated", False)) or label == 3  # LABEL_REPEATED


def _values(messages: list, col: _Column) -> list:
    """The column's values, walking its path one step at a time over all messages (a list
    comprehension per step: a call per value per step would cost several times more)."""
    nodes = messages
    may_be_null = False
    for name, presence in zip(col.path, col.presence, strict=False):
        if presence:
            nodes = [None if n is None or not n.HasField(name) else getattr(n, name) for n in nodes]
            may_be_null = True
        elif may_be_null:
            nodes = [None if n is None else getattr(n, name) for n in nodes]
        else:
            nodes = list(map(attrgetter(name), nodes))
    if col.kind == "timestamp":
        return [None if t is None else t.seconds * 1_000_000 + t.nanos // 1000 for t in nodes]
    return nodes


def _to_arrow(raw: list, col: _Column, f: FieldSpec) -> pa.Array:
    if col.kind == "timestamp":
        return pa.array(raw, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    if col.kind == "enum" and f.type == "string":
        names = col.enum_names or {}
        raw = [None if v is None else names.get(v, str(v)) for v in raw]
    elif col.kind == "bytes" and f.type == "string":
        raw = [None if v is None else v.decode("utf-8") for v in raw]
    elif col.kind == "string" and f.type == "bytes":
        raw = [None if v is None else v.encode("utf-8") for v in raw]
    return pa.array(raw, f.arrow_type)


# --- compiling .proto text ------------------------------------------------------------------------


def compile_proto(writer: WriterSchema):
    """Compile a .proto schema (and its imports) with protoc; its FileDescriptor, in a pool of its own.

    A schema in the registry's serialized form (a base64 FileDescriptorProto, as confluent-kafka's
    ProtobufSerializer registers it and `?format=serialized` returns it) is loaded as it is."""
    serialized = _serialized(writer)
    if serialized is not None:
        return serialized
    import subprocess
    import sys

    import grpc_tools
    from google.protobuf import descriptor_pb2, descriptor_pool

    include = str(Path(grpc_tools.__file__).parent / "_proto")  # google/protobuf/*.proto
    main = "schema.proto"
    with tempfile.TemporaryDirectory(prefix="flowsuite-proto-") as tmp:
        for name, text in {**writer.references, main: writer.text}.items():
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        out = os.path.join(tmp, "set.desc")
        # protoc in a process of its own: its diagnostics go to its stderr, not this process's.
        done = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp}", f"-I{include}", "--include_imports",
             f"--descriptor_set_out={out}", os.path.join(tmp, main)],
            capture_output=True, text=True, timeout=60,
        )
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.replace(tmp + os.sep, "").splitlines()
                     if ln.strip() and not ln.startswith(("WARNING: All log messages", "W0000"))]
            raise SchemaUnavailableError(
                f"schema id {writer.id} ({writer.name}) does not compile as a .proto file: {' '.join(lines)[:500]}"
            )
        fds = descriptor_pb2.FileDescriptorSet.FromString(Path(out).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for fdp in fds.file:
        pool.Add(fdp)
    return pool.FindFileByName(main)


def _serialized(writer: WriterSchema):
    import base64
    import binascii

    from google.protobuf import (  # noqa: F401 - puts the well-known types into the default pool
        any_pb2,
        descriptor_pb2,
        descriptor_pool,
        duration_pb2,
        empty_pb2,
        field_mask_pb2,
        struct_pb2,
        timestamp_pb2,
        wrappers_pb2,
    )
    from google.protobuf.message import DecodeError

    def parse(text: str):
        if "{" in text or ";" in text:
            return None  # .proto text
        try:
            fdp = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError, DecodeError):
            return None
        return fdp if fdp.message_type or fdp.enum_type or fdp.dependency else None

    main = parse(writer.text)
    if main is None:
        return None
    pool = descriptor_pool.DescriptorPool()
    refs = {name: parse(text) for name, text in writer.references.items()}
    added: set[str] = set()

    def add(fdp) -> None:
        for dep in fdp.dependency:
            if dep in added:
                continue
            if dep.startswith("google/protobuf/"):
                wkt = descriptor_pb2.FileDescriptorProto()
                descriptor_pool.Default().FindFileByName(dep).CopyToProto(wkt)
                add(wkt)
            elif refs.get(dep) is not None:
                add(refs[dep])
            else:
                raise SchemaUnavailableError(f"schema id {writer.id} ({writer.name}) imports {dep}, which is not among its references")
        if fdp.name not in added:
            pool.Add(fdp)
            added.add(fdp.name)

    if not main.name:
        main.name = "schema.proto"
    add(main)
    return pool.FindFileByName(main.name)
