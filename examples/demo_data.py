"""Realistic demo traffic for `dataproducts/clicks.yaml`, and a fast idempotent producer.

`generate_clicks` yields ad impressions and clicks (about 9 impressions per click) spread
over the last H hours, with a chosen fraction of invalid records of every kind the landing
must quarantine. Output is deterministic for a seed and a `now`, so tests can replay it.

`produce` writes any (key, value) stream with an idempotent producer and fails loudly when
a single delivery failed. A million records go through in a few seconds: values are built
by string formatting from precomputed pieces, not by `json.dumps` per record.

Dagster-free: used by `flowsuite produce-demo`, the tests and the benchmarks.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import KafkaError, Producer

from connectors.errors import TransientError
from connectors.kafka import ensure_topic

# Every kind of bad record the landing must send to the quarantine, with its reason.
INVALID_KINDS = (
    "malformed_json",  # truncated JSON, or JSON that is not an object
    "wrong_type",  # a string or boolean where an integer is expected, an unparseable time
    "missing_required",  # a required field left out
    "enum_violation",  # kind outside [impression, click]
    "negative_cost",  # cost_micros below its min of 0
    "bad_partner",  # partner_id not matching ^p-[0-9]{3}$
    "non_utf8",  # bytes that are not UTF-8
    "empty_value",  # a zero-length value (not a tombstone: clicks has no deletes)
)

CLICK_RATE = 0.10
USERS = 50_000
PARTNERS = 250
ADS = 5_000
_REQUIRED = ("event_id", "user_id", "partner_id", "ad_id", "kind", "cost_micros", "event_time")


@dataclass(frozen=True)
class ProduceReport:
    produced: int  # delivered and acknowledged by the broker
    valid: int
    invalid: int
    per_partition: dict[int, int] = field(default_factory=dict)


# Delivery failures the broker gives a request it will refuse again (too large, not valid, not
# allowed): producing the same records fails the same way.
REFUSED_REQUESTS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG, KafkaError.INVALID_MSG_SIZE, KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.INVALID_REQUIRED_ACKS,
    KafkaError.UNSUPPORTED_VERSION, KafkaError._INVALID_ARG,
})


class ProduceError(TransientError, RuntimeError):
    """At least one record was not delivered; the message says how many and why. Transient (a
    broker that refused for now or timed out: producing again may succeed) unless a delivery
    failed for the request itself (`REFUSED_REQUESTS`: too large, not valid, not allowed), which
    a retry meets again."""

    def __init__(self, message: str, failures: Iterable[KafkaError] = ()):
        super().__init__(message)
        self.transient = not any(f.code() in REFUSED_REQUESTS for f in failures)


def demo_window(hours: int, now: datetime | None = None) -> tuple[datetime, datetime]:
    """[start, end) of the event times: H whole hours, the last one being the current hour.

    Times never lie in the future, so the current hour is filled only up to `now`.
    """
    if hours < 1:
        raise ValueError(f"hours must be at least 1, got {hours}")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    start = current_hour - timedelta(hours=hours - 1)
    return start, max(now, start + timedelta(seconds=1))


def generate_clicks(
    n: int,
    hours: int,
    invalid_rate: float,
    seed: int = 0,
    now: datetime | None = None,
) -> Iterator[tuple[bytes, bytes, bool]]:
    """Yield n (key, value, valid) click events; a fraction `invalid_rate` are invalid.

    Invalid records cycle through INVALID_KINDS, so every kind appears once there are at
    least len(INVALID_KINDS) of them. The key is the event_id in every case.
    """
    if n < 0:
        raise ValueError(f"events must be zero or more, got {n}")
    if not 0.0 <= invalid_rate <= 1.0:
        raise ValueError(f"invalid rate must be between 0 and 1, got {invalid_rate}")
    start, end = demo_window(hours, now)
    span_ms = int((end - start).total_seconds() * 1000)
    # Event time = hour prefix + "MM:SS" + ".mmmZ": a few lookups instead of strftime.
    hour_prefix = [
        (start + timedelta(hours=h)).strftime("%Y-%m-%dT%H:")
        for h in range(span_ms // 3_600_000 + 1)
    ]
    minute_second = [f"{m:02d}:{s:02d}" for m in range(60) for s in range(60)]
    users = [f"u-{i:06d}" for i in range(USERS)]
    partners = [f"p-{i:03d}" for i in range(1, PARTNERS + 1)]
    ads = [f"ad-{i:05d}" for i in range(ADS)]
    rng = random.Random(seed)
    getrandbits, rand = rng.getrandbits, rng.random
    invalid_seen = 0

    for _ in range(n):
        b = getrandbits(128)
        h = f"{b:032x}"
        event_id = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
        # One draw, sliced into independent bit ranges, for every other field.
        r = getrandbits(128)
        user = users[(r & 0xFFFFF) % USERS]
        partner = partners[((r >> 20) & 0xFFFF) % PARTNERS]
        ad = ads[((r >> 36) & 0xFFFF) % ADS]
        if (r >> 52) & 0x3FF < CLICK_RATE * 1024:
            kind, cost = "click", 100_000 + ((r >> 62) & 0xFFFFF) % 1_900_000
        else:
            kind, cost = "impression", 100 + ((r >> 62) & 0xFFFFF) % 4_900
        seconds, millis = divmod((r >> 82) % span_ms, 1000)
        hour, second_of_hour = divmod(seconds, 3600)
        event_time = f"{hour_prefix[hour]}{minute_second[second_of_hour]}.{millis:03d}Z"
        key = event_id.encode()
        if invalid_rate and rand() < invalid_rate:
            bad = INVALID_KINDS[invalid_seen % len(INVALID_KINDS)]
            invalid_seen += 1
            record = {
                "event_id": event_id, "user_id": user, "partner_id": partner, "ad_id": ad,
                "kind": kind, "cost_micros": cost, "event_time": event_time,
            }  # fmt: skip
            yield key, _invalid_value(bad, record, rng), False
            continue
        yield (
            key,
            (
                f'{{"event_id":"{event_id}","user_id":"{user}","partner_id":"{partner}",'
                f'"ad_id":"{ad}","kind":"{kind}","cost_micros":{cost},"event_time":"{event_time}"}}'
            ).encode(),
            True,
        )


def _json(record: Mapping[str, Any]) -> str:
    import json

    return json.dumps(record, separators=(",", ":"))


def _invalid_value(kind: str, record: dict[str, Any], rng: random.Random) -> bytes:
    """One invalid value of the given kind, built from an otherwise valid record."""
    if kind == "malformed_json":
        text = _json(record)
        return rng.choice(
            [text[: len(text) // 2], text.replace('":', '"', 1), '["not", "an", "object"]']
        ).encode()
    if kind == "wrong_type":
        variant = rng.randrange(3)
        if variant == 0:
            record["cost_micros"] = "lots"
        elif variant == 1:
            record["cost_micros"] = True
        else:
            record["event_time"] = "yesterday afternoon"
        return _json(record).encode()
    if kind == "missing_required":
        del record[rng.choice(_REQUIRED)]
        return _json(record).encode()
    if kind == "enum_violation":
        record["kind"] = rng.choice(["view", "CLICK", "conversion"])
        return _json(record).encode()
    if kind == "negative_cost":
        record["cost_micros"] = -rng.randrange(1, 10_000)
        return _json(record).encode()
    if kind == "bad_partner":
        record["partner_id"] = rng.choice(["partner-7", "p-12", "P-123", "p-1234"])
        return _json(record).encode()
    if kind == "non_utf8":
        return _json(record).encode().replace(b'"user_id":"', b'"user_id":"\xff\xfe\xc3', 1)
    if kind == "empty_value":
        return b""
    raise ValueError(f"unknown invalid kind {kind!r}")


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes, bytes, bool]],
    partitions: int = 2,
    progress: Callable[[int], None] | None = None,
    kafka_config: Mapping[str, Any] | None = None,
    progress_every: int = 20_000,
) -> ProduceReport:
    """Produce (key, value, valid) records to `topic` (created with `partitions` if missing).

    Idempotent producer, acks=all; records are partitioned by key with murmur2, as Java
    clients do, so a key always lands in the same partition. `progress(n)` is called with
    the number of records handed to the producer so far. Raises ProduceError unless every
    record was acknowledged.
    """
    ensure_topic(bootstrap, topic, partitions, kafka_config=kafka_config)
    delivered: Counter[int] = Counter()
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            delivered[msg.partition()] += 1
        else:
            failures.append(err)

    producer = Producer(
        {
            **(kafka_config or {}),
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "partitioner": "murmur2_random",
            "on_delivery": on_delivery,
        }
    )
    send, poll = producer.produce, producer.poll
    valid = invalid = sent = 0
    for key, value, is_valid in records:
        try:
            send(topic, value, key)
        except BufferError:  # local queue full: let deliveries drain, then retry once more
            while True:
                poll(0.05)
                try:
                    send(topic, value, key)
                    break
                except BufferError:
                    continue
        sent += 1
        if is_valid:
            valid += 1
        else:
            invalid += 1
        if sent % progress_every == 0:
            poll(0)
            if progress is not None:
                progress(sent)
    remaining = producer.flush(60)
    if progress is not None:
        progress(sent)
    produced = sum(delivered.values())
    if failures or remaining or produced != sent:
        reason = f"; first error: {failures[0]}" if failures else ""
        raise ProduceError(
            f"{sent - produced} of {sent} records to topic {topic!r} were not delivered "
            f"({len(failures)} failed, {remaining} still queued after flush){reason}",
            failures,
        )
    return ProduceReport(
        produced=produced,
        valid=valid,
        invalid=invalid,
        per_partition=dict(sorted(delivered.items())),
    )


# --- the demo clicks in the Confluent wire format (format: avro | protobuf) ------------------

WIRE_FORMATS = ("avro", "protobuf")
WIRE_SCHEMA_IDS = (1, 2, 3)  # dataproducts/schemas/clicks-v<id>.avsc|.proto
WIRE_FAULTS = ("wrong_magic_byte", "truncated_payload")  # what only a wire format can get wrong


def encode_clicks(
    clicks: Iterable[tuple[bytes, bytes, bool]], fmt: str, schemas: Any = None
) -> Iterator[tuple[bytes, bytes, bool]]:
    """The (key, value, valid) stream of `generate_clicks`, each value re-encoded as `fmt` in the
    Confluent wire format, cycling through the writer schemas 1, 2 and 3 of the demo products.

    Invalid JSON that still reads as a click (an enum, a cost or a partner off the rules)
    is encoded as it is, so the spec's rules catch it; the rest becomes a wire-format fault:
    a wrong magic byte or a truncated payload. `schemas` is the folder of the schema files.
    """
    import json

    from connectors.formats.registry import schemas_dir

    if fmt not in WIRE_FORMATS:
        raise ValueError(f"format must be one of {WIRE_FORMATS}, got {fmt!r}")
    folder = schemas or schemas_dir()
    encoders = [_avro_encoder(folder, sid) if fmt == "avro" else _proto_encoder(folder, sid) for sid in WIRE_SCHEMA_IDS]
    faults = 0
    for n, (key, value, valid) in enumerate(clicks):
        encode = encoders[n % len(encoders)]
        try:
            record = json.loads(value)
            ok = isinstance(record, dict) and all(
                isinstance(record.get(f), str) for f in ("event_id", "user_id", "partner_id", "ad_id", "kind", "event_time")
            ) and type(record.get("cost_micros")) is int
            if ok:
                record["event_time"] = datetime.fromisoformat(record["event_time"])
        except (ValueError, UnicodeDecodeError):
            ok = False
        if ok:
            yield key, encode(record, n), valid
            continue
        good = encoders[0](_FALLBACK, n)
        fault = WIRE_FAULTS[faults % len(WIRE_FAULTS)]
        faults += 1
        yield key, (b"\x01" + good[1:] if fault == "wrong_magic_byte" else good[: len(good) // 2]), False


_FALLBACK = {"event_id": "00000000-0000-4000-a000-000000000000", "user_id": "u-0", "partner_id": "p-001",
             "ad_id": "ad-0", "kind": "click", "cost_micros": 1, "event_time": datetime(2026, 11, 1, tzinfo=UTC)}
_OS = ("android", "ios", "linux", "macos", "windows")
_COUNTRIES = ("DE", "FR", "NL", "PL", "SE", "US")


def _avro_encoder(folder, sid: int) -> Callable[[dict, int], bytes]:
    import io
    import json
    from pathlib import Path

    from fastavro import parse_schema, schemaless_writer

    schema = parse_schema(json.loads((Path(folder) / f"clicks-v{sid}.avsc").read_text()))
    header = b"\x00" + sid.to_bytes(4, "big")

    def encode(record: dict, n: int) -> bytes:
        if sid >= 2:
            record = {**record, "country": _COUNTRIES[n % len(_COUNTRIES)],
                      "device": {"os": _OS[n % len(_OS)], "app_version": None}}
        out = io.BytesIO()
        out.write(header)
        schemaless_writer(out, schema, record)
        return out.getvalue()

    return encode


def _proto_encoder(folder, sid: int) -> Callable[[dict, int], bytes]:
    from pathlib import Path

    from google.protobuf import message_factory

    from connectors.formats.protobuf import compile_proto
    from connectors.formats.registry import FileSchemas

    writer = FileSchemas({sid: f"clicks-v{sid}.proto"}, Path(folder), "protobuf").get(sid)
    cls = message_factory.GetMessageClass(compile_proto(writer).message_types_by_name["Click"])
    header = b"\x00" + sid.to_bytes(4, "big") + b"\x00"  # message index [0]: Click

    def encode(record: dict, n: int) -> bytes:
        msg = cls(event_id=record["event_id"], user_id=record["user_id"], partner_id=record["partner_id"],
                  kind=record["kind"], cost_micros=record["cost_micros"])
        if sid < 3:
            msg.ad_id = record["ad_id"]
        micros = round(record["event_time"].timestamp() * 1_000_000)
        msg.event_time.seconds, msg.event_time.nanos = micros // 1_000_000, (micros % 1_000_000) * 1000
        if sid >= 2:
            msg.country = _COUNTRIES[n % len(_COUNTRIES)]
            msg.device.os = _OS[n % len(_OS)]
        return header + msg.SerializeToString()

    return encode
