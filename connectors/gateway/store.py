"""Subscriptions, organisation tokens and delivery positions, in the metastore's database.

Tables next to the metastore's own (created under a schema lock of their own, like the
warehouse's): `fs_flow_tokens` (only a SHA-256 of each token's secret), `fs_flow_subscriptions`
(the CloudEvents subscription object, its lifecycle state and the signing secrets) and
`fs_flow_positions` (per subscription and Kafka partition, the first offset not yet delivered —
it moves only after the receiver answered 2xx, as a compare-and-set that also checks the
delivering gateway still holds its claim in `fs_claims`). Pull delivery (pull.py) adds two:
`fs_flow_pull` (per subscription and partition, how far events were handed out and a version
every change bumps) and `fs_flow_locks` (each event handed out and not yet settled: its lock
token, expiry, delivery count and the event itself).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    exists,
    insert,
    select,
    update,
)

from connectors.errors import TerminalError
from connectors.gateway.models import SubscriptionOptions, parse_options
from connectors.metastore import Metastore, claims, create_missing_tables, reading, retrying

md = MetaData()


class OrgNameError(TerminalError, ValueError):
    """An organisation name a token cannot be made for (1-128 characters)."""

tokens = Table(
    "fs_flow_tokens",
    md,
    Column("id", String(32), primary_key=True),
    Column("org", String(128), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
)

subscriptions = Table(
    "fs_flow_subscriptions",
    md,
    Column("id", String(40), primary_key=True),
    Column("org", String(128), nullable=False, index=True),
    Column("product", String(128), nullable=False, index=True),
    Column("state", String(24), nullable=False),
    Column("reason", Text),  # why it is in its state (handshake refused, dead letter, 410, ...)
    Column("body", Text, nullable=False),  # the subscription object as JSON, without secrets
    Column("secret", String(128), nullable=False),  # whsec_...: needed to sign, never returned again
    Column("previous_secret", String(128)),  # still signed with during a rotation's grace
    Column("previous_until", Double),
    Column("rate_per_min", Integer),  # WebHook-Allowed-Rate; null: no limit
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("last_attempt_at", Double),
    Column("last_success_at", Double),
    Column("last_outcome", Text),
    Column("failures", Integer, nullable=False, default=0),  # consecutive failed attempts
    Column("delivered", BigInteger, nullable=False, default=0),
    Column("dead_lettered", BigInteger, nullable=False, default=0),
)

positions = Table(
    "fs_flow_positions",
    md,
    Column("subscription", String(40), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("not_before_ms", BigInteger),  # startfrom time: skip earlier events until one is at/after
    Column("updated_at", Double, nullable=False),
)

STATES = ("requested", "pending_approval", "active", "paused", "retired", "failed", "rejected", "deleted")
FINAL = ("retired", "failed", "rejected", "deleted")
TOKEN_PREFIX = "fst_"


def claim_product(subscription_id: str) -> str:
    """The `product` column of a (subscription, partition) claim in fs_claims."""
    return f"flow:{subscription_id}"


def claim_resource(partition: int) -> str:
    return f"partition/{int(partition)}"


def new_signing_secret() -> str:
    """Standard Webhooks: whsec_ + base64 of 24-64 random bytes (here 32)."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Subscription:
    id: str
    org: str
    product: str
    state: str
    reason: str | None
    body: dict[str, Any]
    secret: str
    previous_secret: str | None
    previous_until: float | None
    rate_per_min: int | None
    created_at: float
    updated_at: float
    last_attempt_at: float | None
    last_success_at: float | None
    last_outcome: str | None
    failures: int
    delivered: int
    dead_lettered: int

    def signing_secrets(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        keep_old = self.previous_secret and (self.previous_until or 0) > now
        return [self.secret, self.previous_secret] if keep_old else [self.secret]

    @property
    def config(self) -> dict[str, Any]:
        """`config` as the subscriber wrote it (values may be strings); delivery reads `options`."""
        return self.body.get("config") or {}

    @cached_property
    def options(self) -> SubscriptionOptions:
        """`config` typed and checked (connectors/gateway/models.py), parsed once per object."""
        return parse_options(self.config)

    def public(self) -> dict[str, Any]:
        """The subscription object as the API returns it: no secrets, plus its state."""
        return {
            **self.body, "id": self.id, "state": self.state, "reason": self.reason,
            "org": self.org, "product": self.product,
        }


STAMP = (subscriptions.c.state, subscriptions.c.updated_at, subscriptions.c.secret, subscriptions.c.previous_secret,
         subscriptions.c.previous_until, subscriptions.c.rate_per_min)


def _stamp(sub: Subscription) -> tuple:
    return (sub.state, sub.updated_at, sub.secret, sub.previous_secret, sub.previous_until, sub.rate_per_min)


def _subscription(row) -> Subscription:
    return Subscription(**{**dict(row), "body": json.loads(row["body"])})


class GatewayStore:
    def __init__(self, metastore: Metastore):
        self.metastore = metastore
        self.engine = metastore.engine
        retrying(lambda: create_missing_tables(self.engine, md, "flowsuite.gateway"))

    # --- tokens ---------------------------------------------------------------------------

    def create_token(self, org: str) -> str:
        """A new bearer token for `org`; returned once, only its hash is stored."""
        if not org or len(org) > 128:
            raise OrgNameError(f"an organisation name is 1-128 characters, got {len(org)}")
        token_id, secret = uuid.uuid4().hex, secrets.token_urlsafe(32)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        with self.engine.begin() as conn:
            conn.execute(insert(tokens).values(id=token_id, org=org, secret_sha256=digest, created_at=time.time()))
        return f"{TOKEN_PREFIX}{token_id}_{secret}"

    def org_of_token(self, token: str) -> str | None:
        """The organisation a bearer token belongs to, or None; the secret is compared in
        constant time (by its hash, so the stored value never leaks through timing either)."""
        if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
            return None
        token_id, _, secret = token[len(TOKEN_PREFIX):].partition("_")
        with reading(self.engine) as conn:
            row = conn.execute(select(tokens).where(tokens.c.id == token_id)).mappings().first()
        presented = hashlib.sha256(secret.encode()).hexdigest()
        stored = row["secret_sha256"] if row else "0" * 64
        if hmac.compare_digest(presented, stored) and row is not None:
            return row["org"]
        return None

    # --- subscriptions --------------------------------------------------------------------

    def create(self, org: str, product: str, body: dict[str, Any], state: str = "requested") -> tuple[Subscription, str]:
        """Store a new subscription; returns it and its signing secret (shown once)."""
        sub_id, secret, now = str(uuid.uuid4()), new_signing_secret(), time.time()
        with self.engine.begin() as conn:
            conn.execute(
                insert(subscriptions).values(
                    id=sub_id, org=org, product=product, state=state, body=json.dumps(body),
                    secret=secret, created_at=now, updated_at=now, failures=0, delivered=0, dead_lettered=0,
                )
            )
        return self.get(sub_id), secret

    def get(self, sub_id: str) -> Subscription | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id)).mappings().first()
        return _subscription(row) if row else None

    def get_many(self, ids: list[str], known: dict[str, Subscription] | None = None) -> dict[str, Subscription]:
        """The subscriptions of `ids` that exist, by id, in one query per 500 ids.

        With `known` (the caller's last answer), a subscription none of whose delivery-relevant
        columns changed (STAMP: state, updated_at — which every body change sets —, the secrets,
        the rate) is that same object, and only the changed rows are read and parsed whole: the
        gateway's bookkeeper re-reads every delivery's subscription four times a second, and
        parsing 1,000 bodies each time was most of its cycle."""
        out: dict[str, Subscription] = {}
        with reading(self.engine) as conn:
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                if known is not None:
                    stale = []
                    for r in conn.execute(select(subscriptions.c.id, *STAMP).where(subscriptions.c.id.in_(part))):
                        had = known.get(r.id)
                        if had is not None and tuple(r[1:]) == _stamp(had):
                            out[r.id] = had
                        else:
                            stale.append(r.id)
                    part = stale
                    if not part:
                        continue
                q = select(subscriptions).where(subscriptions.c.id.in_(part))
                out.update((r["id"], _subscription(r)) for r in conn.execute(q).mappings())
        return out

    def list(self, org: str | None = None, products: Iterable[str] | None = None, states: Iterable[str] | None = None,
             known: dict[str, Subscription] | None = None) -> list[Subscription]:
        """The subscriptions asked for, oldest first. With `known` (as `get_many`), the unchanged
        ones are the known objects and only changed rows are read whole and parsed (the gateway
        lists every active subscription twice a second)."""
        q = select(subscriptions).order_by(subscriptions.c.created_at)
        if known is not None:
            q = select(subscriptions.c.id).order_by(subscriptions.c.created_at)
        if org is not None and products is not None:
            q = q.where((subscriptions.c.org == org) | subscriptions.c.product.in_(list(products)))
        elif org is not None:
            q = q.where(subscriptions.c.org == org)
        elif products is not None:
            q = q.where(subscriptions.c.product.in_(list(products)))
        if states is not None:
            q = q.where(subscriptions.c.state.in_(list(states)))
        with reading(self.engine) as conn:
            if known is None:
                return [_subscription(r) for r in conn.execute(q).mappings()]
            ids = [r.id for r in conn.execute(q)]
        found = self.get_many(ids, known=known)
        return [found[i] for i in ids if i in found]

    def transition(self, sub_id: str, to: str, allowed_from: Iterable[str], reason: str | None = None) -> bool:
        """Move a subscription to `to` if it is in one of `allowed_from` (compare-and-set)."""
        assert to in STATES

        def tx() -> int:
            with self.engine.begin() as conn:
                return conn.execute(
                    update(subscriptions)
                    .where(and_(subscriptions.c.id == sub_id, subscriptions.c.state.in_(list(allowed_from))))
                    .values(state=to, reason=reason, updated_at=time.time(), **({"failures": 0} if to == "active" else {}))
                ).rowcount

        return retrying(tx) == 1

    def update_body(self, sub_id: str, body: dict[str, Any], **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(subscriptions).where(subscriptions.c.id == sub_id)
                .values(body=json.dumps(body), updated_at=time.time(), **values)
            )

    def set_values(self, sub_id: str, **values: Any) -> None:
        def tx() -> None:
            with self.engine.begin() as conn:
                conn.execute(update(subscriptions).where(subscriptions.c.id == sub_id).values(**values))

        retrying(tx)

    def rotate_secret(self, sub_id: str, grace_s: float) -> str:
        """A new signing secret; the old one keeps signing (a second signature) for `grace_s`."""
        sub = self.get(sub_id)
        assert sub is not None
        secret = new_signing_secret()
        self.set_values(sub_id, secret=secret, previous_secret=sub.secret, previous_until=time.time() + grace_s)
        return secret

    def record_attempt(self, sub_id: str, outcome: str, ok: bool, delivered: int = 0, dead_lettered: int = 0) -> None:
        now = time.time()
        values: dict[str, Any] = {"last_attempt_at": now, "last_outcome": outcome[:500]}
        if ok:
            values.update(last_success_at=now, failures=0)
        else:
            values["failures"] = subscriptions.c.failures + 1
        if delivered:
            values["delivered"] = subscriptions.c.delivered + delivered
        if dead_lettered:
            values["dead_lettered"] = subscriptions.c.dead_lettered + dead_lettered
        self.set_values(sub_id, **values)

    # --- positions ------------------------------------------------------------------------

    def set_positions(self, sub_id: str, start: dict[int, int], not_before_ms: int | None = None) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(positions.delete().where(positions.c.subscription == sub_id))
            for partition, offset in sorted(start.items()):
                conn.execute(
                    insert(positions).values(
                        subscription=sub_id, partition=partition, next_offset=offset,
                        not_before_ms=not_before_ms, updated_at=now,
                    )
                )

    def positions(self, sub_id: str) -> dict[int, tuple[int, int | None]]:
        """partition → (next offset to deliver, not_before_ms)."""
        with reading(self.engine) as conn:
            rows = conn.execute(select(positions).where(positions.c.subscription == sub_id)).mappings().all()
        return {r["partition"]: (r["next_offset"], r["not_before_ms"]) for r in rows}

    def positions_of(self, sub_ids: list[str]) -> dict[str, dict[int, tuple[int, int | None]]]:
        """`positions` of many subscriptions, by id, in one query per 500 ids."""
        out: dict[str, dict[int, tuple[int, int | None]]] = {}
        with reading(self.engine) as conn:
            for i in range(0, len(sub_ids), 500):
                for r in conn.execute(select(positions).where(positions.c.subscription.in_(sub_ids[i:i + 500]))).mappings():
                    out.setdefault(r["subscription"], {})[r["partition"]] = (r["next_offset"], r["not_before_ms"])
        return out

    def commit_position(self, sub_id: str, partition: int, expected: int, next_offset: int, owner: str,
                        clear_not_before: bool, delivered: int = 0, outcome: str | None = None) -> bool:
        """Advance a position from `expected` to `next_offset`, only while `owner` still holds
        the (subscription, partition) claim; False when the claim or the position moved.
        `delivered` events answered 2xx since the last commit are counted in the same transaction
        (one write per commit, not per request)."""

        def tx() -> int:
            with self.engine.begin() as conn:
                return commit_position_in(conn, sub_id, partition, expected, next_offset, owner, clear_not_before,
                                          delivered, outcome)

        return retrying(tx) == 1


def commit_position_in(conn, sub_id: str, partition: int, expected: int, next_offset: int, owner: str,
                       clear_not_before: bool, delivered: int = 0, outcome: str | None = None) -> int:
    """`GatewayStore.commit_position` inside the caller's transaction (a gateway commits all its
    deliveries' positions in one, connectors/gateway/delivery_books.py); 1 when it moved."""
    holds = exists().where(
        and_(claims.c.product == claim_product(sub_id), claims.c.resource == claim_resource(partition), claims.c.owner == owner)
    )
    values: dict[str, Any] = {"next_offset": next_offset, "updated_at": time.time()}
    if clear_not_before:
        values["not_before_ms"] = None
    done = conn.execute(
        update(positions)
        .where(and_(positions.c.subscription == sub_id, positions.c.partition == partition,
                    positions.c.next_offset == expected, holds))
        .values(**values)
    ).rowcount
    if done == 0:  # a partition added after the subscription was created
        known = conn.execute(select(positions.c.partition).where(
            and_(positions.c.subscription == sub_id, positions.c.partition == partition))).first()
        owned = conn.execute(select(claims.c.owner).where(holds)).first()
        if known is None and owned is not None:
            conn.execute(insert(positions).values(subscription=sub_id, partition=partition, **values))
            done = 1
    if delivered and done:  # the new partition's first delivered events count too
        now = time.time()
        conn.execute(update(subscriptions).where(subscriptions.c.id == sub_id).values(
            delivered=subscriptions.c.delivered + delivered, last_success_at=now, last_attempt_at=now,
            last_outcome=(outcome or "")[:500], failures=0))
    return done


def commit_positions_in(conn, rows: list[tuple[str, int, int, int, str, bool, int, str | None]]) -> list[int]:
    """`commit_position_in` of many (sub_id, partition, expected, next_offset, owner,
    clear_not_before, delivered, outcome) rows inside the caller's transaction, in a few
    statements instead of two or three per row: one executemany of the compare-and-set UPDATE
    (still on the previous position and the claim's owner), one read-back of the positions
    saying which moved (a driver's executemany rowcount is a total, or nothing), one
    executemany counting the delivered events. A row that did not move (its claim or position
    moved, or a partition added after the subscription was made) and the rare row clearing
    `not_before_ms` go through `commit_position_in` one by one. 1 for each row that moved."""
    if not rows:
        return []
    now = time.time()
    holds = exists().where(and_(claims.c.product == bindparam("b_product"), claims.c.resource == bindparam("b_resource"),
                                claims.c.owner == bindparam("b_owner")))
    cas = (update(positions)
           .where(and_(positions.c.subscription == bindparam("b_sub"), positions.c.partition == bindparam("b_part"),
                       positions.c.next_offset == bindparam("b_expected"), holds))
           .values(next_offset=bindparam("b_next"), updated_at=now))
    bulk = [i for i, r in enumerate(rows) if not r[5]]
    if bulk:
        conn.execute(cas, [{"b_sub": rows[i][0], "b_part": rows[i][1], "b_expected": rows[i][2], "b_next": rows[i][3],
                            "b_product": claim_product(rows[i][0]), "b_resource": claim_resource(rows[i][1]),
                            "b_owner": rows[i][4]} for i in bulk])
    at: dict[tuple[str, int], int] = {}
    ids = sorted({rows[i][0] for i in bulk})
    for c in range(0, len(ids), 500):
        for r in conn.execute(select(positions.c.subscription, positions.c.partition, positions.c.next_offset)
                              .where(positions.c.subscription.in_(ids[c:c + 500]))):
            at[(r.subscription, r.partition)] = r.next_offset
    done = [0] * len(rows)
    counted = []
    for i in bulk:
        sub_id, partition, _, next_offset, _, _, delivered, outcome = rows[i]
        if at.get((sub_id, partition)) == next_offset:
            done[i] = 1
            if delivered:
                counted.append({"b_id": sub_id, "b_n": delivered, "b_outcome": (outcome or "")[:500]})
    if counted:
        conn.execute(update(subscriptions).where(subscriptions.c.id == bindparam("b_id")).values(
            delivered=subscriptions.c.delivered + bindparam("b_n"), last_success_at=now, last_attempt_at=now,
            last_outcome=bindparam("b_outcome"), failures=0), counted)
    for i, row in enumerate(rows):
        if not done[i]:
            done[i] = commit_position_in(conn, *row)
    return done


# --- pull delivery (connectors/gateway/pull.py) ----------------------------------------------

pull_state = Table(
    "fs_flow_pull",
    md,
    Column("subscription", String(40), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("read_through", BigInteger, nullable=False),  # first offset not yet handed out or skipped
    Column("position", BigInteger, nullable=False),  # the fs_flow_positions value pull last wrote
    Column("position_at", Double, nullable=False),  # and its updated_at: another value is a replay
    Column("version", BigInteger, nullable=False),  # bumped by every change of the partition's locks
)

locks = Table(
    "fs_flow_locks",
    md,
    Column("subscription", String(40), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("event_offset", BigInteger, primary_key=True),
    Column("lock_token", String(64), nullable=False, unique=True),
    Column("expires_at", Double, nullable=False),
    Column("delivery_count", Integer, nullable=False),
    Column("attributes", Text, nullable=False),  # the CloudEvent's attributes as JSON
    Column("data", LargeBinary, nullable=False),  # its data, the record's bytes
)
