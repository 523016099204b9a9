"""Spec fields shared by the Avro and Protobuf decoder tests: both decode an `Everything` record
that starts with the same scalars and holds the same nested `device`."""

from __future__ import annotations

# s, i, l, d, f, b, raw: the scalar columns both `Everything` schemas begin with.
SCALAR_FIELDS = [
    {"name": "s", "type": "string", "required": True},
    {"name": "i", "type": "int32"},
    {"name": "l", "type": "int64"},
    {"name": "d", "type": "float64"},
    {"name": "f", "type": "float64"},
    {"name": "b", "type": "boolean"},
    {"name": "raw", "type": "bytes"},
]
# The nested device.os and device.screen.w, flattened into columns.
DEVICE_FIELDS = [
    {"name": "os", "type": "string", "path": "device.os"},
    {"name": "screen_w", "type": "int32", "path": "device.screen.w"},
]
