"""Run every benchmark and write the report: bench/results.md (a table) and bench/results.png.

    python -m bench.run_all            # quick mode: smaller inputs, still 3 interleaved rounds, 2 min of freshness
    python -m bench.run_all --full     # each script's own defaults (the figures the docs quote)
    python -m bench.run_all --report   # only rebuild results.md/.png from bench/results/*.json

Each script runs in its own process and writes bench/results/<name>.json; a script that fails
is reported (its last lines) and the others still run. The report normalizes every result file
to rows of what, figure, ceiling, ratio, goal and machine, and appends the latest reliability
table (bench/results/reliability.json, written by `make reliability`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.stats import judged, parse_goal

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "bench" / "results"
REPORT = ROOT / "bench" / "results.md"
CHART = ROOT / "bench" / "results.png"

# name, script args in quick mode, args in full mode
BENCHES = [
    ("landing", ["-m", "bench.landing", "--events", "300000", "--rounds", "3"], ["-m", "bench.landing"]),
    (
        "landing --partitions 2",
        ["-m", "bench.landing", "--partitions", "2", "--s3", "--events", "300000", "--rounds", "3"],
        ["-m", "bench.landing", "--partitions", "2", "--s3"],
    ),
    (
        "landing --partitions 12 --scale",
        ["-m", "bench.landing", "--partitions", "12", "--scale", "--events", "300000", "--rounds", "3"],
        ["-m", "bench.landing", "--partitions", "12", "--scale"],
    ),
    (
        "upsert",
        [
            "-m", "bench.upsert",
            "--rows",
            "300000",
            "--baseline-rows",
            "30000",
            "--per-row-rows",
            "0",
            "--rounds",
            "3",
        ],
        ["-m", "bench.upsert"],
    ),
    ("compaction", ["-m", "bench.compaction", "--repeat", "3"], ["-m", "bench.compaction"]),
    ("formats", ["-m", "bench.formats", "--events", "100000", "--repeat", "1"], ["-m", "bench.formats"]),
    ("quality", ["-m", "bench.quality", "--rounds", "3"], ["-m", "bench.quality"]),
    ("iceberg", ["-m", "bench.iceberg", "--hours", "12", "--repeat", "1"], ["-m", "bench.iceberg"]),
    ("sensor", ["-m", "bench.sensor", "--rounds", "3"], ["-m", "bench.sensor"]),
    ("flow", ["-m", "bench.flow", "--seconds", "8", "--events", "20000", "--binary-events", "3000"], ["-m", "bench.flow"]),
    ("inbound", ["-m", "bench.inbound", "--rounds", "1"], ["-m", "bench.inbound"]),
    ("pull", ["-m", "bench.pull", "--events", "5000"], ["-m", "bench.pull", "--rounds", "3"]),
    ("cdc", ["-m", "bench.cdc", "--rows", "200000", "--seconds", "10"], ["-m", "bench.cdc"]),
    ("peers", ["-m", "bench.peers", "--events", "300000", "--rounds", "3"], ["-m", "bench.peers", "--rounds", "3"]),
    (
        "freshness",
        ["-m", "bench.freshness", "--duration", "120", "--intervals", "30,5"],
        ["-m", "bench.freshness"],
    ),
]


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def run(full: bool, only: set[str] | None) -> list[tuple[str, float, int, str]]:
    outcomes = []
    for name, quick_args, full_args in BENCHES:
        if only and name not in only:
            continue
        args = full_args if full else quick_args
        print(f"== {name}: {' '.join(args)}", flush=True)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=3600
        )
        took = time.monotonic() - started
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-12:])
        print(
            tail if done.returncode else "\n".join(done.stdout.strip().splitlines()[-8:]),
            flush=True,
        )
        print(f"-- {name}: exit {done.returncode} in {took:.0f} s\n", flush=True)
        outcomes.append((name, took, done.returncode, tail))
    return outcomes


# --- the report ----------------------------------------------------------------------------


def _load(name: str):
    path = RESULTS / name
    if not path.exists():
        return None
    text = path.read_text().strip()
    if path.suffix == ".jsonl":  # JSON Lines: upsert.jsonl appends one object per figure each run
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def _row(bench, what, figure, ceiling, goal, unit, mach, ratio=None, src: dict | None = None) -> dict:
    """A report row; `src` (a bench's own row) may carry ratio_min/ratio_max/rounds/met."""
    if ratio is None and figure is not None and ceiling:
        ratio = figure / ceiling
    src = src or {}
    rounds = src.get("rounds") if isinstance(src.get("rounds"), list) else None
    met = src.get("met")
    if met is None and goal is not None and ratio is not None:
        g = parse_goal(goal)
        met = None if g is None else judged(figure if g[2] else ratio, goal)
    return {
        "bench": bench,
        "what": what,
        "figure": figure,
        "ceiling": ceiling,
        "ratio": ratio,
        "ratio_min": src.get("ratio_min", min(rounds) if rounds else ratio),
        "ratio_max": src.get("ratio_max", max(rounds) if rounds else ratio),
        "n_rounds": len(rounds) if rounds else 1,
        "goal": goal,
        "met": met,
        "met_every": src.get("met_every", met),
        "unit": unit,
        "machine": mach or machine(),
    }


def collect() -> list[dict]:
    rows: list[dict] = []
    for name in ("landing.json", "landing-p2.json", "landing-p12.json", "formats.json", "sensor.json",
                 "freshness.json", "flow.json", "inbound.json", "cdc.json", "peers.json"):
        data = _load(name)
        if not data:
            continue
        for r in data.get("rows", []):
            goal = r.get("goal")
            goal = f">= {goal}" if isinstance(goal, int | float) else goal
            rows.append(
                _row(
                    name.removesuffix(".json"),
                    r["what"],
                    r["figure"],
                    r["ceiling"],
                    goal,
                    r.get("unit", ""),
                    data.get("machine"),
                    r.get("ratio"),
                    r,
                )
            )
    data = _load("upsert.jsonl")
    if data:
        lines = data if isinstance(data, list) else [data]
        latest = max(line.get("at", "") for line in lines)
        for r in (line for line in lines if line.get("at", "") == latest):
            rows.append(
                _row(
                    "upsert",
                    r["what"],
                    r["figure"],
                    r["ceiling"],
                    r["goal"] if isinstance(r["goal"], str) or r["goal"] is None else f">= {r['goal']}",
                    "rows/s",
                    r.get("machine"),
                    r.get("ratio"),
                    r,
                )
            )
    data = _load("compaction.json")
    if data:
        for r in data.get("results", []):
            rows.append(
                _row(
                    "compaction",
                    r["what"],
                    r["figure"],
                    r["ceiling"],
                    r.get("goal"),
                    "",
                    data.get("machine"),
                    r.get("ratio"),
                    r,
                )
            )
    data = _load("iceberg.json")
    if data:
        for r in data.get("rows_table", []):
            rows.append(_row("iceberg", r["what"], r["figure"], r["ceiling"], r["goal"], "", data.get("machine"), r.get("ratio")))
    data = _load("quality.json")
    if data:
        if "row" in data:  # rounds
            r = data["row"]
            rows.append(_row("quality", r["what"], r["figure"], r["ceiling"], r["goal"], "records/s",
                             data.get("machine"), r["ratio"], r))
        else:
            plain = next(r for r in data["runs"] if r["mode"] == "plain")
            suite = next(r for r in data["runs"] if r["mode"] == "suite")
            rows.append(
                _row(
                    "quality",
                    "landing with the GX suite on vs off (records/s)",
                    suite["records_per_s"],
                    plain["records_per_s"],
                    f">= {data.get('goal')}",
                    "records/s",
                    data.get("machine"),
                    data.get("ratio"),
                )
            )
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def _met(r: dict) -> str:
    if r.get("met") is None:
        return "-"
    if not r["met"]:
        return "NO"
    return "yes" if r.get("met_every", True) else "met*"


def print_summary(rows: list[dict]) -> None:
    """Every ratio with its spread and whether its goal is met, on the terminal."""
    print(f"{'bench':<11} {'what':<58} {'ratio min/med/max':>22} {'goal':>12}  met")
    for r in rows:
        spread = f"{_fmt(r['ratio_min'])} / {_fmt(r['ratio'])} / {_fmt(r['ratio_max'])}"
        print(f"{r['bench'][:11]:<11} {r['what'][:58]:<58} {spread:>22} {str(r['goal'] or '-'):>12}  {_met(r)}")


def reliability_table() -> list[str]:
    data = _load("reliability.json")
    if not data:
        return [
            "No reliability run recorded yet: `make reliability` writes bench/results/reliability.json."
        ]
    lines = [
        f"Strength `{data['strength']}`, {data['at']}, {data['machine']}, exit status {data['exitstatus']}.",
        "",
        "| scenario | iterations | records | lost | duplicated | recovered | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['scenario']} | {r['iterations']} | {r['records']:,} | {r['lost']} | {r['duplicated']} | "
            f"{r['recovered']} | {r['note']} |"
        )
    return lines


def peers_crash_table() -> list[str]:
    """The peers' crash row: each tool SIGKILLed once at half the input, restarted, run to the end."""
    data = _load("peers.json")
    if not data or not data.get("crash"):
        return ["No crash row recorded yet: `python -m bench.peers --sections crash` writes it."]
    lines = [
        f"{data['events']:,} clicks, {data['partitions']} partitions; each tool SIGKILLed once when it had seen "
        f"half of them, restarted and run to the end; its output counted against the produced keys "
        f"({data['machine']}).",
        "",
        "| tool | killed after seen | rows | distinct | lost | duplicated | unreadable files |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in data["crash"]:
        lines.append(f"| {c['tool']} | {c['killed_after_seen']:,} | {c['rows']:,} | {c['distinct']:,} | "
                     f"{c['lost']:,} | {c['duplicated']:,} | {c.get('unreadable_files', 0)} |")
    return lines


def fanout_table() -> list[str]:
    """The flow gateway's fan-out rows (bench/results/flow_fanout.json, `python -m bench.flow
    --only fanout`): CPU per event delivered against the first count's, p99, RSS, each row with
    the load average it was measured under and the commit it measured."""
    path = RESULTS / "flow_fanout.json"
    if not path.exists():
        return []
    rows = json.loads(path.read_text())
    if not rows:
        return []
    base = rows[0]["cpu_us_per_event"]
    out = ["", "## Flow fan-out: partner subscriptions on one gateway process", "",
           "Each subscription a partner organisation filtered to its own partner id, every event for exactly one "
           "(`python -m bench.flow --only fanout`). Goals at 1,000: every event delivered, p99 <= 1 s, peak RSS "
           "<= 1 GiB, CPU per event flat (ratio against the first row). The load average is the 1-minute one at the row's end (2 shared cores; the gateway's own runnable threads count in it); docs/flow.md has the runs before and after.", "",
           "| subscriptions | events | µs CPU per event | ratio | p50 | p99 | peak RSS | idle CPU s/s | load average | commit | at |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        out.append(
            f"| {r['subscribers']:,} | {r['events']:,} | {r['cpu_us_per_event']:,.0f} | {r['cpu_us_per_event'] / base:.2f} | "
            f"{r['p50'] * 1000:,.0f} ms | {r['p99'] * 1000:,.0f} ms | {r['rss'] / 2**20:,.0f} MiB | "
            f"{r['idle_cpu_per_s']:.2f} | {r.get('load_average', '-')} | {r.get('commit') or '-'} | {r.get('at') or '-'} |")
    return out


def write_report(rows: list[dict], outcomes: list | None = None, full: bool = False) -> None:
    lines = [
        "# flowsuite benchmarks",
        "",
        f"Generated by `make bench` (`bench/run_all.py{' --full' if full else ''}`) on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Each figure is measured side by side with its "
        "ceiling in the same run on the same broker, so the **ratio** is what to compare across machines "
        "(absolute figures drift on shared machines). Throughput ratios: higher is better; time ratios "
        "(sensor, freshness): lower is better. Chart: [results.png](results.png).",
        "",
        "Figure and ceiling are medians over the rounds; ratio is the median of the per-round ratios, "
        "with min and max beside it (interleaved rounds: figure and ceiling back to back, order alternated). "
        "`met` judges the median; `met*` means the median met the goal but not every round did.",
        "",
        "| bench | what | figure | ceiling | ratio | min | max | rounds | goal | met | machine |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        unit = f" {r['unit']}" if r["unit"] else ""
        lines.append(
            f"| {r['bench']} | {r['what']} | {_fmt(r['figure'])}{unit} | {_fmt(r['ceiling'])}{unit} | "
            f"{_fmt(r['ratio'])} | {_fmt(r['ratio_min'])} | {_fmt(r['ratio_max'])} | {r['n_rounds']} | "
            f"{r['goal'] or '-'} | {_met(r)} | {r['machine']} |"
        )
    if outcomes:
        lines += [
            "",
            "Runs: "
            + "; ".join(
                f"{n} {t:.0f} s" + ("" if c == 0 else f" (FAILED, exit {c})")
                for n, t, c, _ in outcomes
            )
            + ".",
        ]
        for n, _, c, tail in outcomes:
            if c:
                lines += ["", f"`{n}` failed:", "", "```", tail, "```"]
    lines += fanout_table()
    lines += ["", "## Peers: crash row", "", *peers_crash_table()]
    lines += ["", "## Reliability", "", *reliability_table(), ""]
    REPORT.write_text("\n".join(lines))
    chart(rows)
    print(f"wrote {REPORT.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")


def chart(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = [r for r in rows if r["ratio"] is not None]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(plotted) + 1.5))
    labels = [f"{r['bench']}: {r['what']}"[:80] for r in plotted]
    timed = [r["unit"] == "s" for r in plotted]
    colors = ["#d98c3a" if t else "#3a7dd9" for t in timed]
    ax.barh(range(len(plotted)), [r["ratio"] for r in plotted], color=colors)
    for i, r in enumerate(plotted):
        goal = r["goal"]
        if isinstance(goal, str) and goal.startswith(">= "):
            try:
                ax.plot([float(goal[3:])] * 2, [i - 0.4, i + 0.4], color="black", lw=2)
            except ValueError:
                pass
        ax.text(r["ratio"], i, f" {r['ratio']:.2f}", va="center", fontsize=8)
    ax.set_yticks(range(len(plotted)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(
        "ratio to the ceiling (log): blue = throughput (higher is better, black tick = goal), "
        "orange = time (lower is better)",
        fontsize=8,
    )
    ax.set_title(f"flowsuite benchmarks — {machine()}", fontsize=10)
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--full", action="store_true", help="each script's own (larger) defaults")
    ap.add_argument(
        "--report", action="store_true", help="only rebuild the report from bench/results/*.json"
    )
    ap.add_argument("--only", action="append", help="run only these benches (by name; repeatable)")
    args = ap.parse_args()
    outcomes = None if args.report else run(args.full, set(args.only) if args.only else None)
    rows = collect()
    print_summary(rows)
    write_report(rows, outcomes, args.full)
    return 1 if outcomes and any(c for _, _, c, _ in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
