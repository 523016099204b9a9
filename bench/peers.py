"""flowsuite side by side with the tools a data engineer would pick instead: quixstreams and dlt.

    python -m bench.peers [--events 300000] [--partitions 2] [--rounds 3]
                          [--sections parquet,postgres,crash] [--quick] [--results FILE]

The peers run as subprocesses in their own venv (`.venv-peers`, `make peers-env`; their code is
bench/peer_apps.py, written from each tool's docs with its defaults); flowsuite runs here, in the
main venv. Every tool reads the same topic on the same embedded Tansu broker, produced once.

- parquet: Kafka → Parquet. flowsuite's landing (`connectors.flows.land`: decode, validate,
  Parquet per hour, commit to the metastore) vs quixstreams' FileSink (format="parquet", local
  folder) and a dlt pipeline (confluent-kafka resource → filesystem destination,
  loader_file_format="parquet"). Records/s = records / (last written − first received): for the
  peers the clock starts when the first record reaches their code, so quixstreams' consumer-group
  join (about 20 s on Tansu; subscribe() is its only mode) does not count against it. flowsuite's
  clock is the whole land() call (consumer start included), which only counts against flowsuite.
- postgres: Kafka → PostgreSQL upsert. flowsuite = landing + warehouse sync (`connectors.warehouse.sync`:
  MERGE / COPY, offsets in the same transaction), timed together, vs quixstreams' PostgreSQLSink
  (upsert_on_primary_key=True) and dlt's postgres destination (write_disposition="merge",
  primary_key="event_id"). insert-heavy: every key new; update-heavy: every tool first takes
  the topic once (untimed), then the same keys are produced again and the timed run brings every
  key a second time.
- crash: Kafka → Parquet again, each tool SIGKILLed once when it has seen half the input,
  restarted, run to the end; its output's rows counted against the produced keys.

Every output is counted: rows, distinct event_ids, lost (produced keys missing), duplicated
(rows − distinct). Rounds rotate the tools' order. Ratio rows (flowsuite / peer, goal ≥ 3) and the
crash table go to bench/results/peers.json, which bench/run_all.py puts into results.md/.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pyarrow.parquet as pq

from bench.stats import print_rows, ratio_row

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PEERS_PYTHON = Path(os.environ.get("FLOWSUITE_PEERS_PYTHON", ROOT / ".venv-peers" / "bin" / "python"))
PEER_APPS = ROOT / "bench" / "peer_apps.py"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
PEER_TIMEOUT_S = 900


# --- counting ----------------------------------------------------------------------------------


def count(event_ids: list, expected: set[str]) -> dict:
    distinct = set(event_ids)
    return {"rows": len(event_ids), "distinct": len(distinct), "lost": len(expected - distinct),
            "duplicated": len(event_ids) - len(distinct), "unexpected": len(distinct - expected)}


def parquet_ids(files: list[Path]) -> tuple[list, int]:
    """event_ids of every readable Parquet file, and how many files could not be read (a file
    cut short by a SIGKILL)."""
    ids, broken = [], 0
    for f in files:
        try:
            ids += pq.read_table(f, columns=["event_id"]).column("event_id").to_pylist()
        except Exception:  # noqa: BLE001 - a torn file is counted, not fatal
            broken += 1
    return ids, broken


def peer_output_ids(app: str, out: Path) -> tuple[list, int]:
    files = sorted(out.rglob("*.parquet"))
    if app == "dlt-parquet":  # the data table's files, not dlt's _dlt_loads/_dlt_version/state tables
        files = [f for f in files if not any(part.startswith("_dlt") for part in f.relative_to(out).parts)]
    return parquet_ids(files)


def pg_ids(dsn: str, table: str) -> list:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(f"SELECT event_id FROM {table}")]


# --- the peers (subprocesses in .venv-peers) ---------------------------------------------------


class PeerRun:
    def __init__(self, app: str, bootstrap: str, topic: str, ends: dict[int, int], work: Path, **opts):
        self.app, self.work = app, work
        self.status = work / f"status-{uuid.uuid4().hex[:6]}.json"
        cmd = [str(PEERS_PYTHON), str(PEER_APPS), app, "--bootstrap", bootstrap, "--topic", topic,
               "--ends", ",".join(f"{p}:{n}" for p, n in sorted(ends.items())), "--status", str(self.status),
               "--work", str(work / "dlt")]
        for k, v in opts.items():
            cmd += [f"--{k}", str(v)]
        self.log = open(work / f"{app}.log", "ab")  # closed in wait()/kill()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=work)

    def state(self) -> dict:
        try:
            return json.loads(self.status.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def wait(self) -> dict:
        try:
            rc = self.proc.wait(timeout=PEER_TIMEOUT_S)
        finally:
            self.log.close()
        st = self.state()
        if rc != 0 or "done_at" not in st:
            tail = (self.work / f"{self.app}.log").read_text(errors="replace").strip().splitlines()[-40:]
            raise SystemExit(f"{self.app} exited {rc}:\n" + "\n".join(tail))
        return st

    def kill_at(self, seen: int) -> int:
        """SIGKILL once the app has seen `seen` records; returns what it had seen."""
        deadline = time.monotonic() + PEER_TIMEOUT_S
        while self.state().get("seen", 0) < seen:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.app} ended (exit {self.proc.returncode}) before it saw {seen} records")
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.app} did not reach {seen} records in {PEER_TIMEOUT_S} s")
            time.sleep(0.02)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()
        return self.state().get("seen", 0)


def peer_time(st: dict) -> float:
    return st["done_at"] - st["first_at"]


# --- flowsuite ---------------------------------------------------------------------------------


def flowsuite_spec(topic: str, table: str = "clicks"):
    from connectors.spec import parse_spec_file

    spec = parse_spec_file(ROOT / "dataproducts" / "clicks.yaml")
    db = spec.sinks.database.model_copy(update={"table": table})
    sinks = spec.sinks.model_copy(update={"database": db})
    return spec.model_copy(update={"topic": topic, "name": table, "sinks": sinks})


def flowsuite_land(spec, bootstrap: str, home: Path) -> float:
    from connectors.flows import land
    from connectors.lake import Lake
    from connectors.metastore import Metastore

    metastore = Metastore(f"sqlite:///{home / 'metastore.db'}")
    started = time.perf_counter()
    land(spec, lake=Lake(str(home / "lake")), metastore=metastore, bootstrap=bootstrap, max_records=10**9)
    return time.perf_counter() - started


def flowsuite_lake_ids(spec, home: Path) -> list:
    from connectors.lake import Lake
    from connectors.metastore import Metastore

    metastore = Metastore(f"sqlite:///{home / 'metastore.db'}")
    files = metastore.live_files(spec.name)
    if not files:
        return []
    return Lake(str(home / "lake")).read_tables([f.path for f in files], columns=["event_id"]).column("event_id").to_pylist()


def flowsuite_sync(spec, home: Path, url: str) -> float:
    from connectors.lake import Lake
    from connectors.metastore import Metastore
    from connectors.warehouse import sync

    metastore = Metastore(f"sqlite:///{home / 'metastore.db'}")
    started = time.perf_counter()
    sync(spec, lake=Lake(str(home / "lake")), metastore=metastore, url=url)
    return time.perf_counter() - started


def _flowsuite_child(spec_json: str, bootstrap: str, home: str, status: str, run_id: str, dead: str) -> None:
    """The crash row's flowsuite: landing in a child process that reports what it has seen.
    `dead` names the killed run (comma-separated): the restart takes its claims over at once, as
    under Dagster, whose run status says the run failed (is_dead), instead of waiting out the lease."""
    from connectors.flows import land
    from connectors.lake import Lake
    from connectors.metastore import Metastore
    from connectors.spec import DataProductSpec

    spec = DataProductSpec.model_validate_json(spec_json)

    def progress(n: int) -> None:
        Path(status + ".tmp").write_text(json.dumps({"seen": n}))
        os.replace(status + ".tmp", status)

    dead_runs = set(filter(None, dead.split(",")))
    land(spec, lake=Lake(str(Path(home) / "lake")), metastore=Metastore(f"sqlite:///{Path(home) / 'metastore.db'}"),
         bootstrap=bootstrap, max_records=10**9, progress=progress, run_id=run_id,
         is_dead=lambda r: r in dead_runs)


class FlowsuiteRun(PeerRun):
    def __init__(self, spec, bootstrap: str, home: Path, dead: tuple[str, ...] = ()):
        self.app, self.work = "flowsuite", home
        self.run_id = f"bench-{uuid.uuid4().hex[:8]}"
        self.status = home / f"status-{uuid.uuid4().hex[:6]}.json"
        code = ("import sys; from bench.peers import _flowsuite_child as c; "
                "c(sys.stdin.read(), *sys.argv[1:])")
        self.log = open(home / "flowsuite.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", code, bootstrap, str(home), str(self.status),
                                      self.run_id, ",".join(dead)],
                                     stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.proc.stdin.write(spec.model_dump_json().encode())
        self.proc.stdin.close()

    def wait(self) -> dict:
        rc = self.proc.wait(timeout=PEER_TIMEOUT_S)
        self.log.close()
        if rc != 0:
            raise SystemExit(f"flowsuite landing exited {rc}: see {self.work / 'flowsuite.log'}")
        return self.state()


# --- the sections ------------------------------------------------------------------------------


def produce_clicks(bootstrap: str, topic: str, n: int, partitions: int):
    from examples.demo_data import generate_clicks, produce

    report = produce(bootstrap, topic, generate_clicks(n, 6, 0.0, seed=7), partitions=partitions)
    if report.produced != n:
        raise SystemExit(f"produced {report.produced} of {n} records into {topic}")
    return report


def expected_ids(n: int) -> set[str]:
    from examples.demo_data import generate_clicks

    return {k.decode() for k, _, _ in generate_clicks(n, 6, 0.0, seed=7)}


def rotate(items: list, i: int) -> list:
    return items[i % len(items):] + items[: i % len(items)]


def parquet_section(bootstrap: str, topic: str, ends: dict, n: int, expected: set, rounds: int, work: Path):
    times: dict[str, list[float]] = {"flowsuite": [], "quix-parquet": [], "dlt-parquet": []}
    counts: dict[str, dict] = {}
    spec = flowsuite_spec(topic)
    for i in range(rounds):
        for tool in rotate(list(times), i):
            d = Path(tempfile.mkdtemp(prefix=f"peers-{tool}-", dir=work))
            if tool == "flowsuite":
                took = flowsuite_land(spec, bootstrap, d)
                ids, broken = flowsuite_lake_ids(spec, d), 0
            else:
                st = PeerRun(tool, bootstrap, topic, ends, d, out=d / "out", group=f"g-{uuid.uuid4().hex[:8]}").wait()
                took = peer_time(st)
                ids, broken = peer_output_ids(tool, d / "out")
            times[tool].append(took)
            counts[tool] = {**count(ids, expected), "unreadable_files": broken}
            print(f"  parquet round {i + 1} {tool}: {n / took:,.0f} records/s, {counts[tool]}", flush=True)
            shutil.rmtree(d, ignore_errors=True)
    rows = []
    for peer, label in (("quix-parquet", "quixstreams FileSink(parquet)"), ("dlt-parquet", "dlt filesystem parquet")):
        rows.append(ratio_row(f"Kafka→Parquet: flowsuite landing vs {label}", [n / t for t in times["flowsuite"]],
                              [n / t for t in times[peer]], ">= 3", "records/s",
                              flowsuite_counts=counts["flowsuite"], peer_counts=counts[peer]))
    return rows


def pg_database() -> tuple[str, str, str]:
    db = f"bench_peers_{os.getpid()}"
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{db}"')
        admin.execute(f'CREATE DATABASE "{db}"')
    # A password although the server trusts 127.0.0.1: dlt's credentials require one.
    dsn = f"postgresql://{PG['user']}:bench@{PG['host']}:{PG['port']}/{db}"
    return db, dsn, f"postgresql+psycopg://{PG['user']}@{PG['host']}:{PG['port']}/{db}"


def drop_database(db: str) -> None:
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


class PgTool:
    """One tool's state across the two passes of a scenario (update-heavy resumes where the
    untimed first pass stopped: quixstreams from its group's offsets, dlt from its state,
    flowsuite from its metastore and the sink's offsets)."""

    def __init__(self, tool: str, topic: str, dsn: str, url: str, work: Path):
        self.tool, self.topic, self.dsn, self.url = tool, topic, dsn, url
        self.name = f"{tool.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
        self.home = Path(tempfile.mkdtemp(prefix=f"peers-{tool}-", dir=work))
        self.spec = flowsuite_spec(topic, self.name)

    def run(self, bootstrap: str, ends: dict) -> float:
        if self.tool == "flowsuite":
            return flowsuite_land(self.spec, bootstrap, self.home) + flowsuite_sync(self.spec, self.home, self.url)
        opts = {"dsn": self.dsn, "group": self.name, "pipeline": self.name, "table": self.name, "dataset": self.name}
        return peer_time(PeerRun(self.tool, bootstrap, self.topic, ends, self.home, **opts).wait())

    def table(self) -> str:
        return f"{self.name}.{self.name}" if self.tool == "dlt-postgres" else f'"{self.name}"'


def postgres_section(bootstrap: str, n: int, partitions: int, expected: set, rounds: int, work: Path):
    tools = ["flowsuite", "quix-postgres", "dlt-postgres"]
    rows = []
    db, dsn, url = pg_database()
    try:
        for scenario in ("insert-heavy", "update-heavy"):
            times: dict[str, list[float]] = {t: [] for t in tools}
            counts: dict[str, dict] = {}
            for i in range(rounds):
                topic = f"peers-pg-{scenario}-{os.getpid()}-{i}"
                first = produce_clicks(bootstrap, topic, n, partitions).per_partition
                state = {t: PgTool(t, topic, dsn, url, work) for t in tools}
                ends = dict(first)
                if scenario == "update-heavy":
                    for t in rotate(tools, i):
                        state[t].run(bootstrap, ends)  # untimed: the table holds every key
                    again = produce_clicks(bootstrap, topic, n, partitions).per_partition
                    ends = {p: first.get(p, 0) + again.get(p, 0) for p in set(first) | set(again)}
                for t in rotate(tools, i):
                    took = state[t].run(bootstrap, ends)
                    times[t].append(took)
                    counts[t] = count(pg_ids(dsn, state[t].table()), expected)
                    print(f"  postgres {scenario} round {i + 1} {t}: {n / took:,.0f} rows/s, {counts[t]}", flush=True)
            for peer, label in (("quix-postgres", "quixstreams PostgreSQLSink upsert"),
                                ("dlt-postgres", "dlt postgres merge")):
                rows.append(ratio_row(f"Kafka→PostgreSQL {scenario}: flowsuite land+sync vs {label}",
                                      [n / t for t in times["flowsuite"]], [n / t for t in times[peer]], ">= 3",
                                      "rows/s", flowsuite_counts=counts["flowsuite"], peer_counts=counts[peer]))
    finally:
        drop_database(db)
    return rows


def crash_section(bootstrap: str, topic: str, ends: dict, n: int, expected: set, work: Path) -> list[dict]:
    out = []
    spec = flowsuite_spec(topic)
    for tool in ("flowsuite", "quix-parquet", "dlt-parquet"):
        d = Path(tempfile.mkdtemp(prefix=f"peers-crash-{tool}-", dir=work))
        group = f"g-{uuid.uuid4().hex[:8]}"

        def start(tool=tool, d=d, group=group, dead=()):
            if tool == "flowsuite":
                return FlowsuiteRun(spec, bootstrap, d, dead)
            return PeerRun(tool, bootstrap, topic, ends, d, out=d / "out", group=group)

        first = start()
        seen_at_kill = first.kill_at(n // 2)
        start(dead=(getattr(first, "run_id", ""),)).wait()
        if tool == "flowsuite":
            ids, broken = flowsuite_lake_ids(spec, d), 0
        else:
            ids, broken = peer_output_ids(tool, d / "out")
        c = {"tool": tool, "records": n, "killed_after_seen": seen_at_kill, **count(ids, expected),
             "unreadable_files": broken}
        print(f"  crash {tool}: {c}", flush=True)
        out.append(c)
        shutil.rmtree(d, ignore_errors=True)
    return out


def _machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sections", default="parquet,postgres,crash")
    ap.add_argument("--quick", action="store_true", help="20,000 events, 1 round (development, tests)")
    ap.add_argument("--results", type=Path, default=RESULTS / "peers.json")
    args = ap.parse_args()
    if args.quick:
        args.events, args.rounds = min(args.events, 20_000), 1
    sections = set(args.sections.split(","))
    if not PEERS_PYTHON.exists():
        raise SystemExit(f"{PEERS_PYTHON} not found: run `make peers-env` first")

    from orchestration.services.broker import running_broker

    n = args.events
    expected = expected_ids(n)
    rows, crash = [], []
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    try:
        with running_broker() as broker:
            bootstrap = broker.bootstrap
            topic = f"peers-clicks-{os.getpid()}"
            report = produce_clicks(bootstrap, topic, n, args.partitions)
            ends = dict(report.per_partition)
            print(f"produced {n:,} clicks into {topic} ({args.partitions} partitions: {ends})", flush=True)
            if "parquet" in sections:
                rows += parquet_section(bootstrap, topic, ends, n, expected, args.rounds, work)
            if "postgres" in sections:
                rows += postgres_section(bootstrap, n, args.partitions, expected, args.rounds, work)
            if "crash" in sections:
                crash = crash_section(bootstrap, topic, ends, n, expected, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print_rows(rows)
    if crash:
        print(f"\n{'crash (SIGKILL at half, restart)':<34} {'rows':>8} {'lost':>8} {'duplicated':>11}")
        for c in crash:
            print(f"{c['tool']:<34} {c['rows']:>8,} {c['lost']:>8,} {c['duplicated']:>11,}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"bench": "peers", "events": n, "partitions": args.partitions,
                                        "rounds": args.rounds, "machine": _machine(), "rows": rows,
                                        "crash": crash}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
