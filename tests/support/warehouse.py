"""Warehouse-sink test helpers shared by the sink tests and the reliability suite: an accounts
product with keys, versions and deletes, and the latest-per-key state computed independently."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

from connectors.spec import DataProductSpec
from connectors.warehouse import WarehouseSink
from examples.demo_data import produce

T0 = datetime(2026, 11, 26, 10, tzinfo=UTC)


def make_spec(
    topic: str = "accounts",
    *,
    deletes: bool = True,
    version: str = "offset",
    extra_fields: list[dict] | None = None,
    key: list[str] | None = None,
    amount_type: str = "int64",
    table: str | None = None,
) -> DataProductSpec:
    name = f"acct_{uuid.uuid4().hex[:8]}"
    return DataProductSpec.model_validate(
        {
            "name": name,
            "owner": "team:billing",
            "topic": topic,
            "key": key or ["id"],
            "fields": [
                {"name": "id", "type": "string", "max_length": 32},
                {"name": "amount", "type": amount_type},
                {"name": "ts", "type": "timestamp"},
                *(extra_fields or []),
            ],
            "event_time": {"field": "ts", "fallback": "kafka_timestamp"},
            "partitioning": {"start": "2026-11-01T00:00:00Z"},
            "sinks": {"database": {"table": table or name, "deletes": "tombstone" if deletes else "none",
                                   "version": version, "batch_rows": 100}},
        }
    )


def state(sink: WarehouseSink) -> dict:
    return {r["id"]: (r["amount"], r["_partition"], r["_offset"]) for r in sink.read_rows()}


def produce_accounts(bootstrap: str, topic: str, n: int, keys: int, seed: int, delete_rate: float = 0.08):
    """Produce n JSON records over `keys` keys (some tombstones); return them in order."""
    rng = random.Random(seed)
    produced = []
    for i in range(n):
        k = f"k{rng.randrange(keys)}"
        if rng.random() < delete_rate:
            produced.append((k.encode(), None, True))
        else:
            ts = (T0 + timedelta(minutes=rng.randrange(180))).isoformat().replace("+00:00", "Z")
            value = json.dumps({"id": k, "amount": i, "ts": ts}).encode()
            produced.append((k.encode(), value, True))
    report = produce(bootstrap, topic, produced)
    assert report.produced == n
    return produced


def expected_state(produced) -> dict[str, int]:
    """Latest per key from the produced records (a key stays in one partition, so its
    records' order in the topic is the produce order)."""
    latest: dict[str, int] = {}
    for key, value, _ in produced:
        if value is None:
            latest.pop(key.decode(), None)
        else:
            latest[key.decode()] = json.loads(value)["amount"]
    return latest
