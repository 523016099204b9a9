"""The dead-letter topic of a product with `quality.on_invalid: dlq`.

Every quarantined record is also published to `<topic>.dlq`, byte for byte (original value
and key, same partition number as its origin so per-partition order is kept), with headers
that say why and where from:

| header | value |
|---|---|
| `flowsuite.error` | the quarantine reason |
| `flowsuite.product` | the data product |
| `flowsuite.topic` / `flowsuite.partition` / `flowsuite.offset` | the record's origin |
| `flowsuite.timestamp` | the origin's Kafka timestamp (epoch ms) |
| `flowsuite.id` | `<topic>:<partition>:<offset>`, deterministic: the de-duplication key |

Delivery is confirmed before the landing commits: `land()` calls the publisher with each
batch's invalid rows before it writes them, and the publisher flushes and raises
`DeadLetterError` unless every record was acknowledged — so a failed publish fails the run
and nothing is committed. A retried landing publishes the same records again: the DLQ is
at-least-once; consumers de-duplicate on `flowsuite.id`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from connectors.errors import TransientError
from connectors.kafka.admin import ensure_topic, topic_partitions
from connectors.spec import DataProductSpec

DLQ_SUFFIX = ".dlq"
# A quarantined record may be as large as anything the source topic accepted.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class DeadLetterError(TransientError, RuntimeError):
    """Some quarantined records could not be published to the dead-letter topic."""


def dlq_topic(spec: DataProductSpec) -> str:
    return f"{spec.topic}{DLQ_SUFFIX}"


def original_key(key: str | None) -> bytes | None:
    """The Kafka key as it was produced: quarantine rows hold it as text, `hex:` when not UTF-8."""
    if key is None:
        return None
    if key.startswith("hex:"):
        try:
            return bytes.fromhex(key[4:])
        except ValueError:
            pass
    return key.encode("utf-8")


def dlq_headers(product: str, row: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    ts = row.get("_timestamp")
    ts_ms = int(ts.timestamp() * 1000) if hasattr(ts, "timestamp") else (int(ts) if ts is not None else -1)
    return [
        ("flowsuite.error", str(row.get("_error") or "").encode("utf-8")),
        ("flowsuite.product", product.encode("utf-8")),
        ("flowsuite.topic", str(row["_topic"]).encode("utf-8")),
        ("flowsuite.partition", str(row["_partition"]).encode("ascii")),
        ("flowsuite.offset", str(row["_offset"]).encode("ascii")),
        ("flowsuite.timestamp", str(ts_ms).encode("ascii")),
        ("flowsuite.id", f"{row['_topic']}:{row['_partition']}:{row['_offset']}".encode()),
    ]


class DeadLetterPublisher:
    """Publishes quarantine rows (QUARANTINE_SCHEMA) to the product's dead-letter topic."""

    def __init__(
        self,
        spec: DataProductSpec,
        bootstrap: str,
        kafka_config: Mapping[str, Any] | None = None,
        timeout_s: float = 60.0,
    ):
        from confluent_kafka import Producer

        self.spec = spec
        self.topic = dlq_topic(spec)
        self.timeout_s = timeout_s
        # As many partitions as the source, so a record keeps its origin's partition number.
        source_partitions = len(topic_partitions(bootstrap, spec.topic, kafka_config)) or 1
        ensure_topic(bootstrap, self.topic, source_partitions, kafka_config=kafka_config)
        self.partitions = len(topic_partitions(bootstrap, self.topic, kafka_config)) or 1
        self.published = 0
        self._producer = Producer(
            {
                "message.max.bytes": MAX_MESSAGE_BYTES,
                **(kafka_config or {}),
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )

    def __call__(self, invalid: pa.Table) -> None:
        if invalid.num_rows == 0:
            return
        failures: list[str] = []
        delivered = 0

        def on_delivery(err: Any, _msg: Any) -> None:
            nonlocal delivered
            if err is None:
                delivered += 1
            else:
                failures.append(str(err))

        producer = self._producer
        # Quarantined records are few and each needs its own headers: one produce per record.
        for row in invalid.to_pylist():
            while True:
                try:
                    producer.produce(
                        self.topic,
                        value=row["_raw"],
                        key=original_key(row["_key"]),
                        partition=int(row["_partition"]) % self.partitions,
                        headers=dlq_headers(self.spec.name, row),
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
                except Exception as exc:  # noqa: BLE001 - e.g. a value above the producer's limit
                    failures.append(f"offset {row['_offset']}: {exc}")
                    break
        remaining = producer.flush(self.timeout_s)
        if failures or remaining or delivered != invalid.num_rows:
            first = f"; first error: {failures[0]}" if failures else ""
            raise DeadLetterError(
                f"{self.spec.name}: {invalid.num_rows - delivered} of {invalid.num_rows} quarantined "
                f"record(s) were not delivered to {self.topic} ({remaining} still queued){first}; "
                "nothing committed"
            )
        self.published += delivered


def dlq_publisher(
    spec: DataProductSpec, bootstrap: str, kafka_config: Mapping[str, Any] | None = None
) -> Callable[[pa.Table], None] | None:
    """What to pass as `land(..., on_invalid=)`: a publisher when on_invalid is `dlq`, else None."""
    if spec.quality.on_invalid != "dlq":
        return None
    return DeadLetterPublisher(spec, bootstrap, kafka_config)
