"""The bookkeeper's bulk position commit (store.commit_positions_in), on SQLite, PostgreSQL
and MariaDB: the same answers as one compare-and-set per row — a row moves only from its
previous position while its owner holds the claim, a partition added after the subscription
was made gets its row, the delivered counts are added once per row that moved."""

from __future__ import annotations

import pytest

from connectors.gateway.store import (
    GatewayStore,
    claim_product,
    claim_resource,
    commit_positions_in,
    subscriptions,
)
from connectors.metastore import Metastore
from tests.support import holding_write_lock

LEASE = 1000.0


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'books.db'}"
    return request.getfixturevalue("pg_fresh_url" if request.param == "postgresql" else "mariadb_url")


def test_bulk_commit_moves_only_rows_whose_claim_and_position_hold(url):
    store = GatewayStore(Metastore(url))
    subs = [store.create("p-001", "clicks", {"sink": "http://127.0.0.1:1/x"}, state="active")[0] for _ in range(4)]
    for s in subs:
        store.set_positions(s.id, {0: 10, 1: 10})
    for s in subs[:3]:  # subs[3]'s claim on partition 0 belongs to another gateway
        store.metastore.claim(claim_product(s.id), claim_resource(0), f"own-{s.id}", "gw", LEASE)
    store.metastore.claim(claim_product(subs[3].id), claim_resource(0), "someone-else", "gw2", LEASE)
    store.metastore.claim(claim_product(subs[0].id), claim_resource(2), f"own2-{subs[0].id}", "gw", LEASE)
    rows = [
        (subs[0].id, 0, 10, 25, f"own-{subs[0].id}", False, 7, "HTTP 204"),  # moves
        (subs[1].id, 0, 9, 25, f"own-{subs[1].id}", False, 3, "HTTP 204"),  # its position is 10, not 9
        (subs[2].id, 0, 10, 40, f"own-{subs[2].id}", True, 0, None),  # moves, clearing not_before
        (subs[3].id, 0, 10, 25, f"own-{subs[3].id}", False, 5, "HTTP 204"),  # not its claim
        (subs[0].id, 2, 0, 5, f"own2-{subs[0].id}", False, 2, "HTTP 200"),  # partition 2 is new: inserted
    ]
    with store.engine.begin() as conn:
        done = commit_positions_in(conn, rows)
    assert done == [1, 0, 1, 0, 1]
    at = {s.id: {p: o for p, (o, _) in store.positions(s.id).items()} for s in subs}
    assert at[subs[0].id] == {0: 25, 1: 10, 2: 5}
    assert at[subs[1].id] == {0: 10, 1: 10} and at[subs[3].id] == {0: 10, 1: 10}
    assert at[subs[2].id] == {0: 40, 1: 10}
    with store.engine.connect() as conn:
        delivered = dict(conn.execute(subscriptions.select().with_only_columns(
            subscriptions.c.id, subscriptions.c.delivered).where(subscriptions.c.id.in_([s.id for s in subs]))).all())
    assert delivered == {subs[0].id: 9, subs[1].id: 0, subs[2].id: 0, subs[3].id: 0}
    assert store.get(subs[0].id).last_outcome == "HTTP 200"  # the new partition's row, counted after the bulk


def test_get_many_with_known_reads_again_only_what_changed(url):
    store = GatewayStore(Metastore(url))
    a, b, c, d = (store.create("p-001", "clicks", {"sink": f"http://127.0.0.1:1/{i}"}, state="active")[0]
                  for i in range(4))
    first = store.get_many([a.id, b.id, c.id, d.id])
    store.update_body(b.id, {"sink": "http://127.0.0.1:1/moved"})
    store.rotate_secret(c.id, 60)
    store.transition(d.id, "paused", ["active"], "by its owner")
    again = store.get_many([a.id, b.id, c.id, d.id], known=first)
    assert again[a.id] is first[a.id]  # unchanged: the same object, its parsed options kept
    assert again[b.id].body["sink"] == "http://127.0.0.1:1/moved"
    assert again[c.id].previous_secret == first[c.id].secret and again[c.id].secret != first[c.id].secret
    assert again[d.id].state == "paused"
    assert again == store.get_many([a.id, b.id, c.id, d.id])  # the same answer as a read of everything
    mine = {a.id, b.id, c.id, d.id}  # (MariaDB's database is shared by the session's tests)
    listed = [s for s in store.list(states=["active"], known=again) if s.id in mine]
    assert listed == [s for s in store.list(states=["active"]) if s.id in mine]
    assert [s.id for s in listed] == [a.id, b.id, c.id]  # oldest first, the paused one left out
    assert listed[0] is first[a.id] and listed[1] is again[b.id]


def test_reads_answer_while_a_writer_holds_sqlite_write_lock(tmp_path):
    """The gateway's pure reads (subscriptions, positions, claims: the bookkeeper's cycle and the
    look for work) go through `metastore.reading`: while another connection holds SQLite's write
    lock (a bulk commit mid-transaction, a lease renewal), they answer from the last commit at
    once instead of queuing for the lock as every BEGIN IMMEDIATE does."""
    import time

    store = GatewayStore(Metastore(f"sqlite:///{tmp_path / 'reads.db'}"))
    sub = store.create("p-001", "clicks", {"sink": "http://127.0.0.1:1/x"}, state="active")[0]
    store.set_positions(sub.id, {0: 7})
    store.metastore.claim(claim_product(sub.id), claim_resource(0), "own", "gw", LEASE)
    try:
        with holding_write_lock(store.engine, "UPDATE fs_flow_positions SET next_offset = next_offset WHERE partition = -1"):
            reads = {
                "get": lambda: store.get(sub.id).state,
                "get_many": lambda: sorted(store.get_many([sub.id], known={})),
                "list": lambda: [s.id for s in store.list(states=["active"], known={})],
                "positions_of": lambda: store.positions_of([sub.id]),
                "claims_of": lambda: [c["owner"] for c in store.metastore.claims_of(claim_product(sub.id))],
            }
            want = {"get": "active", "get_many": [sub.id], "list": [sub.id], "positions_of": {sub.id: {0: (7, None)}},
                    "claims_of": ["own"]}
            for name, read in reads.items():
                started = time.monotonic()
                got = read()
                took = time.monotonic() - started
                assert got == want[name], name
                assert took < 1.0, f"{name} waited {took:.1f} s for the writer"
    finally:
        store.metastore.dispose()
