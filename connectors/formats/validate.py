"""Record-level validation from the spec, vectorized with pyarrow.compute.

Each rule yields, per row, the reason it fails (or null); the first failing rule of a row is
its quarantine reason. Rules come straight from the spec's fields: required, enum, min/max,
pattern (a regular expression that must match somewhere; anchor it with ^...$), max_length.
Type checks happen earlier, while decoding, where the original value is still at hand.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from connectors.spec import DataProductSpec, FieldSpec


def _reason(mask: pa.Array, text) -> pa.Array | None:
    """`text` where mask is true, null elsewhere; None when no row fails (the common case,
    so the per-row message, which costs a string per row, is only built when needed).
    `text` is a string or a function returning a string array."""
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return None
    text = pa.scalar(text, pa.string()) if isinstance(text, str) else text()
    return pc.if_else(mask, text, pa.scalar(None, pa.string()))


def _show(values: pa.Array) -> pa.Array:
    """Offending values as short strings for a human reading the quarantine."""
    as_text = pc.cast(values, pa.string()) if values.type != pa.string() else values
    return pc.utf8_slice_codeunits(as_text, 0, 80)


def field_violations(field: FieldSpec, column: pa.Array) -> list[pa.Array]:
    name = field.name
    reasons: list[pa.Array | None] = []
    if field.required:
        reasons.append(_reason(pc.is_null(column), f"missing required field '{name}'"))
    if field.enum is not None:
        allowed = pa.array(field.enum, type=column.type)
        bad = pc.invert(pc.is_in(column, value_set=allowed))
        listed = ", ".join(str(x) for x in field.enum)
        reasons.append(
            _reason(bad, lambda: pc.binary_join_element_wise(f"field '{name}' = '", _show(column), f"' is not one of [{listed}]", ""))
        )
    if field.min is not None:
        bad = pc.less(column, pa.scalar(field.min).cast(pa.float64()).cast(column.type, safe=False))
        reasons.append(_reason(bad, lambda: pc.binary_join_element_wise(f"field '{name}' = ", _show(column), f" is below min {field.min:g}", "")))
    if field.max is not None:
        bad = pc.greater(column, pa.scalar(field.max).cast(pa.float64()).cast(column.type, safe=False))
        reasons.append(_reason(bad, lambda: pc.binary_join_element_wise(f"field '{name}' = ", _show(column), f" is above max {field.max:g}", "")))
    if field.pattern is not None:
        bad = pc.invert(pc.match_substring_regex(column, field.pattern))
        reasons.append(
            _reason(bad, lambda: pc.binary_join_element_wise(f"field '{name}' = '", _show(column), f"' does not match pattern {field.pattern}", ""))
        )
    if field.max_length is not None:
        length = pc.utf8_length(column) if field.type == "string" else pc.binary_length(column)
        bad = pc.greater(length, field.max_length)
        reasons.append(
            _reason(bad, lambda: pc.binary_join_element_wise(f"field '{name}' is ", pc.cast(length, pa.string()), f" long, above max_length {field.max_length}", ""))
        )
    return [r for r in reasons if r is not None]


def first_reason(reasons: list[pa.Array], length: int) -> pa.Array:
    """Per row, the first non-null reason (null when every rule passed)."""
    if not reasons:
        return pa.nulls(length, pa.string())
    return pc.coalesce(*reasons) if len(reasons) > 1 else reasons[0]


def record_violations(spec: DataProductSpec, table: pa.Table, skip: pa.Array | None = None) -> pa.Array:
    """Per row, why the record breaks the spec's rules, or null. `skip` rows (e.g. tombstones)
    are not checked: a delete marker carries only its key."""
    reasons: list[pa.Array] = []
    for field in spec.fields:
        if field.name not in table.column_names:
            continue
        column = table.column(field.name).combine_chunks() if table.num_rows else pa.array([], field.arrow_type)
        reasons.extend(field_violations(field, column))
    result = first_reason(reasons, table.num_rows)
    if skip is not None:
        result = pc.if_else(skip, pa.scalar(None, pa.string()), result)
    return result
