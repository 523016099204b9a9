"""An idempotent producer (`enable.idempotence`, `acks=all`) that tells a caller when the broker
acknowledged *its* records, so a 2xx goes out only for what is durable.

One producer per process, polled by a thread of its own; `send()` produces a request's records
and waits for each one's delivery report. A record not acknowledged within `message.timeout.ms`
is reported failed by librdkafka, so `send()` always returns or raises within the ack timeout.
After a fatal error (the idempotent producer cannot go on) the next `send()` starts a new one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer

from connectors.errors import TransientError

log = logging.getLogger(__name__)

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes | str]]]  # key, value, headers (str: UTF-8)


class NotAcknowledged(TransientError):
    """The broker did not acknowledge every record of a request (down, or too slow)."""


class _Pending:
    __slots__ = ("done", "errors", "left", "lock")

    def __init__(self, n: int):
        self.left, self.errors = n, []
        self.done = threading.Event()
        self.lock = threading.Lock()
        if n == 0:
            self.done.set()

    def report(self, err, _msg) -> None:
        with self.lock:
            if err is not None:
                self.errors.append(err)
            self.left -= 1
            if self.left <= 0:
                self.done.set()


class AckingProducer:
    def __init__(self, bootstrap: str, kafka_config: Mapping[str, Any] | None = None, ack_timeout_s: float = 10.0,
                 linger_ms: int = 1):
        self.ack_timeout_s = ack_timeout_s
        self.config = {
            **(kafka_config or {}),
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "message.timeout.ms": int(ack_timeout_s * 1000),
            "partitioner": "murmur2_random",  # the Java client's: the same key lands where theirs would
            "error_cb": self._on_error,
        }
        self._fatal: str | None = None
        self._lock = threading.Lock()
        self._producer = Producer(self.config)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="inbound-producer-poll", daemon=True)
        self._poller.start()

    def _on_error(self, err) -> None:
        if err.fatal():
            self._fatal = err.str()
            log.error("inbound producer: fatal error, a new producer takes over: %s", err.str())
        else:
            log.warning("inbound producer: %s", err.str())

    def _poll(self) -> None:
        while not self._stop.is_set():
            producer = self._producer
            try:
                producer.poll(0.05)
            except (KafkaException, RuntimeError):  # a producer replaced under us
                time.sleep(0.01)

    def _current(self) -> Producer:
        if self._fatal is not None:
            with self._lock:
                if self._fatal is not None:
                    old, self._producer, self._fatal = self._producer, Producer(self.config), None
                    old.flush(0)
        return self._producer

    def send(self, topic: str, records: Sequence[Record]) -> None:
        """Produce `records` in order and return once the broker acknowledged all of them;
        raise NotAcknowledged when any was not (nothing may be taken as delivered then)."""
        producer = self._current()
        pending = _Pending(len(records))
        deadline = time.monotonic() + self.ack_timeout_s + 5.0
        for key, value, headers in records:
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers, on_delivery=pending.report)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    if time.monotonic() > deadline:
                        raise NotAcknowledged(f"the producer's queue for topic {topic} stayed full") from None
                    time.sleep(0.005)
                except KafkaException as exc:
                    raise NotAcknowledged(f"topic {topic}: the record could not be produced: {exc}") from None
        if not pending.done.wait(max(0.0, deadline - time.monotonic())):
            raise NotAcknowledged(f"topic {topic}: the broker acknowledged {len(records) - pending.left} of "
                                  f"{len(records)} record(s) within {self.ack_timeout_s:.0f} s")
        if pending.errors:
            first = pending.errors[0]
            raise NotAcknowledged(f"topic {topic}: {len(pending.errors)} of {len(records)} record(s) not "
                                  f"acknowledged by the broker ({first.str()})")

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._poller.join(2)
        self._producer.flush(timeout)
