"""Opening a fresh SQLite metastore from many threads and processes at once.

Entering WAL needs an exclusive lock and SQLite refuses it at once ("database is locked"),
without its busy handler, while another connection is mid-transaction: concurrent sensor
ticks on a new FLOWSUITE_HOME hit exactly that. Every opener must succeed and see the schema.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import inspect

from connectors.metastore import Metastore
from tests.support import START_SIGNAL, start_together

REPO = Path(__file__).resolve().parents[3]
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


def _open_in_processes(url: str) -> list[list[str]]:
    """OPENERS real processes open `url` at once (each is released when all have imported);
    each prints the tables it sees. A process that hangs is killed and fails the test."""
    code = (
        "import json, sys; from connectors.metastore import Metastore; from sqlalchemy import inspect; "
        f"{START_SIGNAL}; "
        "store = Metastore(sys.argv[1]); print(json.dumps(sorted(inspect(store.engine).get_table_names())))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(OPENERS)
    ]
    seen = []
    try:
        start_together(procs)
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-2000:]
            seen.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return seen


def test_processes_opening_a_fresh_metastore_together_all_succeed(tmp_path):
    for round_ in range(3):
        path = tmp_path / f"meta{round_}.db"
        seen = _open_in_processes(f"sqlite:///{path}")
        assert all(names == seen[0] for names in seen)
        assert _journal_mode(path) == "wal"


def test_processes_opening_a_fresh_postgresql_metastore_together_all_succeed(pg_fresh_url):
    # CREATE TABLE races on PostgreSQL end in a unique violation of pg_type, not a wait.
    seen = _open_in_processes(pg_fresh_url)
    assert all(names == seen[0] for names in seen)
    assert "fs_files" in seen[0]


def test_threads_opening_a_fresh_postgresql_metastore_together_all_succeed(pg_fresh_url):
    with ThreadPoolExecutor(OPENERS) as pool:
        seen = list(pool.map(_open, [pg_fresh_url] * OPENERS))
    assert all(names == seen[0] for names in seen)


def test_a_metastore_from_before_a_column_existed_gets_it_when_opened(tmp_path):
    path = tmp_path / "old.db"
    Metastore(f"sqlite:///{path}").engine.dispose()
    with sqlite3.connect(path) as conn:  # the shape of a metastore written by an older flowsuite
        conn.execute("ALTER TABLE fs_offsets DROP COLUMN topic")
        conn.execute("INSERT INTO fs_offsets (product, partition, next_offset, at_eof, run_id, updated_at) "
                     "VALUES ('clicks', 0, 42, 0, 'old-run', 0)")
    with ThreadPoolExecutor(OPENERS) as pool:
        list(pool.map(_open, [f"sqlite:///{path}"] * OPENERS))
    store = Metastore(f"sqlite:///{path}")
    (state,) = store.committed_offsets("clicks").values()
    assert state.next_offset == 42 and state.topic is None
