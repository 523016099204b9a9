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

import contextlib
import gc
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from connectors.errors import TerminalError

T = TypeVar("T")

log = logging.getLogger(__name__)

_DONE = object()
_POLL_S = 0.1
JOIN_TIMEOUT_S = 30.0


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


class StageDiedError(TerminalError, RuntimeError):
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
                except Exception:  # the consumer has stopped listening
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


# --- the cyclic garbage collector during a pipeline run -----------------------------------

GC_YOUNG_THRESHOLD = 50_000  # container allocations between two young collections (Python's default: 700)
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def relaxed_gc() -> Iterator[None]:
    """Run a pipeline with the cyclic garbage collector out of the hot loop.

    Every Kafka message is a GC-tracked object, and a run allocates tens of thousands per
    batch, so with Python's defaults the collector runs every 700 allocations and, every few
    of those, walks every object of the process — a Dagster step process holds ~190k. Measured
    on 300k clicks landed in a process that imported Dagster: 0.87-1.0 s with the defaults,
    0.59-0.64 s inside this block. Inside it the objects that existed before are frozen (moved
    to the permanent generation, not scanned) and young collections run every 50,000
    allocations instead of 700; reference counting still frees everything that is not in a
    cycle, and cycles made during the run are still collected, just less often. Restored when
    the last concurrent user leaves."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                gc.unfreeze()
                _gc_saved = None
