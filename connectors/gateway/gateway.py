"""A gateway process's delivery side: find active subscriptions, claim their partitions, deliver.

Every `poll_interval_s` the gateway lists the active subscriptions and tries to claim each
(subscription, Kafka partition) it is not delivering yet (`fs_claims`, lease `lease_s`, 2 s by
default, renewed every lease/4 as a heartbeat), up to CLAIM_BATCH units in one metastore
transaction (`Metastore.claim_many`) and their positions read in one query. A claim held live
by another gateway is left alone; one whose lease ran out (its gateway was killed) is taken
over (a compare-and-set on the previous owner and its expiry); a gateway stopping
(SIGTERM) releases all its claims at once, in one transaction (`Metastore.release_many`).
Subscriptions with `config.delivery: pull` are skipped (`pushed`): their receivers fetch.
So several gateways share the work, adding one adds throughput, and a killed one's
partitions move within one lease.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from typing import Any

from connectors.gateway.delivery_books import DeliveryBooks
from connectors.gateway.feed import Feeds
from connectors.gateway.policy import rate_limit
from connectors.gateway.sender import RateLimiter, Sender
from connectors.gateway.settings import GatewaySettings
from connectors.gateway.store import GatewayStore, claim_product, claim_resource
from connectors.gateway.worker import GatewayParts, PartitionDelivery, new_owner
from connectors.kafka import topic_partitions
from connectors.lake import Lake
from connectors.spec import DataProductSpec

log = logging.getLogger(__name__)

PARTITIONS_REFRESH_S = 30.0
CLAIM_BATCH = 200  # (subscription, partition) units claimed in one transaction
PRESENCE = "flow:gateways"  # fs_claims rows, one per live gateway: how many share the work


def pushed(sub) -> bool:
    """The push engine's share of the subscriptions: everything but `config.delivery: pull`,
    which the receiver fetches itself (connectors/gateway/pull.py) — never sent from here.
    A stored config that no longer parses is judged by its raw `delivery`, so one bad row does
    not stop the look for work of every other subscription."""
    try:
        return sub.options.delivery != "pull"
    except ValueError:
        return str((sub.config or {}).get("delivery", "push")) != "pull"


class Gateway:
    def __init__(self, store: GatewayStore, specs: list[DataProductSpec], bootstrap: str,
                 settings: GatewaySettings, kafka_config: dict[str, Any] | None = None, lake: Lake | None = None):
        self.store, self.bootstrap, self.settings = store, bootstrap, settings
        self.specs = {s.name: s for s in specs}
        self.kafka_config = kafka_config or {}
        self.lake = lake  # history below the broker's low watermark is delivered from it
        self.gateway_id = f"gateway-{uuid.uuid4().hex[:12]}"
        self.sender = Sender(settings)
        self.feeds = Feeds(bootstrap, self.kafka_config, public_url=settings.public_url)
        self.books = DeliveryBooks(store, settings.lease_s)  # every delivery's metastore side, one thread
        self.parts = GatewayParts(store, settings, self.sender, bootstrap, self.gateway_id, self.kafka_config,
                                  catchup=self.feeds.catchup, lake=lake, books=self.books)  # what every delivery shares
        self.workers: dict[tuple[str, int], PartitionDelivery] = {}
        self.limiters: dict[str, tuple[int | None, RateLimiter]] = {}
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._listed: dict[str, Any] = {}  # the active subscriptions as last listed
        self.looks = 0  # looks for work done (tests and health wait for one instead of sleeping)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _topic_partitions(self, topic: str) -> list[int]:
        at, parts = self._partitions.get(topic, (0.0, []))
        if time.monotonic() - at > PARTITIONS_REFRESH_S or not parts:
            parts = topic_partitions(self.bootstrap, topic, self.kafka_config)
            self._partitions[topic] = (time.monotonic(), parts)
        return parts

    def _limiter(self, sub_id: str, rate: int | None) -> RateLimiter:
        known = self.limiters.get(sub_id)
        if known is None or known[0] != rate:
            known = (rate, RateLimiter(rate))
            self.limiters[sub_id] = known
        return known[1]

    def _live_gateways(self) -> int:
        """Renew this gateway's presence (a claim of its own) and count the live ones."""
        ms = self.store.metastore
        if not ms.renew(PRESENCE, self.gateway_id, self.gateway_id, self.settings.lease_s):
            ms.claim(PRESENCE, self.gateway_id, self.gateway_id, self.gateway_id, self.settings.lease_s)
        now = time.time()
        return max(1, sum(1 for c in ms.claims_of(PRESENCE) if c["lease_until"] > now))

    def tick(self) -> int:
        """One look for work; returns how many partitions this gateway delivers now.

        Each gateway takes at most its fair share (units / live gateways, rounded up) and gives
        back what it holds beyond that, so a gateway that joins gets work within a tick or two.
        """
        for key, worker in list(self.workers.items()):
            if not worker.is_alive():
                del self.workers[key]
        units = []
        listed = self.store.list(states=["active"], known=self._listed)  # unchanged ones not parsed again
        self._listed = {sub.id: sub for sub in listed}
        for sub in listed:
            spec = self.specs.get(sub.product)
            if spec is None or not spec.flow.enabled or not pushed(sub):
                continue
            units += [(sub, spec, p) for p in self._topic_partitions(spec.topic)]
        share = math.ceil(len(units) / self._live_gateways()) if units else 0
        for key in list(self.workers)[share:]:
            self.workers[key].stop()  # its claim is released when it stops; another gateway takes it
        wanted = [(sub, spec, p) for sub, spec, p in units if (sub.id, p) not in self.workers]
        # Claimed in batches, one transaction each (metastore.claim_many): one claim per
        # transaction started 2,000 deliveries at ~20/s. Units held live by another gateway are
        # passed over and the next ones tried, until this gateway holds its share; each batch's
        # deliveries start at once, well inside their lease.
        at = 0
        while at < len(wanted) and len(self.workers) < share and not self._stop.is_set():
            size = min(CLAIM_BATCH, share - len(self.workers))
            self._start_batch(wanted[at:at + size])
            at += size
        return len(self.workers)

    def _start_batch(self, batch: list[tuple[Any, DataProductSpec, int]]) -> None:
        """Claim `batch`'s (subscription, partition) units in one transaction and start a
        delivery for each one won; a unit another gateway holds live is left to it."""
        owners = {(sub.id, partition): new_owner() for sub, _, partition in batch}
        won = self.store.metastore.claim_many(
            [(claim_product(sid), claim_resource(p), owner) for (sid, p), owner in owners.items()],
            self.gateway_id, self.settings.lease_s)
        mine = [(sub, spec, p) for sub, spec, p in batch if (claim_product(sub.id), claim_resource(p)) in won]
        if not mine:
            return
        at = self.store.positions_of(sorted({sub.id for sub, _, _ in mine}))  # one read, not one per delivery
        if not self.books.is_alive() and not self._stop.is_set():
            self.books.start()
        for sub, spec, partition in mine:
            worker = PartitionDelivery(
                self.parts, spec, sub, partition, owners[(sub.id, partition)],
                self._limiter(sub.id, rate_limit(spec, sub).per_minute), feed=self.feeds.feed(spec, partition),
                start_at=at.get(sub.id, {}).get(partition, (0, None)),
            )
            self.workers[(sub.id, partition)] = worker
            worker.start()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
                self.looks += 1
            except Exception:  # the metastore or broker may be briefly away
                log.exception("the gateway's look for work failed; trying again")
            self._stop.wait(self.settings.poll_interval_s)

    def start(self) -> Gateway:
        self._thread = threading.Thread(target=self.run, name="flow-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every delivery, then hand back every claim (and this gateway's presence) in one
        transaction (`Metastore.release_many`), so another gateway takes them over at its next
        look instead of after a lease. Each delivery commits its last position before that (the
        commit holds only while the claim is ours); one still running at the timeout releases
        its own claim when it ends."""
        self._stop.set()
        if self._thread is not None:  # no look for work starts deliveries behind our back
            self._thread.join(max(0.1, timeout / 4))
        workers = list(self.workers.values())
        for worker in workers:
            worker.stop(hand_back=True)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.1, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
        ended = []
        for worker in workers:
            if worker.is_alive():
                worker.leave_claim = False  # it releases its own as it ends
            else:
                ended.append(worker.claim_unit)
        self.books.stop()
        self.feeds.stop()
        self.sender.close()
        self.store.metastore.release_many([*ended, (PRESENCE, self.gateway_id, self.gateway_id)])
