"""Opening a fresh SQLite metastore from many threads and processes at once.

Entering WAL needs an exclusive lock and SQLite refuses it at once ("database is locked"),
without its busy handler, while another connection is mid-transaction: concurrent sensor
ticks on a new FLOWSUITE_HOME hit exactly that. Every opener must succeed and see the schema.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import inspect

from connectors.metastore import Metastore

OPENERS = 6
ROUNDS = 30


def _open(url: str) -> list[str]:
    store = Metastore(url)
    names = sorted(inspect(store.engine).get_table_names())
    store.engine.dispose()
    return names


def _journal_mode(path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_threads_opening_a_fresh_metastore_together_all_succeed(tmp_path):
    for round_ in range(ROUNDS):
        path = tmp_path / f"meta{round_}.db"
        url = f"sqlite:///{path}"
        with ThreadPoolExecutor(OPENERS) as pool:
            seen = list(pool.map(_open, [url] * OPENERS))
        assert all(names == seen[0] for names in seen)
        assert "fs_files" in seen[0] and "fs_offsets" in seen[0]
        assert _journal_mode(path) == "wal"


def test_processes_opening_a_fresh_metastore_together_all_succeed(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(3):
        path = tmp_path / f"meta{round_}.db"
        url = f"sqlite:///{path}"
        with ctx.Pool(OPENERS) as pool:
            seen = pool.map(_open, [url] * OPENERS)
        assert all(names == seen[0] for names in seen)
        assert _journal_mode(path) == "wal"
