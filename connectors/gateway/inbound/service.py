"""One inbound request, from its bytes to its answer: `POST /inbound/<product>` (docs/flow.md).

In this order, each step answering for itself:

1. the product takes inbound events (404 otherwise);
2. the Standard Webhooks signature verifies with the secret of one of its senders — of those
   registered for the request's `WebHook-Request-Origin` when it carries one — and the
   `webhook-timestamp` is within the product's tolerance (401 otherwise: unknown sender,
   someone else's product, a bad signature, a stale or replayed request);
3. the sender is within its rate (429 with `Retry-After`);
4. the `webhook-id` was not answered before: a retry gets the first answer again, marked
   `"duplicate": true`, and nothing is produced (a concurrent copy waits for the first);
5. the body is CloudEvents in binary, structured or batched mode (415 for a format not
   understood, 400 for malformed JSON or events that are not CloudEvents 1.0, naming each);
6. every event's `source` is one its sender may send and its `type` one the product takes (403);
7. events repeating an id of the same request are dropped (reported as duplicates); the rest
   are checked by the product's own decoder — the one landing uses — so the answer says which
   events landing will quarantine, and why;
8. every remaining event is produced as a binary-mode Kafka record (`ce_*` headers, the data as
   value, keyed by the product key so the warehouse's per-key order holds, header
   `flowsuite.inbound.org`) and the answer waits for the broker's acknowledgement of all of
   them (503 with `Retry-After` when it does not come: nothing was accepted);
9. the answer is recorded under the webhook-id, then sent: 200 with the counts and the
   quarantined events; a single (binary or structured) event that will be quarantined is
   answered 400 — it is kept, in the product's quarantine, but a retry would not change it.

Exactly once in the lake takes both layers: this log drops a retried request, and the
product's `cloudevents.dedupe_on_id` drops an event that reached the topic twice (a batch cut
differently on a retry, a crash between the acknowledgement and the log write, two inbound
processes taking the same retry at once). Copies share their key, so their partition.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from connectors.formats.base import Batch
from connectors.formats.cloudevents import CloudEventsDecoder
from connectors.gateway.inbound.events import (
    EventProblem,
    InboundEvent,
    RequestRefused,
    envelope_problems,
    parse_request,
)
from connectors.gateway.inbound.log import DeliveryLog
from connectors.gateway.inbound.producer import AckingProducer, NotAcknowledged, Record
from connectors.gateway.inbound.senders import ProductSenders, Sender, Unverified, retry_after
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec

log = logging.getLogger(__name__)

ORG_HEADER = "flowsuite.inbound.org"  # the Kafka header naming the sending organisation


@dataclass(frozen=True)
class InboundSettings:
    ack_timeout_s: float = 10.0  # the broker acknowledges a request's records within this, or 503
    linger_ms: int = 1  # a request waits for its last record: 5 ms of linger cost 4 ms on every answer (bench/inbound.py)
    busy_retry_after_s: int = 5  # Retry-After of a 503


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _refused(status: int, message: str, events: list[EventProblem] | None = None, **headers: str) -> Answer:
    body: dict[str, Any] = {"error": message, "status": status}
    if events:
        body["events"] = [p.as_json() for p in events]
    return Answer(status, body, headers)


class InboundService:
    """The inbound products of a gateway; `env` holds (at least) their senders' secret variables."""

    def __init__(self, specs: list[DataProductSpec], env: Mapping[str, str], metastore: Metastore, bootstrap: str,
                 kafka_config: Mapping[str, Any] | None = None, settings: InboundSettings | None = None):
        self.settings = settings or InboundSettings()
        self.bootstrap, self.kafka_config = bootstrap, dict(kafka_config or {})
        self.products = {s.name: ProductSenders.resolve(s, env) for s in specs if s.inbound is not None}
        self.warnings = [w for p in self.products.values() for w in p.warnings]
        self.log = DeliveryLog(metastore)
        self._producer: AckingProducer | None = None
        self._inflight: dict[tuple[str, str, str], threading.Event] = {}
        self._lock = threading.Lock()

    @property
    def producer(self) -> AckingProducer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    self._producer = AckingProducer(self.bootstrap, self.kafka_config, self.settings.ack_timeout_s,
                                                    self.settings.linger_ms)
        return self._producer

    def ensure_topics(self) -> list[str]:
        """Create the inbound products' topics that do not exist; the ones created."""
        from connectors.kafka import ensure_topic

        return [p.spec.topic for p in self.products.values()
                if ensure_topic(self.bootstrap, p.spec.topic, p.spec.inbound.partitions, kafka_config=self.kafka_config)]

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()

    def max_body(self, product: str) -> int | None:
        p = self.products.get(product)
        return None if p is None else p.spec.inbound.max_body_bytes

    # --- the two requests -----------------------------------------------------------------

    def handshake(self, product: str, headers: dict[str, str]) -> Answer:
        p = self.products.get(product)
        if p is None:
            return _refused(404, f"no data product {product!r} takes inbound events here")
        return Answer(200, {}, p.handshake(headers))

    def receive(self, product: str, headers: dict[str, str], body: bytes) -> Answer:
        p = self.products.get(product)
        if p is None:
            return _refused(404, f"no data product {product!r} takes inbound events here")
        try:
            sender = p.identify(headers, body)
        except Unverified as exc:
            return _refused(401, str(exc))
        wait = sender.limiter.take()
        if wait is not None:
            return _refused(429, f"{sender.org} is over its rate of {sender.spec.rate} requests per minute to "
                                 f"{product}", **{"Retry-After": retry_after(wait)})
        key = (product, sender.org, headers["webhook-id"])
        with self._exclusive(key):
            prior = self.log.get(*key)
            if prior is not None:
                return Answer(prior.status, {**prior.answer, "duplicate": True})
            try:
                answer, produced = self._take(p.spec, sender, headers, body)
            except RequestRefused as exc:
                return _refused(exc.status, exc.message, exc.events)
            except NotAcknowledged as exc:
                log.warning("inbound %s from %s: %s", product, sender.org, exc)
                return _refused(503, f"{exc}; nothing of this request was accepted: send it again",
                                **{"Retry-After": str(self.settings.busy_retry_after_s)})
            try:
                self.log.record(*key, answer.status, produced, answer.body, p.spec.inbound.remember.total_seconds())
            except Exception:  # the records are durable: the answer stands, a retry lands once anyway
                log.exception("inbound %s: could not record webhook-id %s; a retry will be produced again "
                              "(landing drops the copies by ce_id)", product, key[2][:100])
            return answer

    @contextmanager
    def _exclusive(self, key: tuple[str, str, str]) -> Iterator[None]:
        """One request per webhook-id at a time in this process; a copy waits for the first."""
        while True:
            with self._lock:
                busy = self._inflight.get(key)
                if busy is None:
                    mine = self._inflight[key] = threading.Event()
                    break
            busy.wait(self.settings.ack_timeout_s + 10)
        try:
            yield
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            mine.set()

    # --- taking a request ------------------------------------------------------------------

    def _take(self, spec: DataProductSpec, sender: Sender, headers: dict[str, str], body: bytes) -> tuple[Answer, int]:
        mode, events = parse_request(headers, body)
        problems = envelope_problems(events)
        if problems:
            raise RequestRefused(400, f"{len(problems)} of {len(events)} event(s) are not valid CloudEvents 1.0; "
                                      "nothing of this request was accepted", problems)
        refused = self._policy(spec, sender, events)
        if refused:
            raise RequestRefused(403, f"{len(refused)} of {len(events)} event(s) are not accepted from {sender.org} "
                                      f"by {spec.name}; nothing of this request was accepted", refused)
        unique: list[tuple[int, InboundEvent]] = []
        first: dict[str, int] = {}
        items: list[dict[str, Any]] = []
        for i, event in enumerate(events):
            if event.id in first:
                items.append({"index": i, "id": event.id, "outcome": "duplicate",
                              "reason": f"the same id as event {first[event.id]} of this request; taken once"})
            else:
                first[event.id] = i
                unique.append((i, event))
        records, quarantined = self._records(spec, sender, unique)
        self.producer.send(spec.topic, records)
        for j, reason in sorted(quarantined.items()):
            i, event = unique[j]
            items.append({"index": i, "id": event.id, "outcome": "quarantined", "reason": reason})
        items.sort(key=lambda item: item["index"])
        answer: dict[str, Any] = {
            "status": 200, "product": spec.name, "sender": sender.org, "webhookid": headers["webhook-id"],
            "mode": mode, "received": len(events), "accepted": len(unique) - len(quarantined),
            "quarantined": len(quarantined), "duplicates": len(events) - len(unique), "events": items,
        }
        status = 200
        if mode != "batched" and quarantined:
            status = 400
            answer["status"] = 400
            answer["error"] = f"the event is kept in {spec.name}'s quarantine: {next(iter(quarantined.values()))}"
        return Answer(status, answer), len(records)

    @staticmethod
    def _policy(spec: DataProductSpec, sender: Sender, events: list[InboundEvent]) -> list[EventProblem]:
        types = spec.inbound.types
        sources: dict[str, bool] = {}  # a batch names a handful of sources: each is matched once
        out = []
        for i, event in enumerate(events):
            source, etype = event.attributes["source"], event.attributes["type"]
            ok = sources.get(source)
            if ok is None:
                ok = sources[source] = sender.accepts_source(source)
            if not ok:
                out.append(EventProblem(i, event.id, f"source {source[:200]!r} is not one {sender.org} may send to "
                                                     f"{spec.name} (inbound.senders[].sources)"))
            elif types and etype not in types:
                out.append(EventProblem(i, event.id, f"type {etype[:200]!r} is not one {spec.name} takes "
                                                     f"({', '.join(types)})"))
        return out

    def _records(self, spec: DataProductSpec, sender: Sender,
                 unique: list[tuple[int, InboundEvent]]) -> tuple[list[Record], dict[int, str]]:
        """The Kafka records of the events (in request order) and, by position, the reason
        landing will quarantine an event — found by the product's own decoder, given the
        attributes already parsed (it does not read them back from the headers)."""
        org = sender.org
        attributes = [event.attributes for _, event in unique]
        values = [event.data for _, event in unique]
        keys = [(a.get("partitionkey") or a.get("subject") or a["id"]).encode() for a in attributes]
        n = len(unique)
        now_ms = int(time.time() * 1000)
        batch = Batch(partition=0, values=values, keys=keys, offsets=list(range(n)), timestamps=[now_ms] * n)
        decoded = CloudEventsDecoder(spec).decode(batch, attributes)  # a fresh one: its ce_id memory is this request's
        quarantined = dict(zip(decoded.invalid.column("_offset").to_pylist(),
                               decoded.invalid.column("_error").to_pylist(), strict=True))
        if spec.key and decoded.valid.num_rows:
            positions = decoded.valid.column("_offset").to_pylist()
            columns = [decoded.valid.column(k).to_pylist() for k in spec.key]
            for row, j in enumerate(positions):
                values_of = [c[row] for c in columns]
                if all(v is not None for v in values_of):
                    keys[j] = (str(values_of[0]) if len(values_of) == 1
                               else json.dumps(values_of, separators=(",", ":"), default=str)).encode()
        # Header values go as str: the client encodes them to UTF-8 in C, and each name is made once.
        names = _HEADER_NAMES
        records = []
        for j, attrs in enumerate(attributes):
            hdrs = [(names.get(k) or _header_name(k), v) for k, v in attrs.items() if k != "datacontenttype"]
            ctype = attrs.get("datacontenttype") or ("application/json" if values[j] is not None else None)
            if ctype:
                hdrs.append(("content-type", ctype))
            hdrs.append((ORG_HEADER, org))
            records.append((keys[j], values[j], hdrs))
        return records, quarantined


_HEADER_NAMES: dict[str, str] = {}  # attribute → its Kafka header name (binary mode: ce_<name>)


def _header_name(attribute: str) -> str:
    name = "ce_" + attribute
    if len(_HEADER_NAMES) < 1000:  # names are the senders' to choose: the memo stays bounded
        _HEADER_NAMES[attribute] = name
    return name
