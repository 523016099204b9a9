"""`flowsuite validate`: check every data-product spec and source connector spec."""

from __future__ import annotations

from pathlib import Path

import click

from connectors.settings import Settings
from orchestration.cli.common import exit_with, pass_settings


@click.command("validate", help="check every data-product spec; print each problem, exit 1 if any")
@click.option("--dir", "products_dir", type=click.Path(path_type=Path), default=None,
              help="specs folder (default: FLOWSUITE_PRODUCTS_DIR)")
@pass_settings
def command(settings: Settings, products_dir: Path | None) -> None:
    from connectors.sources import load_sources
    from connectors.spec import SpecError
    from quality.expectations import load_checked_specs

    products_dir = products_dir or settings.products_dir
    try:
        specs = load_checked_specs(products_dir)  # expectation types and kwargs are part of a valid spec
    except SpecError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        click.echo(f"{len(exc.problems)} problem(s) in {products_dir}", err=True)
        return exit_with(1)
    if not specs:
        click.echo(f"no data-product specs (*.yaml) in {products_dir}", err=True)
        return exit_with(1)
    for spec in specs:
        click.echo(f"OK {spec.name}: topic {spec.topic}, {len(spec.fields)} fields, owner {spec.owner}")
    try:
        sources = load_sources(products_dir, specs)
    except SpecError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        click.echo(f"{len(exc.problems)} problem(s) in {products_dir / 'sources'}", err=True)
        return exit_with(1)
    for source in sources:
        click.echo(f"OK source {source.name}: table {source.table} ({source.mode}) → product {source.product}")
        if source.mode == "cdc":  # against the product and, when it answers, the server
            from connectors.sources.cdc.checks import source_warnings

            for warning in source_warnings(source, next(s for s in specs if s.name == source.product)):
                click.echo(f"WARN source {source.name}: {warning}")
