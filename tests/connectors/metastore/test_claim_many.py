"""Metastore.claim_many: many units claimed in one transaction, as exclusive as one claim at a time.

On SQLite and PostgreSQL: a free unit is taken, a live one of another owner is left
out, an expired one is taken over, and processes racing for the same units never both hold one.
On MariaDB: leases keep their precision (epoch seconds are Double columns; a Float column was
MariaDB's single-precision FLOAT, which answered 1796697073 as 1796700000).
"""

from __future__ import annotations

import multiprocessing
import time

import pytest

from connectors.metastore import ClaimHeldError, Metastore

LEASE = 1000.0


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'claims.db'}"
    return request.getfixturevalue("pg_fresh_url")


def units(owner: str, n: int, product: str = "cm:p") -> list[tuple[str, str, str]]:
    return [(f"{product}{i}", f"partition/{i % 2}", f"{owner}-{i}") for i in range(n)]


def test_free_units_are_taken_and_a_second_owner_gets_none_while_they_live(url):
    ms = Metastore(url)
    first = ms.claim_many(units("a", 300), "gw-a", LEASE)
    assert len(first) == 300
    assert ms.claim_many(units("b", 300), "gw-b", LEASE) == set()
    # the one-at-a-time claim agrees: each unit is held
    with pytest.raises(ClaimHeldError):
        ms.claim("cm:p7", "partition/1", "someone", "gw-c", LEASE)
    rows = {(c["product"], c["resource"]): c["owner"] for i in range(300) for c in ms.claims_of(f"cm:p{i}")}
    assert all(owner.startswith("a-") for owner in rows.values()) and len(rows) == 300


def test_expired_units_are_taken_over_live_ones_left_and_mixed_batches_split(url):
    ms = Metastore(url)
    ms.claim_many(units("a", 10), "gw-a", LEASE)
    ms.claim("cm:q0", "partition/0", "held-live", "gw-x", 100 * LEASE)
    later = time.time() + 3 * LEASE
    ms.clock = lambda: later  # a's leases ran out; held-live's has not
    got = ms.claim_many(units("b", 10) + [("cm:q0", "partition/0", "b-q"), ("cm:q1", "partition/0", "b-q1")],
                        "gw-b", LEASE)
    assert got == {(p, r) for p, r, _ in units("b", 10)} | {("cm:q1", "partition/0")}
    assert ms.claims_of("cm:q0")[0]["owner"] == "held-live"
    assert ms.claims_of("cm:p3")[0]["owner"] == "b-3"
    assert ms.claims_of("cm:p3")[0]["lease_until"] == pytest.approx(later + LEASE, abs=128)
    # an owner claiming what it holds renews it
    ms.clock = lambda: later + LEASE / 2
    assert ms.claim_many([("cm:p3", "partition/1", "b-3")], "gw-b", LEASE) == {("cm:p3", "partition/1")}
    assert ms.claims_of("cm:p3")[0]["lease_until"] == pytest.approx(later + 1.5 * LEASE, abs=128)


def _race(url: str, owner: str, n: int, go, out) -> None:
    ms = Metastore(url)
    go.wait(timeout=120)  # every racer imported and connected: all start together, on a signal
    got = set()
    for i in range(0, n, 50):  # overlapping batches, as two gateways' ticks would be
        got |= ms.claim_many(units(owner, n)[i:i + 50], owner, LEASE)
    out.put((owner, sorted(got)))


def test_processes_racing_for_the_same_units_never_both_hold_one(url):
    Metastore(url)  # tables made before the race
    n = 200
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    go = ctx.Barrier(3)
    procs = [ctx.Process(target=_race, args=(url, f"r{k}", n, go, out)) for k in range(3)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    won = [tuple(u) for got in results.values() for u in got]
    assert len(won) == len(set(won)), "a unit was claimed by two processes at once"
    assert len(won) == n  # every unit went to someone (nothing held, nothing lost)
    ms = Metastore(url)
    for owner, got in results.items():
        for product, _resource in got:
            assert ms.claims_of(product)[0]["owner"].startswith(owner + "-")


def test_leases_keep_their_precision_on_mariadb(mariadb_url):
    ms = Metastore(mariadb_url)
    before = time.time()
    assert len(ms.claim_many(units("a", 5, product="mdb:p"), "gw-a", 2.0)) == 5
    leases = [c["lease_until"] for i in range(5) for c in ms.claims_of(f"mdb:p{i}")]
    assert len(leases) == 5 and all(before + 2.0 <= lease <= time.time() + 2.0 for lease in leases), leases
    assert ms.claim_many(units("b", 5, product="mdb:p"), "gw-b", 2.0) == set()
    time.sleep(2.2)  # the 2 s leases run out: a clock-based rule, nothing to poll
    assert len(ms.claim_many(units("b", 5, product="mdb:p"), "gw-b", 2.0)) == 5


def test_release_many_hands_back_only_what_each_owner_holds_in_one_transaction(url):
    """Metastore.release_many: every unit whose owner still holds it is released in ONE
    transaction (a stopping gateway's 2,000 claims at once), a unit someone else holds stays,
    and another owner takes the released ones over at once, long before their lease would end."""
    from sqlalchemy import event

    ms = Metastore(url)
    held = units("a", 300, product="rm:p")
    assert len(ms.claim_many(held, "gw-a", LEASE)) == 300
    wrong = [(p, r, "not-the-owner" if i == 5 else o) for i, (p, r, o) in enumerate(held)]
    begins: list[int] = []

    def began(_conn) -> None:
        begins.append(1)

    event.listen(ms.engine, "begin", began)
    ms.release_many(wrong)
    assert len(begins) == 1, f"{len(begins)} transactions"
    left = {(c["product"], c["resource"]): c["owner"] for i in range(300) for c in ms.claims_of(f"rm:p{i}")}
    assert left == {("rm:p5", "partition/1"): "a-5"}  # its owner was given wrong: not released
    got = ms.claim_many(units("b", 300, product="rm:p"), "gw-b", LEASE)
    assert len(got) == 299 and ("rm:p5", "partition/1") not in got
    begins.clear()
    ms.release_many([])  # nothing to do: no transaction
    assert begins == []
    event.remove(ms.engine, "begin", began)
    ms.dispose()
