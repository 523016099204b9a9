"""A decoder of PostgreSQL's `pgoutput` logical replication messages (protocol version 1).

Implements the messages of "Logical Replication Message Formats" (PostgreSQL docs, chapter
protocol-logicalrep-message-formats) that a publication without streaming of in-progress
transactions sends: Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate
and Message. Column values arrive in text format ('t'), as NULL ('n') or as an unchanged
TOAST value ('u', a value the server did not send because the update did not change it);
`UNCHANGED_TOAST` marks the latter, so nothing downstream ever mistakes it for data.

All integers are network byte order; strings are NUL-terminated UTF-8; LSNs are 64-bit;
timestamps are microseconds since 2000-01-01 UTC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from connectors.errors import TerminalError

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class _Unchanged:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST = _Unchanged()


class DecodeError(TerminalError, ValueError):
    """A message that does not follow the pgoutput format."""


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    part_of_key: bool


@dataclass(frozen=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # d default, n nothing, f full, i index
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True)
class Begin:
    final_lsn: int  # the commit's LSN
    commit_time: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True)
class TypeMessage:
    oid: int
    namespace: str
    name: str


# A tuple: one entry per column, the text value (str), None for NULL, or UNCHANGED_TOAST.
Tuple = tuple


@dataclass(frozen=True)
class Insert:
    relation_oid: int
    new: Tuple


@dataclass(frozen=True)
class Update:
    relation_oid: int
    new: Tuple
    old: Tuple | None = None  # full old row (REPLICA IDENTITY FULL) …
    old_key: Tuple | None = None  # … or the old key, when the key changed


@dataclass(frozen=True)
class Delete:
    relation_oid: int
    old: Tuple | None = None
    old_key: Tuple | None = None


@dataclass(frozen=True)
class Truncate:
    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes = field(repr=False)


Message = Begin | Commit | Origin | Relation | TypeMessage | Insert | Update | Delete | Truncate | LogicalMessage


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL prints it: two hex halves, `16/B374D848`."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def pg_time(micros: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=micros)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def _take(self, fmt: str, size: int):
        if self.pos + size > len(self.buf):
            raise DecodeError(f"message ends early (needs {size} bytes at {self.pos} of {len(self.buf)})")
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return v

    def byte(self) -> str:
        return chr(self._take("!B", 1))

    def int8(self) -> int:
        return self._take("!b", 1)

    def int16(self) -> int:
        return self._take("!h", 2)

    def int32(self) -> int:
        return self._take("!i", 4)

    def uint32(self) -> int:
        return self._take("!I", 4)

    def int64(self) -> int:
        return self._take("!q", 8)

    def uint64(self) -> int:
        return self._take("!Q", 8)

    def string(self) -> str:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise DecodeError("string without its terminating NUL")
        s = self.buf[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return s

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise DecodeError(f"value of {n} bytes runs past the message end")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(b)


_H = struct.Struct("!h").unpack_from
_I = struct.Struct("!i").unpack_from
_OID = struct.Struct("!I").unpack_from


def _fast_tuple(buf: bytes, pos: int) -> tuple[Tuple, int]:
    """TupleData at `pos` → (values, position after it); the hot path of every change."""
    if pos + 2 > len(buf):
        raise DecodeError("message ends early (tuple header)")
    (n,) = _H(buf, pos)
    pos += 2
    values: list = []
    append = values.append
    size = len(buf)
    for _ in range(n):
        if pos >= size:
            raise DecodeError("message ends early (tuple column)")
        kind = buf[pos]
        pos += 1
        if kind == 116 or kind == 98:  # 't' text, 'b' binary
            if pos + 4 > size:
                raise DecodeError("message ends early (value length)")
            (length,) = _I(buf, pos)
            pos += 4
            end = pos + length
            if length < 0 or end > size:
                raise DecodeError(f"value of {length} bytes runs past the message end")
            append(buf[pos:end].decode("utf-8") if kind == 116 else bytes(buf[pos:end]))
            pos = end
        elif kind == 110:  # 'n'
            append(None)
        elif kind == 117:  # 'u'
            append(UNCHANGED_TOAST)
        else:
            raise DecodeError(f"unknown tuple column kind {chr(kind)!r}")
    return tuple(values), pos


def _tag(buf: bytes, pos: int) -> str:
    if pos >= len(buf):
        raise DecodeError("message ends early (tuple tag)")
    return chr(buf[pos])


def _change(kind: str, buf: bytes) -> Message:
    if len(buf) < 6:
        raise DecodeError("message ends early (relation id)")
    (oid,) = _OID(buf, 1)
    tag = _tag(buf, 5)
    if kind == "I":
        if tag != "N":
            raise DecodeError("Insert without its new tuple")
        return Insert(oid, _fast_tuple(buf, 6)[0])
    if kind == "D":
        if tag not in "KO":
            raise DecodeError(f"Delete without an old tuple (got {tag!r})")
        old = _fast_tuple(buf, 6)[0]
        return Delete(oid, old=old) if tag == "O" else Delete(oid, old_key=old)
    old = old_key = None
    tag_at = 5
    if tag in "KO":
        values, tag_at = _fast_tuple(buf, 6)
        old, old_key = (values, None) if tag == "O" else (None, values)
        tag = _tag(buf, tag_at)
    if tag != "N":
        raise DecodeError(f"Update without its new tuple (got {tag!r})")
    return Update(oid, _fast_tuple(buf, tag_at + 1)[0], old, old_key)


def decode(payload: bytes) -> Message:
    """One pgoutput message (the payload of an XLogData message) → a dataclass."""
    if not payload:
        raise DecodeError("empty message")
    first = chr(payload[0])
    if first in "IUD":
        return _change(first, payload)
    r = _Reader(payload)
    kind = r.byte()
    if kind == "B":
        return Begin(r.uint64(), pg_time(r.int64()), r.uint32())
    if kind == "C":
        return Commit(r.int8(), r.uint64(), r.uint64(), pg_time(r.int64()))
    if kind == "O":
        return Origin(r.uint64(), r.string())
    if kind == "R":
        oid, namespace, name = r.uint32(), r.string(), r.string()
        identity = r.byte()
        columns = []
        for _ in range(r.int16()):
            flags = r.int8()
            columns.append(Column(r.string(), r.uint32(), r.int32(), bool(flags & 1)))
        return Relation(oid, namespace or "pg_catalog", name, identity, tuple(columns))
    if kind == "Y":
        return TypeMessage(r.uint32(), r.string(), r.string())
    if kind == "T":
        n = r.int32()
        options = r.int8()
        return Truncate(tuple(r.uint32() for _ in range(n)), bool(options & 1), bool(options & 2))
    if kind == "M":
        flags = r.int8()
        lsn = r.uint64()
        prefix = r.string()
        return LogicalMessage(bool(flags & 1), lsn, prefix, r.raw(r.int32()))
    raise DecodeError(f"unknown pgoutput message type {kind!r}")
