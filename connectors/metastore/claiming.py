"""Claims: one owner per unit of work, with a lease the owner renews (DESIGN.md's first invariant).

A claim (`partition/<p>/<start>` for a landing range, `hour/<hour>` for a compaction, `replay/<id>`)
names its owner (one attempt of one run) and `lease_until`, judged by the metastore's clock. A live
claim of someone else stops a second run; a dead one (lease expired, or its run failed) is taken
over, and the files it left pending are deleted first. `Metastore` inherits these methods; the
commits check `own_claim` inside their transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from connectors.leases import ClaimLostError
from connectors.metastore.db import retrying
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
            with self.engine.connect() as conn:
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

    def claims_of(self, product: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(claims).where(claims.c.product == product)).mappings()]


def own_claim(conn: Connection, product: str, resource: str, owner: str, what: str) -> None:
    """Inside a commit: the claim is still ours (locked until the transaction ends)."""
    row = conn.execute(
        select(claims.c.owner).where(and_(claims.c.product == product, claims.c.resource == resource)).with_for_update()
    ).first()
    if row is None or row.owner != owner:
        raise ClaimLostError(f"{product}: {what} {resource} was taken over (lease expired); nothing committed")
