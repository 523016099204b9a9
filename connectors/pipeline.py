"""Running a generator ahead of its consumer in a background thread, with bounded memory.

Landing is a pipeline of stages that mostly release the GIL — librdkafka fetching, pyarrow
parsing JSON, pyarrow writing Parquet — so giving each stage its own thread lets them overlap
on separate cores instead of taking turns. `run_ahead` is the one joint between two stages:
the producer's items arrive in order, at most `depth` of them wait at any time, an exception
in the producer is raised in the consumer's thread, and when the consumer stops early the
producer is told to stop and its generator is closed in its own thread (its `finally`
clauses, such as closing a Kafka consumer, run there).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_S = 0.1


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def run_ahead(produce: Callable[[], Iterator[T]], depth: int, name: str) -> Iterator[T]:
    """Iterate `produce()` in a daemon thread named `name`, up to `depth` items ahead."""
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        items = produce()
        try:
            for item in items:
                if not hand(item):
                    return
            hand(_DONE)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            hand(_Raised(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)
