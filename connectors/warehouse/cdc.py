"""What the warehouse sink does with change-data-capture rows (`_op`, `_unchanged`), before upserting.

- **Truncate** (`_op = 't'`): every row before the batch's last truncate is dropped, and the
  sink deletes the table's rows in the same transaction before writing the rest
  (`split_at_truncate`). The product's topic has one partition, so offset order is commit order.
- **Unchanged TOAST** (`_unchanged`): the columns named there were not sent. Within the batch
  the key's previous version supplies them (`carry_unchanged`); what is still unchanged after
  that is written as a **partial update**: the upsert leaves those columns alone, so the
  stored value stays (`by_unchanged` groups the rows per set of such columns).

Plain Arrow, no SQL: connectors/warehouse/sink.py calls these three.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def split_at_truncate(rows: pa.Table) -> tuple[pa.Table, bool]:
    """(the rows after the last truncate, whether there was one); rows in (partition, offset) order."""
    if "_op" not in rows.column_names or rows.num_rows == 0:
        return rows, False
    is_t = pc.fill_null(pc.equal(rows.column("_op"), "t"), False)
    if not pc.any(is_t).as_py():
        return rows, False
    rows = rows.take(pc.sort_indices(rows, sort_keys=[("_partition", "ascending"), ("_offset", "ascending")]))
    is_t = pc.fill_null(pc.equal(rows.column("_op"), "t"), False).to_pylist()
    last = max(i for i, t in enumerate(is_t) if t)
    return rows.slice(last + 1), True


def carry_unchanged(rows: pa.Table, key: list[str]) -> pa.Table:
    """Fill unchanged columns from the same key's previous version within the batch."""
    if "_unchanged" not in rows.column_names or rows.num_rows == 0 or rows.column("_unchanged").null_count == rows.num_rows:
        return rows
    rows = rows.take(pc.sort_indices(rows, sort_keys=[("_partition", "ascending"), ("_offset", "ascending")]))
    unchanged = rows.column("_unchanged").to_pylist()
    needed = sorted({c for u in unchanged if u for c in u})
    keys = list(zip(*[rows.column(k).to_pylist() for k in key], strict=True))
    values = {c: rows.column(c).to_pylist() for c in needed}
    deleted = rows.column("_deleted").to_pylist() if "_deleted" in rows.column_names else [False] * rows.num_rows
    last: dict[tuple, dict] = {}
    changed = False
    for i, k in enumerate(keys):
        if deleted[i]:
            last.pop(k, None)
            continue
        known = last.setdefault(k, {})
        missing = unchanged[i] or []
        still = []
        for c in missing:
            if c in known:
                values[c][i] = known[c]
                changed = True
            else:
                still.append(c)
        if missing and len(still) != len(missing):
            unchanged[i] = still or None
        for c in needed:
            if c not in (unchanged[i] or []):
                known[c] = values[c][i]
    if not changed:
        return rows
    for c in needed:
        rows = rows.set_column(rows.schema.get_field_index(c), c, pa.array(values[c], rows.schema.field(c).type))
    i = rows.schema.get_field_index("_unchanged")
    return rows.set_column(i, "_unchanged", pa.array(unchanged, rows.schema.field(i).type))


def by_unchanged(rows: pa.Table) -> list[tuple[tuple[str, ...], pa.Table]]:
    """[(columns to leave alone, rows)], the fully sent rows first under ()."""
    if "_unchanged" not in rows.column_names or rows.column("_unchanged").null_count == rows.num_rows:
        return [((), rows)]
    sets = [tuple(sorted(u)) if u else () for u in rows.column("_unchanged").to_pylist()]
    out = []
    for group in sorted(set(sets)):
        mask = pa.array([s == group for s in sets], pa.bool_())
        out.append((group, rows.filter(mask)))
    return out
