"""`flowsuite demo` (what `make demo` runs): broker, demo clicks, landing, summary."""

from __future__ import annotations

import time

import click

from connectors.settings import Settings
from orchestration.cli.common import interactive, pass_settings


@click.command("demo", help="start the broker, produce demo clicks, land them, print a summary (what `make demo` runs)")
@click.option("--events", type=click.IntRange(min=1), default=200_000, show_default=True, help="click events to produce")
@click.option("--hours", type=click.IntRange(min=1), default=6, show_default=True, help="spread over the last H hours")
@click.option("--invalid-rate", type=click.FloatRange(0.0, 1.0), default=0.01, show_default=True,
              help="fraction of invalid events")
@click.option("--seed", type=int, default=None, help="random seed (default: a fresh one each run)")
@pass_settings
def command(settings: Settings, events: int, hours: int, invalid_rate: float, seed: int | None) -> None:
    from orchestration.demo import render_demo, run_demo

    started = time.monotonic()  # an IngestError or ProduceError: the root group's one line
    if interactive():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), transient=True) as bar:
            task = bar.add_task("produce", total=events)
            demo = run_demo(
                settings, events, hours, invalid_rate, seed,
                say=bar.console.print, progress=lambda n, total: bar.update(task, completed=n),
            )
    else:
        demo = run_demo(settings, events, hours, invalid_rate, seed)
    for line in render_demo(demo):
        click.echo(line)
    click.echo(f"\ndemo done in {time.monotonic() - started:.1f}s")
