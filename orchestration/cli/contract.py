"""`flowsuite contract ...`: a product's data contract in the Open Data Contract Standard v3.

    flowsuite contract export P [-o FILE] [--format yaml|json]   the product's ODCS contract
    flowsuite contract import FILE [-o SPEC.yaml]                 the spec an ODCS contract describes

The contract's servers come from the settings (FLOWSUITE_KAFKA_BOOTSTRAP, FLOWSUITE_LAKE_URL,
FLOWSUITE_WAREHOUSE_URL, the Iceberg catalog), never their credentials (connectors/contracts/odcs.py).
Registered in orchestration/cli/root.py (`cli.add_command(contract.group)`).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from connectors.settings import Settings
from orchestration.cli.common import CliError, pass_settings, product_spec


@click.group(name="contract", help="data contracts in the Open Data Contract Standard (ODCS) v3")
def group() -> None:
    pass


def _dump(doc: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@group.command(name="export", help="write product P's ODCS v3.1.0 contract (stdout, or -o FILE)")
@click.argument("product")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="file to write")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default=None,
              help="default: json for a .json output file, else yaml")
@pass_settings
def export(settings: Settings, product: str, output: Path | None, fmt: str | None) -> None:
    from connectors.contracts.odcs import contract
    from connectors.gateway.api import contract_settings

    spec = product_spec(settings, product, expectations=False)
    fmt = fmt or ("json" if output is not None and output.suffix == ".json" else "yaml")
    text = _dump(contract(spec, **contract_settings(settings)), fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output} (ODCS v3.1.0 contract of {product})", err=True)


@group.command(name="import", help="print (or -o write) the spec YAML an ODCS v3 contract describes")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="spec file to write")
def import_(file: Path, output: Path | None) -> None:
    from pydantic import ValidationError

    from connectors.contracts.odcs import ContractError, spec_from_contract
    from connectors.spec import DataProductSpec, problems_from_validation

    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CliError(f"{file}: not YAML or JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CliError(f"{file}: expected an ODCS contract (a mapping), got {type(doc).__name__}")
    try:
        data = spec_from_contract(doc)
        DataProductSpec.model_validate(data)
    except ContractError as exc:
        raise CliError(f"{file}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(str(p) for p in problems_from_validation(file, exc, data))
        raise CliError(f"the spec {file} describes is not valid: {problems}") from None
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output} (spec of {data['name']})", err=True)
