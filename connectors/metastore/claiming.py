"""Claims: one owner per unit of work, with a lease the owner renews (DESIGN.md's first invariant).

A claim (`partition/<p>/<start>` for a landing range, `hour/<hour>` for a compaction, `replay/<id>`)
names its owner (one attempt of one run) and `lease_until`, judged by the metastore's clock. A live
claim of someone else stops a second run; a dead one (lease expired, or its run failed) is taken
over, and the files it left pending are deleted first. `Metastore` inherits these methods; the
commits check `own_claim` inside their transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from connectors.leases import ClaimLostError
from connectors.metastore.db import reading, retrying
from connectors.metastore.records import ClaimHeldError, Takeover
from connectors.metastore.tables import claims


class Claims:
    """The claim methods of `Metastore` (it provides `engine`, `clock`, `pending_files`, `forget_files`)."""

    def claim(
        self,
        product: str,
        resource: str,
        owner: str,
        run_id: str,
        lease_s: float,
        is_dead: Callable[[str], bool] | None = None,
        on_delete: Callable[[str], None] | None = None,
    ) -> Takeover:
        """Claim a unit of work, taking over a dead claim. Raises ClaimHeldError if live.

        `is_dead(run_id)` lets the orchestrator say a run failed before its lease ran out.
        `on_delete(path)` deletes a pending file of the previous owner from the lake; the
        file's row is forgotten only after that succeeded.
        """
        now = self.clock()

        def try_insert() -> bool:
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(claims).values(
                            product=product, resource=resource, owner=owner, run_id=run_id,
                            lease_until=now + lease_s, created_at=now,
                        )
                    )
                return True
            except IntegrityError:
                return False

        if retrying(try_insert):
            previous = None
        else:
            with reading(self.engine) as conn:
                row = conn.execute(
                    select(claims).where(and_(claims.c.product == product, claims.c.resource == resource))
                ).mappings().first()
            if row is None:  # released in between: try once more from scratch
                return self.claim(product, resource, owner, run_id, lease_s, is_dead, on_delete)
            if row["owner"] == owner:
                previous = None
            else:
                alive = row["lease_until"] > now and not (is_dead and row["run_id"] != run_id and is_dead(row["run_id"]))
                if alive:
                    raise ClaimHeldError(product, resource, row["run_id"], row["lease_until"] - now)

                def take() -> int:
                    with self.engine.begin() as conn:
                        return conn.execute(
                            update(claims)
                            .where(and_(claims.c.product == product, claims.c.resource == resource, claims.c.owner == row["owner"]))
                            .values(owner=owner, run_id=run_id, lease_until=self.clock() + lease_s)
                        ).rowcount

                if retrying(take) != 1:
                    raise ClaimHeldError(product, resource, "another run (taken over concurrently)", lease_s)
                previous = row["run_id"]
        # Whoever held this claim before may have left pending files: delete them first.
        stale = self.pending_files(product, resource)
        for path in stale:
            if on_delete is not None:
                on_delete(path)
        if stale:
            self.forget_files(stale, only_pending=True)
        return Takeover(previous_run_id=previous, pending_files=stale)

    def claim_many(self, units: list[tuple[str, str, str]], run_id: str, lease_s: float,
                   attempts: int = 5) -> set[tuple[str, str]]:
        """Claim many units of work in one transaction; the (product, resource) pairs now ours.

        `units` are (product, resource, owner). A unit is taken when it is free, when its lease
        ran out (taken over: a compare-and-set on the previous owner *and* its expiry, so a
        renewal that lands first wins), or when `owner` holds it already (its lease renewed).
        A unit held live by someone else is left out, as `claim` would raise ClaimHeldError.
        Exclusive like `claim`: the primary key stops two inserts, the conditional UPDATE two
        takeovers (PostgreSQL and MariaDB re-check its WHERE after the row lock, SQLite's
        BEGIN IMMEDIATE serializes), and what is returned is read back inside the transaction.

        For claims that leave no pending files and need no `is_dead` (the flow gateway's):
        `claim` deletes a previous owner's pending files, this does not look for them. A
        concurrent insert of the same unit (IntegrityError) or a deadlock repeats the whole
        transaction, up to `attempts` times; after that nothing is claimed (the caller's next
        look for work tries again).
        """
        if not units:
            return set()
        want = {(p, r): o for p, r, o in sorted(units)}
        products = sorted({p for p, _ in want})
        resources = sorted({r for _, r in want})

        def tx() -> set[tuple[str, str]]:
            now = self.clock()
            until = now + lease_s
            with self.engine.begin() as conn:
                held: dict[tuple[str, str], tuple[str, float]] = {}
                for i in range(0, len(products), 500):
                    rows = conn.execute(
                        select(claims.c.product, claims.c.resource, claims.c.owner, claims.c.lease_until)
                        .where(and_(claims.c.product.in_(products[i:i + 500]), claims.c.resource.in_(resources)))
                    )
                    held.update(((r.product, r.resource), (r.owner, r.lease_until)) for r in rows if (r.product, r.resource) in want)
                free = [k for k in want if k not in held]
                if free:
                    conn.execute(insert(claims), [
                        {"product": p, "resource": r, "owner": want[(p, r)], "run_id": run_id,
                         "lease_until": until, "created_at": now} for p, r in free
                    ])
                moved = [(k, old) for k, (old, lease) in held.items() if old == want[k] or lease <= now]
                if moved:
                    conn.execute(
                        update(claims)
                        .where(and_(claims.c.product == bindparam("k_product"), claims.c.resource == bindparam("k_resource"),
                                    claims.c.owner == bindparam("k_owner"),
                                    (claims.c.lease_until <= now) | (claims.c.owner == bindparam("k_new"))))
                        .values(owner=bindparam("k_new"), run_id=run_id, lease_until=until),
                        [{"k_product": p, "k_resource": r, "k_owner": old, "k_new": want[(p, r)]} for (p, r), old in moved],
                    )
                taken: set[tuple[str, str]] = set(free)
                check = [k for k, _ in moved]
                for i in range(0, len(check), 500):
                    part = check[i:i + 500]
                    rows = conn.execute(
                        select(claims.c.product, claims.c.resource, claims.c.owner)
                        .where(and_(claims.c.product.in_(sorted({p for p, _ in part})),
                                    claims.c.resource.in_(sorted({r for _, r in part}))))
                    )
                    taken |= {(r.product, r.resource) for r in rows
                              if (r.product, r.resource) in want and r.owner == want[(r.product, r.resource)]}
                return taken

        for _ in range(attempts):
            try:
                return retrying(tx)
            except IntegrityError:  # another process inserted one of them meanwhile: look again
                continue
        return set()

    def renew(self, product: str, resource: str, owner: str, lease_s: float) -> bool:
        def tx() -> int:
            with self.engine.begin() as conn:
                return conn.execute(
                    update(claims)
                    .where(and_(claims.c.product == product, claims.c.resource == resource, claims.c.owner == owner))
                    .values(lease_until=self.clock() + lease_s)
                ).rowcount

        return retrying(tx) == 1

    def release(self, product: str, resource: str, owner: str) -> None:
        def tx() -> None:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(claims).where(and_(claims.c.product == product, claims.c.resource == resource, claims.c.owner == owner))
                )

        retrying(tx)

    def release_many(self, units: list[tuple[str, str, str]]) -> None:
        """Release many claims in one transaction: `units` are (product, resource, owner), each
        deleted only while `owner` holds it, as `release` does (a unit taken over meanwhile is
        left to its new owner). A stopping flow gateway hands back every claim it holds at once
        with it: one transaction per delivery was ~2,000 write-lock turns at 1,000 subscriptions."""
        if not units:
            return

        def tx() -> None:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(claims).where(and_(claims.c.product == bindparam("k_product"),
                                              claims.c.resource == bindparam("k_resource"),
                                              claims.c.owner == bindparam("k_owner"))),
                    [{"k_product": p, "k_resource": r, "k_owner": o} for p, r, o in sorted(set(units))],
                )

        retrying(tx)

    def claims_of(self, product: str) -> list[dict]:
        with reading(self.engine) as conn:
            return [dict(r) for r in conn.execute(select(claims).where(claims.c.product == product)).mappings()]


def own_claim(conn: Connection, product: str, resource: str, owner: str, what: str) -> None:
    """Inside a commit: the claim is still ours (locked until the transaction ends)."""
    row = conn.execute(
        select(claims.c.owner).where(and_(claims.c.product == product, claims.c.resource == resource)).with_for_update()
    ).first()
    if row is None or row.owner != owner:
        raise ClaimLostError(f"{product}: {what} {resource} was taken over (lease expired); nothing committed")
