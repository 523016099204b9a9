"""decoded_batches (a stateless decoder decodes batches in several threads, results in read order) and split_by_hour."""

from __future__ import annotations

import threading
import time

import pytest

from connectors.flows import landing
from connectors.formats.base import Batch
from tests.support import wait_for


class _Reader:
    def __init__(self, n: int):
        self.n = n

    def batches(self, cancelled=None):
        for i in range(self.n):
            yield Batch(partition=0, values=[b"{}"], keys=[None], offsets=[i], timestamps=[0], headers=None)


class _Decoder:
    """Sleeps longer on even batches, so a second thread finishes odd ones first."""

    def __init__(self, stateless: bool):
        self.stateless = stateless
        self.active = 0
        self.most_at_once = 0
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def decode(self, batch: Batch):
        with self.lock:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
            self.threads.add(threading.current_thread().name)
        time.sleep(0.02 if batch.offsets[0] % 2 == 0 else 0.001)  # the decode's work: uneven on purpose
        with self.lock:
            self.active -= 1
        return batch.offsets[0]


@pytest.mark.skipif(landing.DECODE_THREADS < 2, reason="needs two cores to decode in two threads")
def test_a_stateless_decoder_decodes_two_batches_at_once_and_hands_them_on_in_read_order():
    decoder = _Decoder(stateless=True)
    got = [(b.offsets[0], d) for b, d in landing.decoded_batches(_Reader(20), decoder, "t")]
    assert got == [(i, i) for i in range(20)]
    assert decoder.most_at_once == 2


def test_a_decoder_with_state_decodes_in_one_thread():
    decoder = _Decoder(stateless=False)
    got = [d for _, d in landing.decoded_batches(_Reader(10), decoder, "t")]
    assert got == list(range(10))
    assert decoder.most_at_once == 1 and len(decoder.threads) == 1


def test_stopping_early_stops_the_decoding_threads():
    decoder = _Decoder(stateless=True)
    batches = landing.decoded_batches(_Reader(1000), decoder, "t")
    first = [next(batches)[1] for _ in range(3)]
    batches.close()
    assert first == [0, 1, 2]
    wait_for(lambda: decoder.active == 0, 5, what="the decoding threads to finish their batches")
    assert not [t for t in threading.enumerate() if t.name.startswith("t_") or t.name == "t"]


def test_split_by_hour_keeps_each_hours_rows_in_order_and_the_hours_ascending():
    import pyarrow as pa

    hours = pa.array([5, 3, 5, 4, 3, 5], pa.int64())
    table = pa.table({"_offset": pa.array(range(6), pa.int64())})
    got = [(h, rows.column("_offset").to_pylist()) for h, rows in landing.split_by_hour(table, hours)]
    assert got == [(3, [1, 4]), (4, [3]), (5, [0, 2, 5])]
    one = landing.split_by_hour(table, pa.chunked_array([[7] * 6]))
    assert [(h, rows.num_rows) for h, rows in one] == [(7, 6)]
