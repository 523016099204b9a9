"""The gateway's fault test (issue 23's reliability part): real gateway processes on one
metastore, real partner receivers over HTTP, seeded SIGKILLs, and an audit per subscription.

- `PartnerReceiver`: a loopback webhook receiver of one partner organisation. It can answer a
  seeded share of attempts with 503, or with 429 and `Retry-After`: whether attempt n of an
  event fails is a hash of (seed, partner, event id, n), so a seed gives the same faults whatever
  the threads' timing. It records every request and, decoded, every event it *accepted* (2xx)
  in the order it accepted them — binary, structured and batched CloudEvents alike.
- `Gateways`: `flowsuite flow serve` subprocesses sharing one metastore, killed with SIGKILL
  and started again by index; every process it starts is stopped by its own pid.
- `ClickProducer`: clicks for partners p-000.. produced from a thread at a steady pace while the
  kills happen (including partners nobody subscribed, so a filter that leaks shows).
- `audit`: per subscription, against an independent read of the topic (a plain consumer, not
  the gateway's code): no gap (every event of the partner, by partition and sequence), the
  sequence equal to the event's Kafka offset, first deliveries in order per partition (when
  ordered), nothing of another partner, and every duplicate explained by a kill — accepted
  once before a SIGKILL and again after it. Duplicates are counted per kill; those after a
  claim lost without a kill (a heartbeat that missed its 2 s lease on a starved process, read
  from the gateways' own log lines) are counted apart.

The gateways' log format (`connectors/gateway/worker.py`'s "stops:" line) is what
`Gateways.claim_losses` parses: change both together.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from confluent_kafka import Producer as KafkaProducer

from connectors.gateway.events import BATCH, STRUCTURED
from tests.support import read_messages, wait_for
from tests.support.gateway import T0, Received, Receiver

ROOT = Path(__file__).resolve().parents[2]
# connectors/gateway/worker.py's line when a delivery stops; these reasons mean another gateway has the claim
LOST = re.compile(r"(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: flow (?P<sub>\S+) partition (?P<partition>\d+) "
                  r"stops: (?P<why>claim lost|claim or position moved|position moved to \d+ \(a replay\)|bookkeeping failed.*)$")
LOSS_SLACK_S = 5.0  # the old owner logs its loss at its next bookkeeping, possibly after the re-send


# --- receivers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """One event a receiver answered 2xx for."""

    event_id: str  # the record's event_id (the data)
    ce_id: str
    partner: str
    partition: int
    sequence: int
    at: float  # when the request arrived (before it was answered)


def events_of(rec: Received) -> list[dict]:
    """The CloudEvents of one request as dicts with id, flowpartition, sequence and data, in
    whichever mode it came: batched and structured in the body, binary in ce- headers."""
    ctype = rec.headers.get("content-type", "")
    if ctype.startswith(BATCH):
        return json.loads(rec.body)
    if ctype.startswith(STRUCTURED):
        return [json.loads(rec.body)]
    h = rec.headers
    return [{"id": h["ce-id"], "flowpartition": h["ce-flowpartition"], "sequence": h["ce-sequence"],
             "data": json.loads(rec.body)}]


def failing(seed: int, partner: str, msg_id: str, attempt: int, share: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{partner}:{msg_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") < share * 2**32


@dataclass
class PartnerReceiver:
    """The receiver of partner `org`; `fault` is None, "503" or "429" (then with `Retry-After`)."""

    org: str
    seed: int
    fault: str | None = None
    share: float = 0.05
    retry_after_s: int = 1
    delay_s: float = 0.002  # a receiver that takes a moment, so kills land mid-request
    receiver: Receiver = field(init=False)
    accepted: list[Accepted] = field(default_factory=list)
    faults: int = 0
    torn: int = 0  # requests whose body was cut short (answered 400, no one to hear it)
    _attempts: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.receiver = Receiver(respond=self._respond)

    @property
    def url(self) -> str:
        return self.receiver.url

    def start(self) -> PartnerReceiver:
        self.receiver.start()
        return self

    def stop(self) -> None:
        self.receiver.stop()

    def _respond(self, rec: Received) -> tuple[int, dict[str, str]]:
        time.sleep(self.delay_s)  # the partner's own time to answer (delay_s): the scenario, not a wait
        msg_id = rec.headers.get("webhook-id", "")
        with self._lock:
            self._attempts[msg_id] += 1
            attempt = self._attempts[msg_id]
            if self.fault and failing(self.seed, self.org, msg_id, attempt, self.share):
                self.faults += 1
                if self.fault == "429":
                    return 429, {"Retry-After": str(self.retry_after_s)}
                return 503, {}
            try:
                events = events_of(rec)
            except (ValueError, KeyError):  # a body cut short by a SIGKILL mid-request: the sender is gone
                self.torn += 1
                return 400, {}
            # recorded under the lock while answering: the list is in the order of acceptance
            for ev in events:
                self.accepted.append(Accepted(ev["data"]["event_id"], ev["id"], ev["data"]["partner_id"],
                                              int(ev["flowpartition"]), int(ev["sequence"]), rec.at))
        return 200, {}

    def accepted_ids(self) -> set[str]:
        with self._lock:
            return {a.event_id for a in self.accepted}

    def snapshot(self) -> list[Accepted]:
        with self._lock:
            return list(self.accepted)


# --- gateway processes ----------------------------------------------------------------------


class Gateways:
    """`flowsuite flow serve` processes on one metastore (`env`), addressed by index."""

    def __init__(self, tmp_path: Path, env: dict[str, str], count: int = 2):
        self.tmp_path, self.env = tmp_path, env
        self.procs: list[subprocess.Popen | None] = [None] * count
        self.started = 0
        self.kills: list[tuple[float, int]] = []  # (wall time of the SIGKILL, index)

    def start(self, i: int) -> None:
        log = open(self.tmp_path / f"gateway-{self.started}.log", "wb")  # closed with the process
        self.started += 1
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "orchestration.cli", "flow", "serve", "--port", "0"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()  # the child holds its own descriptor

    def start_all(self) -> Gateways:
        for i in range(len(self.procs)):
            self.start(i)
        return self

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None and proc.poll() is None, f"gateway {i} is not running (exit {proc and proc.poll()})"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.kills.append((time.time(), i))

    def alive(self) -> bool:
        return all(p is not None and p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p is not None and p.poll() is None:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)

    def holders(self, metastore, sub_ids: Iterable[str]) -> set[str]:
        """The gateways (their ids) holding a live claim on a partition of these subscriptions."""
        now = time.time()
        return {c["run_id"] for sid in sub_ids for c in metastore.claims_of(f"flow:{sid}") if c["lease_until"] > now}

    def wait_sharing(self, metastore, sub_ids: list[str], before: set[str], timeout: float = 60) -> set[str]:
        """Wait until two gateways hold claims and they are not the set `before` (a kill since:
        the restarted one has taken its share), so the next kill hits a gateway with work."""
        def sharing():
            assert self.alive(), self.logs_tail()
            now = self.holders(metastore, sub_ids)
            return now if len(now) == len(self.procs) and now != before else None

        return wait_for(sharing, timeout=timeout, interval=0.1, what="both gateways holding claims")

    def claim_losses(self) -> list[tuple[float, str, int, str]]:
        """(time, subscription, partition, why) of every delivery that stopped because its claim
        went to another gateway without a kill (a heartbeat missed under load: the lease ran out
        while the process was starved), from the gateways' own log lines. Those re-send what
        was in flight, like a kill; the audit counts them apart."""
        out = []
        for n in range(self.started):
            for line in (self.tmp_path / f"gateway-{n}.log").read_text(errors="replace").splitlines():
                m = LOST.match(line)
                if m:
                    at = datetime.strptime(m["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time, as logged
                    out.append((at, m["sub"], int(m["partition"]), m["why"]))
        return sorted(out)

    def logs_tail(self, lines: int = 30) -> str:
        out = []
        for n in range(self.started):
            text = (self.tmp_path / f"gateway-{n}.log").read_text(errors="replace").splitlines()
            out.append(f"--- gateway-{n}.log\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


def gateway_env(tmp_path: Path, products: Path, metastore_url: str, bootstrap: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "FLOWSUITE_PRODUCTS_DIR": str(products), "FLOWSUITE_HOME": str(tmp_path),
            "FLOWSUITE_METASTORE_URL": metastore_url, "FLOWSUITE_KAFKA_BOOTSTRAP": bootstrap,
            "FLOWSUITE_LAKE_URL": str(tmp_path / "lake"),
            "FLOWSUITE_FLOW_ALLOW_HTTP": "true", "FLOWSUITE_FLOW_ALLOW_SINKS": "127.0.0.1/32",
            "FLOWSUITE_FLOW_LEASE_S": "2", "FLOWSUITE_FLOW_RETRY_CAP_S": "1", **extra}


# --- producing while killing ----------------------------------------------------------------


class ClickProducer(threading.Thread):
    """Clicks e<start>.. for `partners` in turn, `chunk` every `pause_s`, until stopped."""

    def __init__(self, bootstrap: str, topic: str, partners: tuple[str, ...], start: int = 0,
                 chunk: int = 10, pause_s: float = 0.05):
        super().__init__(name="chaos-producer", daemon=True)
        self.bootstrap, self.topic, self.partners = bootstrap, topic, partners
        self.next, self.chunk, self.pause_s = start, chunk, pause_s
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = KafkaProducer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        try:
            while not self.halt.is_set():
                for i in range(self.next, self.next + self.chunk):
                    rec = {"event_id": f"e{i}", "partner_id": self.partners[i % len(self.partners)],
                           "kind": "click" if i % 3 else "impression",
                           "event_time": (T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")}
                    producer.produce(self.topic, key=f"e{i}".encode(), value=json.dumps(rec).encode())
                self.next += self.chunk
                producer.poll(0)
                self.halt.wait(self.pause_s)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc
        finally:
            if producer.flush(30) != 0 and self.error is None:
                self.error = RuntimeError("the producer did not flush")

    def finish(self) -> int:
        """Stop, flush and return how many were produced."""
        self.halt.set()
        self.join(60)
        if self.error is not None:
            raise self.error
        return self.next


# --- the independent read and the audit -----------------------------------------------------


@dataclass(frozen=True)
class Produced:
    event_id: str
    partner: str
    partition: int
    offset: int


def read_produced(bootstrap: str, topic: str, partitions: int = 2, start: int = 0) -> list[Produced]:
    """Every click of the topic's first `partitions` partitions from offset `start`, read to the
    end with the shared plain-consumer reader (tests.support.read_messages)."""
    out: list[Produced] = []
    for m in read_messages(bootstrap, topic, partitions, timeout=60, start=start):
        rec = json.loads(m.value())
        out.append(Produced(rec["event_id"], rec.get("partner_id"), m.partition(), m.offset()))
    return out


@dataclass
class Audit:
    org: str
    expected: int
    accepted: int
    missing: list[str]
    foreign: list[Accepted]
    wrong_sequence: list[Accepted]
    out_of_order: list[tuple[int, int, int]]  # (partition, previous first delivery, this one)
    duplicates_per_kill: list[int]
    duplicates_per_loss: list[int]  # after a claim lost without a kill (Gateways.claim_losses)
    unexplained: list[Accepted]  # accepted twice with neither a kill nor a claim loss in between

    def problems(self) -> list[str]:
        out = []
        if self.missing:
            out.append(f"{self.org}: {len(self.missing)} of {self.expected} events never accepted, e.g. {self.missing[:5]}")
        if self.foreign:
            out.append(f"{self.org}: {len(self.foreign)} events of other partners, e.g. {self.foreign[:2]}")
        if self.wrong_sequence:
            out.append(f"{self.org}: sequence is not the Kafka offset, e.g. {self.wrong_sequence[:2]}")
        if self.out_of_order:
            out.append(f"{self.org}: first deliveries out of order (partition, before, after): {self.out_of_order[:5]}")
        if self.unexplained:
            out.append(f"{self.org}: {len(self.unexplained)} duplicates with no kill or claim loss between the two "
                       f"deliveries, e.g. {self.unexplained[:2]}")
        return out


def audit(org: str, accepted: list[Accepted], produced: list[Produced], kill_times: list[float],
          ordered: bool = True, wanted: Callable[[Produced], bool] | None = None,
          losses: list[tuple[float, int]] = ()) -> Audit:
    """Check one subscription's accepted events against what the topic holds (see module doc).
    `wanted`: which of the partner's records the subscription must get (default: all of them;
    e.g. only those the landing did not quarantine). `losses`: (time, partition) of this
    subscription's claim losses without a kill."""
    mine = {p.event_id: p for p in produced if p.partner == org and (wanted is None or wanted(p))}
    got_ids = {a.event_id for a in accepted}
    missing = sorted(set(mine) - got_ids, key=lambda e: int(e.lstrip("e")))
    foreign = [a for a in accepted if a.partner != org or a.event_id not in mine]
    wrong = [a for a in accepted if a.event_id in mine
             and (mine[a.event_id].partition, mine[a.event_id].offset) != (a.partition, a.sequence)]
    out_of_order: list[tuple[int, int, int]] = []
    first_at: dict[str, float] = {}
    last_first: dict[int, int] = {}
    per_kill = [0] * len(kill_times)
    per_loss = [0] * len(losses)
    unexplained: list[Accepted] = []
    for a in accepted:
        if a.event_id not in first_at:
            first_at[a.event_id] = a.at
            prev = last_first.get(a.partition)
            if ordered and prev is not None and a.sequence <= prev:
                out_of_order.append((a.partition, prev, a.sequence))
            last_first[a.partition] = max(prev if prev is not None else -1, a.sequence)
            continue
        between = [k for k, t in enumerate(kill_times) if first_at[a.event_id] <= t <= a.at]
        lost = [n for n, (t, p) in enumerate(losses)
                if p == a.partition and first_at[a.event_id] <= t <= a.at + LOSS_SLACK_S]
        if between:
            per_kill[between[-1]] += 1  # the latest kill between the two: the one that lost the commit
        elif lost:
            per_loss[lost[0]] += 1
        else:
            unexplained.append(a)
    return Audit(org, len(mine), len(accepted), missing, foreign, wrong, out_of_order, per_kill, per_loss,
                 unexplained)
