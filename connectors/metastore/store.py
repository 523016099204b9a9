# Over 400 lines: the commit transactions (landing, swap, replay) share file and hour updates; claims are in claiming.py.
"""The metastore: which files are live, which offsets are committed, which hours are closed.

SQL tables through SQLAlchemy Core (SQLite by default, PostgreSQL in production). It holds
exactly the recipe of DESIGN.md's first invariant:

- a **claim** per unit of work (`partition/<p>/<start>` for a landing range, `hour/<hour>` for
  a compaction) names its owner (one attempt of one run), the run id and a short lease the
  owner renews. A live claim of someone else stops a second run; a dead one (lease expired,
  or its Dagster run failed) is taken over, and the files it left pending are deleted first;
- **files** are registered `pending` *before* they are written and become `committed` only
  in the transaction that advances the committed offsets, as a compare-and-set on the
  previous offset and on the claim still being ours;
- **hours** record what landed where; a landing into a compacted hour reopens it.

Batch readers may query these tables directly (tables.py names them; README's metastore section): `fs_files` with
`state = 'committed'` is the list of live files, never a directory listing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence

from sqlalchemy import (
    and_,
    delete,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from connectors.leases import SYSTEM_CLOCK, ClaimLostError, Clock
from connectors.metastore.claiming import Claims, own_claim
from connectors.metastore.db import insert_ignore, make_engine, retrying, schema_lock
from connectors.metastore.records import (
    CommitConflictError,
    CommittedFileError,
    FileRecord,
    FileStats,
    HourRecord,
    LandingCommit,
    OffsetState,
    ReplayRecord,
    hour_resource,
    landing_resource,
)
from connectors.metastore.tables import (
    claims,
    files,
    hours,
    landings,
    markers,
    metadata,
    offsets,
    replays,
)

log = logging.getLogger(__name__)




class Metastore(Claims):
    """`clock` (seconds, like time.time) decides when a claim's lease runs out; a test that
    needs a dead claim gives a clock that runs ahead instead of sleeping out the lease."""

    def __init__(self, url: str, engine: Engine | None = None, clock: Clock = SYSTEM_CLOCK):
        self.url = url
        self.engine = engine or make_engine(url)
        self.clock = clock
        retrying(self._create_schema)

    def _create_schema(self) -> None:
        """Tables, and columns added to the model since a metastore was created (nullable, so
        an existing metastore keeps working after an upgrade), in one transaction that holds
        the schema lock: sensors and steps that open a fresh metastore at once would otherwise
        race on CREATE TABLE, which PostgreSQL answers with a unique violation, not a wait."""
        with self.engine.begin() as conn, schema_lock(conn, "flowsuite.metastore"):
            metadata.create_all(conn)
            inspector = inspect(conn)
            for table in metadata.sorted_tables:
                existing = {c["name"] for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in existing:
                        ddl = column.type.compile(dialect=conn.dialect)
                        conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {ddl}")

    def __repr__(self) -> str:
        return f"Metastore({self.engine.url.render_as_string(hide_password=True)!r})"

    def dispose(self) -> None:
        self.engine.dispose()

    # --- committed offsets --------------------------------------------------------------

    def committed_offsets(self, product: str) -> dict[int, OffsetState]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(offsets).where(offsets.c.product == product)).mappings().all()
        return {
            r["partition"]: OffsetState(
                r["partition"], r["next_offset"], bool(r["at_eof"]), r["run_id"], r["updated_at"], r["topic"]
            )
            for r in rows
        }

    def reset_offset(self, product: str, topic: str, partition: int, next_offset: int, run_id: str) -> None:
        """An operator's explicit decision after history loss: continue from `next_offset`."""

        def tx() -> None:
            with self.engine.begin() as conn:
                conn.execute(delete(offsets).where(and_(offsets.c.product == product, offsets.c.partition == partition)))
                conn.execute(
                    insert(offsets).values(
                        product=product, partition=partition, next_offset=next_offset, at_eof=False,
                        topic=topic, run_id=run_id, updated_at=time.time(),
                    )
                )

        retrying(tx)

    # --- files --------------------------------------------------------------------------

    def register_pending(
        self,
        path: str,
        *,
        product: str,
        kind: str,
        hour: str,
        claim: str,
        run_id: str,
        partition: int | None = None,
        start_offset: int | None = None,
        generation: int = 0,
    ) -> None:
        """Record a file as pending before a byte of it is written. Never shadows a live file."""
        self.register_pending_files(
            [(path, hour)], product=product, kind=kind, claim=claim, run_id=run_id,
            partition=partition, start_offset=start_offset, generation=generation,
        )

    def register_pending_files(
        self,
        paths: Sequence[tuple[str, str]],
        *,
        product: str,
        kind: str,
        claim: str,
        run_id: str,
        partition: int | None = None,
        start_offset: int | None = None,
        generation: int = 0,
    ) -> None:
        """`register_pending` for several (path, hour) files in one transaction (one fsync of
        the metastore instead of one per file: a batch spanning six hours opens six files)."""
        if not paths:
            return
        names = [path for path, _ in paths]

        def tx() -> None:
            with self.engine.begin() as conn:
                existing = conn.execute(select(files.c.path, files.c.state).where(files.c.path.in_(names))).all()
                live = sorted(row.path for row in existing if row.state == "committed")
                if live:
                    raise CommittedFileError(f"refusing to overwrite committed file(s) {', '.join(live)}: "
                                             "they are live in the metastore")
                if existing:
                    conn.execute(delete(files).where(files.c.path.in_([row.path for row in existing])))
                now = time.time()
                conn.execute(
                    insert(files),
                    [
                        dict(
                            path=path, product=product, kind=kind, hour=hour, state="pending", claim=claim,
                            partition=partition, start_offset=start_offset, rows=0, bytes=0,
                            generation=generation, run_id=run_id, created_at=now,
                        )
                        for path, hour in paths
                    ],
                )

        retrying(tx)

    def pending_files(self, product: str, claim: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(files.c.path).where(
                        and_(files.c.product == product, files.c.claim == claim, files.c.state == "pending")
                    )
                ).scalars()
            )

    def forget_files(self, paths: Iterable[str], only_pending: bool = False) -> None:
        paths = list(paths)
        if not paths:
            return

        def tx() -> None:
            with self.engine.begin() as conn:
                for chunk in _chunks(paths, 500):
                    cond = files.c.path.in_(chunk)
                    if only_pending:
                        cond = and_(cond, files.c.state == "pending")
                    conn.execute(delete(files).where(cond))

        retrying(tx)

    def file_states(self, paths: Iterable[str]) -> dict[str, str]:
        """path → state for the paths the metastore knows (absent: never registered)."""
        paths = list(paths)
        states: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(paths, 500):
                for path, state in conn.execute(select(files.c.path, files.c.state).where(files.c.path.in_(chunk))):
                    states[path] = state
        return states

    def live_files(self, product: str, hour: str | None = None, kinds: Sequence[str] = ("landed", "compacted")) -> list[FileRecord]:
        cond = and_(files.c.product == product, files.c.state == "committed", files.c.kind.in_(list(kinds)))
        if hour is not None:
            cond = and_(cond, files.c.hour == hour)
        with self.engine.connect() as conn:
            rows = conn.execute(select(files).where(cond).order_by(files.c.hour, files.c.path)).mappings().all()
        return [_file_record(r) for r in rows]

    def files_in_states(self, product: str, states: Sequence[str], kinds: Sequence[str] | None = None) -> list[FileRecord]:
        cond = and_(files.c.product == product, files.c.state.in_(list(states)))
        if kinds:
            cond = and_(cond, files.c.kind.in_(list(kinds)))
        with self.engine.connect() as conn:
            return [_file_record(r) for r in conn.execute(select(files).where(cond).order_by(files.c.path)).mappings()]

    # --- the landing commit -------------------------------------------------------------

    def commit_landing(self, commit: LandingCommit) -> list[str]:
        """Make the range's files live and advance the committed offset, in one transaction.

        Compare-and-set on the claim (still ours) and on the committed offset (still `start`).
        Returns the hours that were compacted before and are now reopened by late data.
        """
        product, topic, partition, start, end = commit.product, commit.topic, commit.partition, commit.start, commit.end
        at_eof, owner, run_id, consumed = commit.at_eof, commit.owner, commit.run_id, commit.consumed
        landed, quarantined = commit.landed, commit.quarantined
        resource = landing_resource(partition, start)

        def tx() -> list[str]:
            now = time.time()
            with self.engine.begin() as conn:
                own_claim(conn, product, resource, owner, "claim")
                current = conn.execute(
                    select(offsets.c.next_offset)
                    .where(and_(offsets.c.product == product, offsets.c.partition == partition))
                    .with_for_update()
                ).first()
                if current is None:
                    conn.execute(
                        insert(offsets).values(
                            product=product, partition=partition, next_offset=end, at_eof=at_eof,
                            topic=topic, run_id=run_id, updated_at=now,
                        )
                    )
                else:
                    moved = conn.execute(
                        update(offsets)
                        .where(and_(offsets.c.product == product, offsets.c.partition == partition, offsets.c.next_offset == start))
                        .values(next_offset=end, at_eof=at_eof, topic=topic, run_id=run_id, updated_at=now)
                    ).rowcount
                    if moved != 1:
                        raise CommitConflictError(
                            f"{product}[{partition}]: committed offset is {current.next_offset}, not {start}; "
                            "another run committed this range"
                        )
                _make_live(conn, product, resource, [stats for stats, _ in [*landed, *quarantined]], now)
                reopened = self._touch_hours(conn, product, landed, quarantined, now)
                conn.execute(
                    insert(landings).values(
                        product=product, run_id=run_id, partition=partition, start_offset=start, end_offset=end,
                        consumed=consumed, landed=sum(s.rows for s, _ in landed),
                        quarantined=sum(s.rows for s, _ in quarantined), committed_at=now,
                    )
                )
                conn.execute(delete(claims).where(and_(claims.c.product == product, claims.c.resource == resource)))
                return reopened

        return retrying(tx)  # type: ignore[return-value]

    def _touch_hours(self, conn: Connection, product: str, landed, quarantined, now: float) -> list[str]:
        per_hour: dict[str, list[int]] = {}
        for stats, hour in landed:
            per_hour.setdefault(hour, [0, 0])[0] += stats.rows
        for stats, hour in quarantined:
            per_hour.setdefault(hour, [0, 0])[1] += stats.rows
        reopened = []
        for hour, (n_landed, n_quarantined) in sorted(per_hour.items()):
            insert_ignore(
                conn, hours,
                {"product": product, "hour": hour, "state": "open", "generation": 0, "landed_rows": 0,
                 "quarantined_rows": 0, "first_landed_at": now},
            )
            row = conn.execute(
                select(hours.c.state).where(and_(hours.c.product == product, hours.c.hour == hour)).with_for_update()
            ).first()
            values = {
                "landed_rows": hours.c.landed_rows + n_landed,
                "quarantined_rows": hours.c.quarantined_rows + n_quarantined,
            }
            if n_landed:
                values["last_landed_at"] = now
                if row.state == "compacted":
                    values["state"] = "reopened"
                    values["reopened_at"] = now
                    reopened.append(hour)
            conn.execute(update(hours).where(and_(hours.c.product == product, hours.c.hour == hour)).values(**values))
        return reopened

    # --- hours --------------------------------------------------------------------------

    def hours(self, product: str) -> list[HourRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(hours).where(hours.c.product == product).order_by(hours.c.hour)).mappings().all()
        return [HourRecord(**dict(r)) for r in rows]

    def hour(self, product: str, hour: str) -> HourRecord | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(hours).where(and_(hours.c.product == product, hours.c.hour == hour))).mappings().first()
        return HourRecord(**dict(r)) if r else None

    def swap_hour(
        self,
        *,
        product: str,
        hour: str,
        owner: str,
        replaced: Sequence[str],
        new_files: Sequence[FileStats],
        generation: int,
    ) -> None:
        """Compaction's swap, in one transaction: the new generation's pending files become
        live and exactly the files it was built from stop being live. Fails (ClaimLostError)
        if the claim is no longer ours or any input is no longer live. The hour is marked
        compacted unless files landed in it meanwhile (they stay live; it stays open)."""
        resource = hour_resource(hour)

        def tx() -> None:
            now = time.time()
            with self.engine.begin() as conn:
                own_claim(conn, product, resource, owner, "compaction claim")
                for chunk in _chunks(list(replaced), 500):
                    n = conn.execute(
                        update(files)
                        .where(and_(files.c.path.in_(chunk), files.c.state == "committed", files.c.product == product))
                        .values(state="replaced", replaced_at=now)
                    ).rowcount
                    if n != len(chunk):
                        raise ClaimLostError(f"{product}: inputs of the compaction of {hour} changed; nothing swapped")
                _make_live(conn, product, resource, new_files, now)
                still_landed = conn.execute(
                    select(files.c.path).where(
                        and_(files.c.product == product, files.c.hour == hour, files.c.state == "committed",
                             files.c.kind == "landed")
                    ).limit(1)
                ).first()
                insert_ignore(
                    conn, hours,
                    {"product": product, "hour": hour, "state": "open", "generation": 0, "landed_rows": 0,
                     "quarantined_rows": 0},
                )
                conn.execute(
                    update(hours)
                    .where(and_(hours.c.product == product, hours.c.hour == hour))
                    .values(
                        state="open" if still_landed else "compacted",
                        generation=generation,
                        compacted_at=now,
                        compacted_rows=sum(s.rows for s in new_files),
                    )
                )
                conn.execute(delete(claims).where(and_(claims.c.product == product, claims.c.resource == resource)))

        retrying(tx)

    def drop_replaced(self, paths: Iterable[str]) -> None:
        """Forget replaced files once they are deleted from the lake."""
        paths = list(paths)

        def tx() -> None:
            with self.engine.begin() as conn:
                for chunk in _chunks(paths, 500):
                    conn.execute(delete(files).where(and_(files.c.path.in_(chunk), files.c.state == "replaced")))

        if paths:
            retrying(tx)

    def block_hours(self, product: str, hour_keys: Iterable[str], reason: str) -> None:
        """A blocking quality check failed on data in these hours: stop what follows."""

        def tx() -> None:
            with self.engine.begin() as conn:
                for hour in hour_keys:
                    conn.execute(
                        update(hours)
                        .where(and_(hours.c.product == product, hours.c.hour == hour))
                        .values(blocked_reason=reason[:2000], blocked_at=time.time())
                    )

        retrying(tx)

    def unblock_hours(self, product: str, hour_keys: Iterable[str] | None = None) -> None:
        """Clear blocks (all of the product's when `hour_keys` is None)."""

        def tx() -> None:
            with self.engine.begin() as conn:
                cond = hours.c.product == product
                if hour_keys is not None:
                    cond = and_(cond, hours.c.hour.in_(list(hour_keys)))
                conn.execute(update(hours).where(cond).values(blocked_reason=None, blocked_at=None))

        retrying(tx)

    # --- quarantine replay ----------------------------------------------------------------

    def commit_replay(
        self,
        *,
        product: str,
        claim: str,
        owner: str,
        run_id: str,
        quarantine_file: str,
        landed: Sequence[tuple[FileStats, str]],  # (stats, hour): records that now pass
        still_quarantined: Sequence[tuple[FileStats, str]],  # the rest, rewritten
    ) -> list[str]:
        """Quarantine replay, in one transaction: the replayed records' landed files and the
        rewritten quarantine file (without them) become live, and the old quarantine file
        stops being live. Compare-and-set on the claim and on the old file still being live,
        so a replay lands its records exactly once. Returns the compacted hours it reopened."""

        def tx() -> list[str]:
            now = time.time()
            with self.engine.begin() as conn:
                own_claim(conn, product, claim, owner, "replay claim")
                old = conn.execute(
                    select(files.c.hour, files.c.rows)
                    .where(and_(files.c.path == quarantine_file, files.c.state == "committed",
                                files.c.kind == "quarantine"))
                    .with_for_update()
                ).first()
                if old is None:
                    raise CommitConflictError(
                        f"{product}: quarantine file {quarantine_file} is no longer live (replayed already?)"
                    )
                conn.execute(
                    update(files).where(files.c.path == quarantine_file).values(state="replaced", replaced_at=now)
                )
                _make_live(conn, product, claim, [stats for stats, _ in [*landed, *still_quarantined]], now)
                for stats, hour in landed:
                    if not stats.rows or stats.min_offset is None or stats.max_offset is None:
                        continue
                    partition = conn.execute(select(files.c.partition).where(files.c.path == stats.path)).scalar()
                    conn.execute(
                        insert(replays).values(
                            product=product, path=stats.path, hour=hour, partition=int(partition),
                            min_offset=stats.min_offset, max_offset=stats.max_offset, rows=stats.rows,
                            committed_at=now,
                        )
                    )
                reopened = self._touch_hours(conn, product, landed, [], now)
                replayed = sum(s.rows for s, _ in landed)
                if replayed:
                    conn.execute(
                        update(hours)
                        .where(and_(hours.c.product == product, hours.c.hour == old.hour))
                        .values(quarantined_rows=hours.c.quarantined_rows - replayed)
                    )
                conn.execute(delete(claims).where(and_(claims.c.product == product, claims.c.resource == claim)))
                return reopened

        return retrying(tx)  # type: ignore[return-value]

    def record_marker(self, product: str, hour: str, generation: int, rows: int) -> None:
        """The hour's `_SUCCESS` marker of `generation` was written (compaction)."""

        def tx() -> None:
            with self.engine.begin() as conn:
                conn.execute(delete(markers).where(and_(markers.c.product == product, markers.c.hour == hour)))
                conn.execute(
                    insert(markers).values(product=product, hour=hour, generation=generation, rows=rows, written_at=time.time())
                )

        retrying(tx)

    def marked_hours(self, product: str) -> dict[str, int]:
        """hour → generation of its last written `_SUCCESS` marker."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(markers.c.hour, markers.c.generation).where(markers.c.product == product)).all()
        return {r.hour: r.generation for r in rows}

    def replays_since(self, product: str, first_id: int) -> list[ReplayRecord]:
        """Quarantine replays of the product with id >= first_id, in commit order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(replays).where(and_(replays.c.product == product, replays.c.id >= first_id)).order_by(replays.c.id)
            ).mappings().all()
        return [ReplayRecord(**{k: r[k] for k in ReplayRecord.__dataclass_fields__}) for r in rows]

    # --- history ------------------------------------------------------------------------

    def last_landing_at(self, product: str) -> float | None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(landings.c.committed_at).where(landings.c.product == product).order_by(landings.c.committed_at.desc()).limit(1)
            ).first()
        return rows[0] if rows else None


def _make_live(conn: Connection, product: str, resource: str, stats: Iterable[FileStats], now: float) -> None:
    """Inside a commit: this claim's pending files become committed, with their final stats."""
    for s in stats:
        done = conn.execute(
            update(files)
            .where(and_(files.c.path == s.path, files.c.state == "pending", files.c.claim == resource))
            .values(
                state="committed", rows=s.rows, bytes=s.bytes, end_offset=s.end_offset,
                min_offset=s.min_offset, max_offset=s.max_offset,
                ranges=json.dumps(s.ranges) if s.ranges is not None else None, committed_at=now,
            )
        ).rowcount
        if done != 1:
            raise ClaimLostError(f"{product}: pending file {s.path} is no longer ours; nothing committed")


def _file_record(r) -> FileRecord:
    ranges = json.loads(r["ranges"]) if r["ranges"] else None
    return FileRecord(
        path=r["path"], product=r["product"], kind=r["kind"], hour=r["hour"], state=r["state"],
        partition=r["partition"], start_offset=r["start_offset"], end_offset=r["end_offset"],
        rows=r["rows"], bytes=r["bytes"], generation=r["generation"],
        ranges={int(k): v for k, v in ranges.items()} if ranges else None,
        min_offset=r["min_offset"], max_offset=r["max_offset"], run_id=r["run_id"], committed_at=r["committed_at"],
    )


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
