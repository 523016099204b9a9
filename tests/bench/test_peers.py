"""The peers harness (bench/peers.py) runs end to end in quick mode: quixstreams and dlt from
`.venv-peers` (make peers-env) and flowsuite's landing over one topic on the embedded broker, every
output counted. Figures are not judged here (bench/ measures them); the counts are."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.peers import PEERS_PYTHON, ROOT, count
from tests.support.services import unavailable


def test_count_names_lost_duplicated_and_unexpected():
    c = count(["a", "b", "b", "z"], {"a", "b", "c"})
    assert c == {"rows": 4, "distinct": 3, "lost": 1, "duplicated": 1, "unexpected": 1}


@pytest.mark.timeout(600)
def test_quick_parquet_row_counts_every_tools_output(tmp_path):
    if not PEERS_PYTHON.exists():
        unavailable(f"{PEERS_PYTHON} missing: `make peers-env` builds it")
    out = tmp_path / "peers.json"
    done = subprocess.run([sys.executable, "-m", "bench.peers", "--quick", "--events", "3000",
                           "--sections", "parquet", "--results", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["events"] == 3000
    whats = [r["what"] for r in data["rows"]]
    assert any("quixstreams" in w for w in whats) and any("dlt" in w for w in whats), whats
    for r in data["rows"]:
        assert r["figure"] > 0 and r["ceiling"] > 0 and r["goal"] == ">= 3"
        for side in ("flowsuite_counts", "peer_counts"):
            assert r[side]["rows"] == 3000, (r["what"], side, r[side])
            assert r[side]["lost"] == 0 and r[side]["duplicated"] == 0, (r["what"], side, r[side])
