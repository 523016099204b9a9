"""Where a new subscription starts reading: `config.startfrom` resolved to offsets per partition.

History reaches back as far as the lake does (connectors/gateway/history.py): below the broker's
low watermark, the gateway serves a partition from the lake's live files. Per partition, the
*earliest* offset is the lake's first offset when the lake reaches the low watermark without a
hole (its span ends at or above it), else the low watermark.

`latest` (the default) is the true end of each partition now — found by a fetch, since the
embedded broker's ListOffsets answer is only a lower bound; `earliest` is each partition's
earliest offset; `{"0": 120, "1": 0}` names offsets (a partition left out starts at latest), each
between the earliest and the latest, else refused naming that range; an ISO-8601 time in the past
is resolved through the metastore, because the broker cannot answer `offsets_for_times`: per
partition, the lowest offset of any live file of an hour at or after the time's hour (or the
landing's committed offset, whichever is lower; never below the earliest), then — while reading
— events before the time are skipped until the first one at or after it, which is what Kafka's
offsets_for_times means (with the product's event time instead of the broker's timestamp).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from connectors.errors import TerminalError
from connectors.gateway.history import LakeSpan, lake_span
from connectors.kafka import consumer_config, probe_partitions
from connectors.lake import hour_key
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec


class StartFromError(TerminalError, ValueError):
    pass


def parse_startfrom(value: Any, now: datetime | None = None, where: str = "config.startfrom") -> str | dict[int, int] | datetime:
    """Validate `config.startfrom`; raises StartFromError naming what is wrong. With `now` (a
    request), a time after it is refused: it would skip every event until then while the
    positions move past them, so "start with the next event" is `latest`."""
    if value is None or value == "latest":
        return "latest"
    if value == "earliest":
        return "earliest"
    if isinstance(value, datetime):  # parsed before (a typed request)
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)  # config values may arrive as strings (the OpenAPI says so)
        except ValueError:
            raise StartFromError(f"{where}: not valid JSON") from None
    if isinstance(value, dict):
        try:
            offsets = {int(p): int(o) for p, o in value.items()}
        except (TypeError, ValueError):
            raise StartFromError(f"{where}: expected {{partition: offset}} with integers") from None
        if any(p < 0 or o < 0 for p, o in offsets.items()):
            raise StartFromError(f"{where}: partitions and offsets are not negative")
        return offsets
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            if now is not None and when > now:
                raise StartFromError(
                    f"{where}: {value!r} is in the future (now {now.isoformat(timespec='seconds')}); "
                    'to start with the next event, use "latest"'
                )
            return when
    raise StartFromError(
        f"{where} must be 'latest', 'earliest', {{partition: offset}} or an ISO-8601 time"
    )


def _watermarks(conf: dict[str, Any], topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    consumer = Consumer(conf)
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False) for p in partitions}
    finally:
        consumer.close()


def resolve_startfrom(
    value: Any, spec: DataProductSpec, partitions: list[int], bootstrap: str, metastore: Metastore,
    kafka_config: dict[str, Any] | None = None,
) -> tuple[dict[int, int], int | None]:
    """(start offset per partition, not_before epoch ms or None)."""
    start = parse_startfrom(value)
    conf = consumer_config(bootstrap, f"flowsuite.flow.resolve.{spec.name}", kafka_config)
    marks = _watermarks(conf, spec.topic, partitions)
    spans = {p: lake_span(metastore, spec.name, p) for p in partitions}
    earliest = {p: earliest_offset(max(marks[p][0], 0), spans[p]) for p in partitions}
    if start == "earliest":
        return earliest, None
    if isinstance(start, datetime):
        committed = metastore.committed_offsets(spec.name)
        lowest: dict[int, int] = {p: committed[p].next_offset for p in partitions if p in committed}
        for f in metastore.live_files(spec.name):
            if f.hour < hour_key(start):
                continue
            spans = f.ranges or ({f.partition: [[f.min_offset if f.min_offset is not None else f.start_offset, 0]]}
                                 if f.partition is not None else {})
            for p, ranges in spans.items():
                first = min(r[0] for r in ranges)
                lowest[int(p)] = min(lowest.get(int(p), first), first)
        # A partition the metastore knows nothing of starts at its beginning.
        return {p: max(lowest.get(p, 0), earliest[p]) for p in partitions}, int(start.timestamp() * 1000)
    # latest, and partitions not named by an explicit map: the exact end, by a fetch
    hints = {p: max(high - 1, low, 0) for p, (low, high) in marks.items()}
    probes = probe_partitions(conf, spec.topic, hints, always_fetch=partitions)
    latest = {p: (probes[p].end if probes[p].end is not None else max(marks[p][1], 0)) for p in partitions}
    if isinstance(start, dict):
        unknown = sorted(set(start) - set(partitions))
        if unknown:
            raise StartFromError(f"config.startfrom names partitions {unknown} that {spec.topic!r} does not have")
        for p, o in start.items():
            if o < earliest[p] or o > latest[p]:
                raise StartFromError(
                    f"config.startfrom: offset {o} of partition {p} is outside the range available, "
                    f"{earliest[p]}..{latest[p]} ({_sources(max(marks[p][0], 0), latest[p], spans[p])})"
                )
        return {p: start.get(p, latest[p]) for p in partitions}, None
    return latest, None


def earliest_offset(low: int, span: LakeSpan | None) -> int:
    """The first offset a subscription can be served from without a gap: the lake's first when
    the lake reaches the broker's low watermark, else the low watermark."""
    if span is not None and span.end >= low:
        return min(span.first, low)
    return low


def _sources(low: int, latest: int, span: LakeSpan | None) -> str:
    broker = f"the broker holds {low}..{latest}"
    if span is None:
        return f"{broker}; the lake holds none of it"
    if span.end < low:
        return f"{broker}; the lake holds {span.first}..{span.end - 1}, which does not reach {low}"
    return f"{broker}, the lake {span.first}..{span.end - 1}"
