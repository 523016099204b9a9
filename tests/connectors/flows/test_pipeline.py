"""run_ahead: the joint between landing's stages (fetch → decode → write)."""

from __future__ import annotations

import threading
import time
import weakref

import pytest

from connectors.kafka import run_ahead
from tests.support import wait_for


def test_items_arrive_in_order_from_another_thread():
    threads = set()

    def produce():
        for i in range(1000):
            threads.add(threading.current_thread().name)
            yield i

    assert list(run_ahead(produce, 3, "stage-test")) == list(range(1000))
    assert threads == {"stage-test"}


def test_the_producer_runs_at_most_depth_items_ahead():
    produced = []

    def produce():
        for i in range(100):
            produced.append(i)
            yield i

    items = run_ahead(produce, 2, "stage-depth")
    assert next(items) == 0
    # One handed over, `depth` waiting, one held by the producer while the queue is full.
    wait_for(lambda: len(produced) == 1 + 2 + 1, 5, what="the producer filling the queue")
    time.sleep(0.3)  # an absence cannot be polled: give the producer time to run further, if it would
    assert len(produced) == 1 + 2 + 1
    items.close()


def test_an_exception_in_the_producer_is_raised_in_the_consumer_after_its_items():
    def produce():
        yield 1
        yield 2
        raise ValueError("broken batch at offset 7")

    got = []
    with pytest.raises(ValueError, match="offset 7"):
        for item in run_ahead(produce, 4, "stage-error"):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_closes_the_producer_in_its_own_thread():
    closed_in = []
    done = threading.Event()

    def produce():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed_in.append(threading.current_thread().name)
            done.set()

    items = run_ahead(produce, 2, "stage-close")
    assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    items.close()
    assert done.wait(5)
    assert closed_in == ["stage-close"]


def test_an_error_in_the_consumer_stops_the_producer():
    done = threading.Event()

    def produce():
        try:
            yield from range(10**9)
        finally:
            done.set()

    with pytest.raises(RuntimeError):
        for item in run_ahead(produce, 2, "stage-stop"):
            if item == 3:
                raise RuntimeError("writer failed")
    assert done.wait(5)


def test_a_producer_that_fails_before_its_first_item_is_an_error_not_a_hang():
    def produce():
        raise ConnectionError("broker unreachable")

    with pytest.raises(ConnectionError, match="unreachable"):
        list(run_ahead(produce, 2, "stage-call"))


def _chain(inner_closed: threading.Event, middle_fails_at: int | None = None):
    """fetch-like stage on a quiet source (waits, checking its stop) → decode-like stage."""
    inner_stop, outer_stop = threading.Event(), threading.Event()

    def quiet_source():
        try:
            yield 0
            yield 1
            inner_stop.wait()  # a topic with nothing more: wait until told to stop
        finally:
            inner_closed.set()

    def middle():
        inner = run_ahead(quiet_source, 2, "stage-inner", stop=inner_stop, cancelled=outer_stop)
        try:
            for item in inner:
                if item == middle_fails_at:
                    raise ValueError(f"cannot decode item {item}")
                yield item * 10
        finally:
            inner.close()

    return run_ahead(middle, 2, "stage-middle", stop=outer_stop)


def test_stopping_the_last_stage_stops_a_chain_waiting_on_a_quiet_source_promptly():
    inner_closed = threading.Event()
    chain = _chain(inner_closed)
    assert [next(chain), next(chain)] == [0, 10]
    started = time.monotonic()
    chain.close()  # the writer stops early while the middle stage waits for the source
    assert inner_closed.wait(5)
    assert time.monotonic() - started < 3
    assert not [t for t in threading.enumerate() if t.name.startswith("stage-") and t.is_alive()]


def test_an_error_in_a_middle_stage_is_the_error_the_caller_sees():
    inner_closed = threading.Event()
    with pytest.raises(ValueError, match="cannot decode item 1"):
        list(_chain(inner_closed, middle_fails_at=1))
    assert inner_closed.wait(5)


def test_relaxed_gc_restores_the_collector_after_the_last_concurrent_user():
    import gc

    from connectors.kafka import relaxed_gc
    from connectors.kafka.stages import GC_YOUNG_THRESHOLD

    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with relaxed_gc():
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        frozen = gc.get_freeze_count()
        assert frozen > 0  # what existed before the run is not scanned during it
        with relaxed_gc():  # a second run in the same process (another thread)
            assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD  # the first run is still going
        # A cycle made during the run is still collected.
        class Node:
            pass

        node = Node()
        node.self = node
        gone = weakref.ref(node)
        del node
        gc.collect()
        assert gone() is None
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_relaxed_gc_restores_the_collector_when_the_run_fails():
    import gc

    from connectors.kafka import relaxed_gc

    before = gc.get_threshold()
    with pytest.raises(RuntimeError, match="boom"):
        with relaxed_gc():
            raise RuntimeError("boom")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
