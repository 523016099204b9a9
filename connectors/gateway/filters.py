"""CloudEvents Subscriptions API filters (subscriptions/spec.md §3.2.4): validate and evaluate.

The six REQUIRED dialects: `exact`, `prefix`, `suffix` (a map of attribute → string, all must
match, case sensitive, names and values non-empty), `all` and `any` (a non-empty array of
filters) and `not` (one filter). The OPTIONAL `sql` dialect (CESQL) is not supported, so —
as the spec requires — a subscription naming it, or any other dialect, is rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.errors import TerminalError

ATTRIBUTE_DIALECTS = ("exact", "prefix", "suffix")
SUPPORTED = (*ATTRIBUTE_DIALECTS, "all", "any", "not")
MAX_DEPTH = 8  # nesting of all/any/not; deeper is a 400, not a stack overflow


class FilterError(TerminalError, ValueError):
    """A filter is malformed or uses an unsupported dialect; the message names the place."""


def validate_filters(filters: Any) -> list[dict[str, Any]]:
    """The `filters` array of a subscription, checked; raises FilterError naming the problem."""
    if filters is None:
        return []
    if not isinstance(filters, list):
        raise FilterError("filters must be an array of filter expressions")
    for i, f in enumerate(filters):
        _validate(f, f"filters[{i}]", 0)
    return filters


def _validate(f: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FilterError(f"{where}: filters nest deeper than {MAX_DEPTH} levels")
    if not isinstance(f, dict) or len(f) != 1:
        raise FilterError(f"{where}: a filter expression is an object with exactly one dialect, e.g. {{\"exact\": {{...}}}}")
    ((dialect, value),) = f.items()
    if dialect not in SUPPORTED:
        raise FilterError(
            f"{where}: filter dialect {dialect!r} is not supported (supported: {', '.join(SUPPORTED)})"
        )
    if dialect in ATTRIBUTE_DIALECTS:
        if not isinstance(value, dict) or not value:
            raise FilterError(f"{where}.{dialect}: expected a non-empty map of attribute name to string")
        for name, expected in value.items():
            if not isinstance(name, str) or not name:
                raise FilterError(f"{where}.{dialect}: attribute names must be non-empty strings")
            if not isinstance(expected, str) or not expected:
                raise FilterError(f"{where}.{dialect}.{name}: the value must be a non-empty string")
    elif dialect in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise FilterError(f"{where}.{dialect}: expected a non-empty array of filter expressions")
        for i, nested in enumerate(value):
            _validate(nested, f"{where}.{dialect}[{i}]", depth + 1)
    else:  # not
        _validate(value, f"{where}.not", depth + 1)


def matches(filters: list[dict[str, Any]], attributes: Mapping[str, str]) -> bool:
    """True when every filter is true for an event with these context attributes."""
    return all(_eval(f, attributes) for f in filters)


def _eval(f: dict[str, Any], attrs: Mapping[str, str]) -> bool:
    ((dialect, value),) = f.items()
    if dialect == "exact":
        return all(attrs.get(k) == v for k, v in value.items())
    if dialect == "prefix":
        return all(isinstance(attrs.get(k), str) and attrs[k].startswith(v) for k, v in value.items())
    if dialect == "suffix":
        return all(isinstance(attrs.get(k), str) and attrs[k].endswith(v) for k, v in value.items())
    if dialect == "all":
        return all(_eval(x, attrs) for x in value)
    if dialect == "any":
        return any(_eval(x, attrs) for x in value)
    if dialect == "not":
        return not _eval(value, attrs)
    raise FilterError(f"filter dialect {dialect!r} is not supported")  # validated before


# --- evaluated once per batch (the delivery engine: connectors/gateway/feed.py) ---------------


def select(filters: list[dict[str, Any]], batch) -> list[int]:
    """The row numbers of `batch` (an `EventBatch`: attribute columns and indexes) for which
    every filter is true — the same answer as `matches` per event, computed per batch.

    The common cross-organisation case, a top-level `exact` on one attribute (`partnerid` equal
    to the subscriber's own id), is a look-up in the batch's index of that attribute (one
    group-by per batch, shared by every subscription), and only the rows it yields are checked
    against the other filters, one by one. Everything else is one boolean mask per filter over
    the batch's Arrow columns (pyarrow.compute)."""
    if batch.size == 0:
        return []
    for i, f in enumerate(filters):
        if list(f) == ["exact"]:
            ((name, value), *more) = f["exact"].items()
            rest = filters[:i] + filters[i + 1:] + ([{"exact": dict(more)}] if more else [])
            rows = batch.index(name).get(value, ())
            if not rest:
                return list(rows)
            return [r for r in rows if matches(rest, batch.events[r].attributes)]
    if not filters:
        return list(range(batch.size))
    import pyarrow.compute as pc

    mask = _mask({"all": filters}, batch)
    return pc.indices_nonzero(mask).to_pylist()


def _mask(f: dict[str, Any], batch):
    """One filter over a whole batch: a boolean array without nulls (a missing attribute is
    false for exact/prefix/suffix, as in `_eval`)."""
    import pyarrow.compute as pc

    ((dialect, value),) = f.items()
    if dialect in ATTRIBUTE_DIALECTS:
        masks = []
        for name, expected in value.items():
            col = batch.column(name)
            if dialect == "exact":
                m = pc.equal(col, expected)
            elif dialect == "prefix":
                m = pc.starts_with(col, pattern=expected)
            else:
                m = pc.ends_with(col, pattern=expected)
            masks.append(pc.fill_null(m, False))
        return _reduce(pc.and_, masks)
    if dialect in ("all", "any"):
        return _reduce(pc.and_ if dialect == "all" else pc.or_, [_mask(x, batch) for x in value])
    if dialect == "not":
        return pc.invert(_mask(value, batch))
    raise FilterError(f"filter dialect {dialect!r} is not supported")  # validated before


def _reduce(op, masks: list):
    out = masks[0]
    for m in masks[1:]:
        out = op(out, m)
    return out
