"""The per-key reduction: keep each key's latest record by its version columns, vectorized."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from connectors.spec import DataProductSpec

POSITION = ("_partition", "_offset")  # Kafka position columns every warehouse row carries


def version_columns(spec: DataProductSpec) -> list[str]:
    """The columns that order versions of a key, most significant first."""
    db = spec.sinks.database
    version = db.version if db else "offset"
    return [*([version] if version != "offset" else []), *POSITION]


def reduce_latest(spec: DataProductSpec, rows: pa.Table) -> tuple[pa.Table, int]:
    """Keep only the latest record per key (by version columns); returns (rows, null-key count).

    Sort by the version columns (nulls first, i.e. oldest), number the rows in that order,
    and keep each key's highest number with a hash group-by: no per-row Python. A batch whose
    keys are all distinct (one hash count, ~3 ms for 50k keys against ~15 ms for the sort and
    group-by) is returned as it is, in its own order.
    """
    keys = list(spec.key)
    null_key = None
    for k in keys:
        m = pc.is_null(rows.column(k))
        null_key = m if null_key is None else pc.or_(null_key, m)
    n_null = int(pc.sum(null_key).as_py() or 0) if null_key is not None and rows.num_rows else 0
    if n_null:
        rows = rows.filter(pc.invert(null_key))
    if rows.num_rows <= 1:
        return rows, n_null
    if len(keys) == 1:
        distinct = pc.count_distinct(rows.column(keys[0])).as_py()
    else:
        distinct = rows.select(keys).group_by(keys, use_threads=False).aggregate([]).num_rows
    if distinct == rows.num_rows:
        return rows, n_null
    order = pc.sort_indices(rows, sort_keys=[(c, "ascending", "at_start") for c in version_columns(spec)])
    ranked = pa.table({**{k: rows.column(k).take(order) for k in keys}, "__rank": pa.arange(0, rows.num_rows)})
    latest = ranked.group_by(keys, use_threads=False).aggregate([("__rank", "max")]).column("__rank_max")
    picked = pc.take(order, pc.take(latest, pc.sort_indices(latest)))  # back in version order
    return rows.take(picked), n_null
