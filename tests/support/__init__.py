"""What the tests share: waiting for a state, and independent readers of what was written.

`wait_for` polls a condition instead of sleeping a fixed time. The readers never use the
landing engine's own code paths: the lake is read as any batch job would
(pyarrow datasets over the hive layout, skipping hidden files), the topic with a plain consumer.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.dataset as ds
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
             what: str = "the condition", detail: Callable[[], str] | None = None) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail after `timeout`
    seconds naming `what` (and the last value seen), never a silent fixed sleep.

    `detail`, read only when it times out, adds what explains the wait (a log's tail, say).
    A condition that sees the wait can no longer succeed (the process it waits on exited)
    raises its own AssertionError instead of returning falsy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:g} s waiting for {what} (last: {value!r})"
            raise AssertionError(message + (f"\n{detail()}" if detail is not None else ""))
        time.sleep(interval)  # the one sleep of a poll: between two looks at the state


def wait_while_running(proc: subprocess.Popen, condition: Callable[[], T], timeout: float, what: str,
                       log: Path | None = None, interval: float = 0.5) -> T:
    """`wait_for` a state a child process brings about (it listens, it logged a line): fail at once
    if the process exits first, and show the tail of its `log` either way."""
    def tail() -> str:
        return log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""

    def ready() -> T:
        if proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}:\n{tail()}")
        return condition()

    return wait_for(ready, timeout, interval, what, detail=tail)


def read_hive(root: Path, columns: list[str] | None = None) -> pa.Table:
    """Every visible Parquet file under a product's folder, as a batch reader sees it."""
    if not root.exists():
        return pa.table({})
    dataset = ds.dataset(str(root), format="parquet", partitioning="hive")
    return dataset.to_table(columns=columns)


def positions(table: pa.Table) -> Counter:
    """Multiset of (partition, offset) in a lake table."""
    if table.num_rows == 0:
        return Counter()
    return Counter(zip(table.column("_partition").to_pylist(), table.column("_offset").to_pylist(), strict=True))


def read_messages(bootstrap: str, topic: str, partitions: int | None = None,
                  timeout: float = 30.0, start: int = OFFSET_BEGINNING) -> list[Message]:
    """Every record of the topic from its beginning (or offset `start` of each partition) to its
    end, read with assign() until each partition says EOF, as confluent-kafka messages (key,
    value, headers, partition, offset), in the order read. `partitions`: the first n partitions
    (default: all the topic has). Fails after `timeout` seconds naming the topic and the
    partitions that never reached their end."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "tests-reader", "enable.auto.commit": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest",
    })
    messages: list[Message] = []
    try:
        if partitions is None:
            metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
            if metadata.error is not None:
                raise AssertionError(f"cannot read topic {topic}: {metadata.error}")
            wanted = sorted(metadata.partitions)
        else:
            wanted = list(range(partitions))
        consumer.assign([TopicPartition(topic, p, start) for p in wanted])
        at_end: set[int] = set()

        def read_to_end() -> bool:
            for msg in consumer.consume(num_messages=10_000, timeout=0.2):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                        continue
                    raise AssertionError(f"reading {topic}[{msg.partition()}]: {msg.error().str()}")
                messages.append(msg)
            return at_end >= set(wanted)

        wait_for(read_to_end, timeout, interval=0, what=f"the end of every partition of {topic}",
                 detail=lambda: f"partitions {sorted(set(wanted) - at_end)} never reached their end "
                                f"({len(messages)} records read)")
    finally:
        consumer.close()
    return messages


def read_topic(bootstrap: str, topic: str, partitions: int | None = None,
               timeout: float = 30.0) -> dict[tuple[int, int], tuple[bytes | None, bytes | None]]:
    """(partition, offset) → (key, value) for every record of the topic (`read_messages`)."""
    return {(m.partition(), m.offset()): (m.key(), m.value())
            for m in read_messages(bootstrap, topic, partitions, timeout)}


START_SIGNAL = 'print("ready", flush=True); sys.stdin.readline()'
"""A child's line (it needs `import sys`) that says its imports are done and waits for `start_together`."""


def start_together(procs: list[subprocess.Popen]) -> None:
    """Release children that run START_SIGNAL at the same moment, once each has said it is ready:
    a race between processes starts on a signal, not at a guessed wall-clock instant. The
    children need stdin and stdout pipes (text mode)."""
    for proc in procs:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            raise AssertionError(f"child {proc.pid} never got ready (said {line!r}):\n{proc.stderr.read()[-2000:]}")
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()


def wait_for_dead_claims(metastore, product: str, timeout: float = 30.0) -> None:
    """Until no claim of `product` is live (each released, or past its lease by the metastore's
    clock), so the next run takes over instead of skipping. After a clean exit it returns at once;
    after a kill it waits out the lease, which is the rule, not a guess."""
    def dead() -> bool:
        now = metastore.clock()
        return all(c["lease_until"] <= now for c in metastore.claims_of(product))

    wait_for(dead, timeout, interval=0.1, what=f"the claims of {product} to be released or run out",
             detail=lambda: f"claims: {metastore.claims_of(product)}")


@contextlib.contextmanager
def holding_write_lock(engine, statement: str) -> Iterator[None]:
    """While inside: another connection holds SQLite's write lock, in a transaction (BEGIN
    IMMEDIATE, the metastore's every write) that ran `statement` and waits to be let go — so a
    read inside can show it does not queue for that lock."""
    import threading

    from sqlalchemy import text

    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with engine.begin() as conn:
            conn.execute(text(statement))
            holding.set()
            release.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert holding.wait(10), "the writer did not take the write lock within 10 s"
        yield
    finally:
        release.set()
        t.join(30)
