"""The metastore side of every delivery of one gateway process, in one thread and few statements.

A delivery (worker.py: one subscription's Kafka partition) needs the metastore for three things:
its claim's lease renewed (a heartbeat every lease/4, so a killed gateway's work moves within
~3 s), the subscription re-read (still active? position moved by a replay?) and its position
committed through what its receiver answered 2xx. Done by each delivery on its own, that is a
thread and three or four transactions per (subscription, partition) every 0.25 s: with 100
subscriptions on two partitions, 200 threads contending for SQLite's one writer, and the
deliveries waiting for a state fresh enough to send (measured: half the sending threads'
time, p99 72 s at 2,000 events/s).

`DeliveryBooks` does it for all the process's deliveries at once, every STATE_CHECK_S: one
UPDATE renewing every lease this process holds (and one SELECT saying which it still holds),
one SELECT of the subscriptions (parsed again only when changed: store.get_many(known=…)), one
of their positions, and one transaction committing every position that moved — an executemany
of the compare-and-set on the previous position while the claim is ours, and a read-back
(store.commit_positions_in). Its cost per cycle grows with the deliveries in statements'
parameters, not in transactions or threads. Every IDLE_MOVE_S it also moves the cursors idle
in their feed queue past the offsets the feed passed over for them (nothing in them for that
subscription), so 2,000 cursors need not wake to do it.

A cycle that fails (the metastore away) stops nothing: the deliveries' state goes stale, and
a delivery sends nothing on a state older than STATE_STALE_S (worker._guard) until a cycle
succeeds again; their leases run out meanwhile if the metastore stays away, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import select, update

from connectors.gateway.store import GatewayStore, commit_positions_in, positions
from connectors.metastore import claims, reading, retrying

# A delivery is worker.PartitionDelivery (not imported: it imports this module). What a cycle
# reads and sets of it: sub, partition, owner, position, done_through, clear_not_before,
# unrecorded, last_ok, stored_not_before, count_lock, commit_lock, stop_reason, state_ok_at,
# lease_renewed_at; and it calls move_idle() (move an idle cursor past what it passed over) and
# wake() (a stop_reason was set: do not wait for the cursor's next timeout).
PartitionDelivery = Any

log = logging.getLogger(__name__)

STATE_CHECK_S = 0.25  # state re-read and positions committed this often
IDLE_MOVE_S = 1.0  # idle cursors moved past the offsets they passed over (and committed) this often
CHUNK = 500  # parameters of one IN (...): well inside every database's limit


def _chunks(items: list, size: int = CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


class DeliveryBooks(threading.Thread):
    def __init__(self, store: GatewayStore, lease_s: float, interval_s: float = STATE_CHECK_S):
        super().__init__(name="flow-books", daemon=True)
        self.store, self.lease_s, self.interval_s = store, lease_s, interval_s
        self.deliveries: set[PartitionDelivery] = set()
        self.lock = threading.Lock()  # the set
        self.cycle_lock = threading.Lock()  # held for a whole cycle: unregister waits for it
        self.stopping = threading.Event()
        self.renewed_at = 0.0
        self.idle_moved_at = 0.0
        self.known: dict[str, Any] = {}  # the subscriptions as last read (store.get_many)
        self.cycles = 0
        self.cycled = threading.Condition()  # notified after every cycle (and on a delivery's stop)

    def register(self, delivery: PartitionDelivery) -> None:
        with self.lock:
            self.deliveries.add(delivery)
        delivery.lease_renewed_at = time.monotonic()

    def unregister(self, delivery: PartitionDelivery) -> None:
        """After this, no cycle touches the delivery (it commits its last position itself)."""
        with self.lock:
            self.deliveries.discard(delivery)
        with self.cycle_lock:
            pass

    def stop(self) -> None:
        self.stopping.set()
        self.wake()

    def wait_cycle(self, timeout: float) -> None:
        """Wait (at most `timeout`) for the next cycle's end: a delivery whose state is stale
        waits here instead of polling."""
        with self.cycled:
            self.cycled.wait(timeout)

    def wake(self) -> None:
        with self.cycled:
            self.cycled.notify_all()

    def run(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                ds = [d for d in self.deliveries if d.stop_reason is None]
            if ds:
                with self.cycle_lock:
                    try:
                        self.cycle([d for d in ds if d in self.deliveries])
                        self.cycles += 1
                    except Exception:  # the metastore away: states go stale, deliveries wait
                        log.warning("the gateway's delivery bookkeeping failed; trying again", exc_info=True)
                self.wake()
            self.stopping.wait(self.interval_s)

    # --- one cycle ------------------------------------------------------------------------

    def cycle(self, ds: list[PartitionDelivery]) -> None:
        now = time.monotonic()
        before = {d: d.position for d in ds}  # a delivery's own commit in between is not a replay
        if now - self.renewed_at > self.lease_s / 4:
            held = self._renew([d.owner for d in ds])
            for d in ds:
                if d.owner not in held:
                    self._stop(d, "claim lost")
                else:
                    d.lease_renewed_at = now
            self.renewed_at = now
        ids = sorted({d.sub.id for d in ds})
        fresh, stored = self._read(ids)
        live = []
        for d in ds:
            if d.stop_reason is not None:
                continue
            sub = fresh.get(d.sub.id)
            if sub is None or sub.state != "active":
                self._stop(d, f"subscription is {sub.state if sub else 'gone'}")
                continue
            at = stored.get((d.sub.id, d.partition), d.position)
            if at != before[d] and d.position == before[d]:
                self._stop(d, f"position moved to {at} (a replay)")
                continue
            d.sub = sub
            d.state_ok_at = now
            live.append(d)
        if now - self.idle_moved_at >= IDLE_MOVE_S:  # idle cursors need not wake to move past others' events
            self.idle_moved_at = now
            for d in live:
                d.move_idle()
        self._commit(live)

    @staticmethod
    def _stop(d: PartitionDelivery, why: str) -> None:
        d.stop_reason = why
        d.wake()

    def _renew(self, owners: list[str]) -> set[str]:
        """Renew every lease held by `owners` in one transaction; the owners still holding one."""
        until = self.store.metastore.clock() + self.lease_s

        def tx() -> set[str]:
            held: set[str] = set()
            with self.store.engine.begin() as conn:
                for part in _chunks(owners):
                    conn.execute(update(claims).where(claims.c.owner.in_(part)).values(lease_until=until))
                    held |= {r.owner for r in conn.execute(select(claims.c.owner).where(claims.c.owner.in_(part)))}
            return held

        return retrying(tx)

    def _read(self, ids: list[str]):
        subs, at = self.store.get_many(ids, known=self.known), {}  # only changed rows parsed again
        self.known = subs
        with reading(self.store.engine) as conn:
            for part in _chunks(ids):
                for row in conn.execute(select(positions.c.subscription, positions.c.partition, positions.c.next_offset)
                                        .where(positions.c.subscription.in_(part))):
                    at[(row.subscription, row.partition)] = row.next_offset
        return subs, at

    def _commit(self, ds: list[PartitionDelivery]) -> None:
        """Commit, in one transaction, every position that moved (each a compare-and-set on its
        previous position while its claim is ours); a delivery whose commit did not hold stops."""
        due = []
        for d in ds:
            with d.count_lock:
                through, clear, delivered, last_ok = d.done_through, d.clear_not_before, d.unrecorded, d.last_ok
            if through > d.position:
                due.append((d, through, clear, delivered, last_ok))
        if not due:
            return
        for d, *_ in due:
            d.commit_lock.acquire()
        try:
            def tx() -> list[int]:
                with self.store.engine.begin() as conn:  # a few statements for all of them (store.py)
                    return commit_positions_in(conn, [(d.sub.id, d.partition, d.position, through, d.owner, clear,
                                                       delivered, last_ok)
                                                      for d, through, clear, delivered, last_ok in due])

            done = retrying(tx)
            for (d, through, clear, delivered, _), moved in zip(due, done, strict=True):
                if moved != 1:
                    self._stop(d, "claim or position moved")
                    continue
                d.position = through
                with d.count_lock:
                    d.unrecorded -= delivered
                    if clear:
                        d.stored_not_before, d.clear_not_before = None, False
        finally:
            for d, *_ in due:
                d.commit_lock.release()
