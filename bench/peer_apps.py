"""The peers' own pipelines, as a user would write them from each tool's docs.

Runs inside .venv-peers (`make peers-env`: quixstreams and dlt with their own pins), started as a
subprocess by bench/peers.py, which owns the topic, the clock and the counting. This file imports
nothing from flowsuite (the peers' venv does not have it).

    .venv-peers/bin/python bench/peer_apps.py APP --bootstrap HOST:PORT --topic T --ends 0:N0,1:N1
        --status FILE [--out DIR] [--dsn postgresql://…] [--table T] [--work DIR]

APP is one of:
- quix-parquet:  quixstreams Application → StreamingDataFrame → LocalFileSink(format="parquet")
  to a local folder (quixstreams 3.28's local FileSink; its ParquetFormat default, snappy);
- dlt-parquet:   a dlt resource consuming with confluent-kafka (offsets kept in the resource's
  state, as dlt's Kafka verified source does) → `filesystem` destination, loader_file_format="parquet";
- quix-postgres: quixstreams' PostgreSQLSink with upsert_on_primary_key=True, primary_key_columns=["event_id"];
- dlt-postgres:  the same dlt resource → `postgres` destination, write_disposition="merge",
  primary_key="event_id".

Settings are each tool's defaults except what the brief names: auto_offset_reset="earliest"
(quixstreams' default is "latest", which would read nothing of a topic produced beforehand).

Stopping: the app stops by itself once it has read up to `--ends` (the end offset of every
partition, which the harness knows from its produce report; Tansu's ListOffsets answer is unreliable
for batched produce, see docs/DESIGN). Timing, written as JSON to `--status`:
- first_at: wall-clock time (time.time()) the first record reached the app's code — so
  quixstreams' consumer-group join (about 20 s on the embedded Tansu broker) is NOT counted;
- done_at: when the tool returned after its final flush/commit (quixstreams: Application.run()
  returned after its closing checkpoint; dlt: pipeline.run() returned with the load done);
- seen: records the app's code saw (progress is rewritten every ~10k records, for the crash row).
"""

from __future__ import annotations

import argparse
import json
import os
import time


class Status:
    def __init__(self, path: str):
        self.path = path
        self.first_at: float | None = None
        self.seen = 0
        self._last_write = 0

    def saw(self, n: int = 1) -> None:
        if self.first_at is None:
            self.first_at = time.time()
        self.seen += n
        if self.seen - self._last_write >= 10_000:
            self._last_write = self.seen
            self.write()

    def write(self, **extra) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"first_at": self.first_at, "seen": self.seen, "pid": os.getpid(), **extra}, f)
        os.replace(tmp, self.path)


def parse_ends(text: str) -> dict[int, int]:
    return {int(p): int(n) for p, n in (part.split(":") for part in text.split(","))}


# --- quixstreams -------------------------------------------------------------------------------


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
    finally:
        c.close()


def quix_app(args, status: Status, sink) -> None:
    from quixstreams import Application

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
    )
    topic = app.topic(args.topic, value_deserializer="json")
    sdf = app.dataframe(topic)
    ends = parse_ends(args.ends)
    # After a restart a partition may already be committed to its end: it yields nothing more.
    reached = committed_offsets(args.bootstrap, args.group, args.topic, list(ends))
    if all(reached.get(p, 0) >= end for p, end in ends.items()):
        return

    def track(value, key, timestamp, headers):
        # Count the record and stop once every partition has been read to its end offset.
        from quixstreams import message_context

        ctx = message_context()
        status.saw()
        reached[ctx.partition] = ctx.offset + 1
        if all(reached.get(p, 0) >= end for p, end in ends.items() if end > 0):
            app.stop()

    sdf = sdf.update(track, metadata=True)
    sdf.sink(sink)
    app.run()


def quix_parquet(args, status: Status) -> None:
    from quixstreams.sinks.community.file.local import LocalFileSink

    # Its directory may hold only [a-zA-Z0-9 ._] (no "/" or "-"): write to the working directory.
    os.makedirs(args.out, exist_ok=True)
    os.chdir(args.out)
    quix_app(args, status, LocalFileSink(format="parquet"))


def quix_postgres(args, status: Status) -> None:
    from urllib.parse import urlparse

    from quixstreams.sinks.community.postgresql import PostgreSQLSink

    u = urlparse(args.dsn)
    sink = PostgreSQLSink(
        host=u.hostname,
        port=u.port or 5432,
        dbname=u.path.lstrip("/"),
        user=u.username,
        password=u.password or "",
        table_name=args.table,
        schema_auto_update=True,
        upsert_on_primary_key=True,
        primary_key_columns=["event_id"],
    )
    quix_app(args, status, sink)


# --- dlt ---------------------------------------------------------------------------------------


def kafka_resource(args, status: Status, **hints):
    """A dlt resource reading the topic with confluent-kafka: assign() at the offsets kept in the
    resource's state (committed with the load, as dlt's Kafka verified source keeps them), pages
    of up to 10,000 parsed records, until every partition reaches its end offset."""
    import dlt
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    try:
        import orjson

        loads = orjson.loads
    except ImportError:  # pragma: no cover - orjson is in the peers' lock
        loads = json.loads
    ends = parse_ends(args.ends)

    @dlt.resource(name=args.table, **hints)
    def kafka_messages():
        state = dlt.current.resource_state().setdefault("offsets", {})
        consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                             "enable.auto.commit": False, "enable.partition.eof": True})
        try:
            todo = {p: end for p, end in ends.items() if int(state.get(str(p), 0)) < end}
            consumer.assign([TopicPartition(args.topic, p, int(state.get(str(p), 0))) for p in todo])
            while todo:
                page = []
                for msg in consumer.consume(num_messages=10_000, timeout=1.0):
                    if msg.error():
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            raise RuntimeError(str(msg.error()))
                        continue
                    page.append(loads(msg.value()))
                    state[str(msg.partition())] = msg.offset() + 1
                    if msg.offset() + 1 >= todo.get(msg.partition(), float("inf")):
                        todo.pop(msg.partition(), None)
                if page:
                    status.saw(len(page))
                    yield page
        finally:
            consumer.close()

    return kafka_messages


def dlt_parquet(args, status: Status) -> None:
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name=args.pipeline,
        pipelines_dir=args.work,
        destination=dlt.destinations.filesystem(args.out),
        dataset_name="clicks",
    )
    pipeline.run(kafka_resource(args, status), loader_file_format="parquet")


def dlt_postgres(args, status: Status) -> None:
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name=args.pipeline,
        pipelines_dir=args.work,
        destination=dlt.destinations.postgres(args.dsn),
        dataset_name=args.dataset,
    )
    pipeline.run(kafka_resource(args, status, write_disposition="merge", primary_key="event_id"))


APPS = {"quix-parquet": quix_parquet, "dlt-parquet": dlt_parquet,
        "quix-postgres": quix_postgres, "dlt-postgres": dlt_postgres}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("app", choices=sorted(APPS))
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--ends", required=True, help="partition:end_offset,… to read up to")
    ap.add_argument("--status", required=True)
    ap.add_argument("--group", default="peer-bench")
    ap.add_argument("--out", help="output folder (Parquet apps)")
    ap.add_argument("--work", help="dlt's pipelines_dir")
    ap.add_argument("--pipeline", default="peer_bench")
    ap.add_argument("--dsn", help="postgresql://user@host:port/db (PostgreSQL apps)")
    ap.add_argument("--table", default="clicks")
    ap.add_argument("--dataset", default="peer_bench")
    args = ap.parse_args()
    status = Status(args.status)
    status.write()
    APPS[args.app](args, status)
    status.write(done_at=time.time())


if __name__ == "__main__":
    main()
