"""Running a generator ahead of its consumer in a background thread, with bounded memory.

Landing is a pipeline of stages that mostly release the GIL — librdkafka fetching, pyarrow
parsing JSON, pyarrow writing Parquet — so giving each stage its own thread lets them overlap
on separate cores instead of taking turns. `run_ahead` is the one joint between two stages:
the producer's items arrive in order, at most `depth` of them wait at any time, an exception
in the producer is raised in the consumer's thread, and when the consumer stops early the
producer is told to stop and its generator is closed in its own thread (its `finally`
clauses, such as closing a Kafka consumer, run there).

A stage whose consumer is itself a later stage's producer (the decoder reading batches from
the fetcher) is given that later stage's stop event as `cancelled`: once the last consumer
stops early, the waiting producer-consumer in between hears it at its next poll, instead of
waiting for an item that nobody will take. Each stage's own `stop` is set only by its own
consumer, so an error in one stage is always the error the caller sees.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

_DONE = object()
_POLL_S = 0.1
JOIN_TIMEOUT_S = 30.0


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


class StageDiedError(RuntimeError):
    """A stage's thread ended without handing over its end or its error."""


class StageCancelledError(RuntimeError):
    """The stage after this one stopped early: nobody wants this stage's items any more."""


def run_ahead(
    produce: Callable[[], Iterator[T]],
    depth: int,
    name: str,
    *,
    stop: threading.Event | None = None,
    cancelled: threading.Event | None = None,
) -> Iterator[T]:
    """Iterate `produce()` in a daemon thread named `name`, up to `depth` items ahead.

    `stop`: set when this stage's consumer stops (give one to let `produce` check it while it
    waits for input); `cancelled`: the next stage's stop event, see the module's doc."""
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = stop if stop is not None else threading.Event()

    def hand(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        items = None
        try:
            items = produce()
            for item in items:
                if not hand(item):
                    return
            hand(_DONE)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            hand(_Raised(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - the consumer has stopped listening
                    log.warning("stage %s failed while closing after an early stop", name, exc_info=True)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = handoff.get(timeout=_POLL_S)
            except queue.Empty:
                if cancelled is not None and cancelled.is_set():
                    raise StageCancelledError(f"stage {name}: the next stage stopped") from None
                if not thread.is_alive() and handoff.empty():
                    raise StageDiedError(f"stage {name} ended without handing over its end") from None
                continue
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=JOIN_TIMEOUT_S)
        if thread.is_alive():
            log.warning("stage %s still running %.0f s after its consumer stopped", name, JOIN_TIMEOUT_S)
