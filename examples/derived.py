"""The derived products a spec may declare (`derived: [name, ...]`), by name.

A derived product is code of this code location that computes a product from another one's
lake and warehouse (partner_engagement counts the clicks of `clicks`). The source spec declares
it; orchestration/definitions.py asks `derived_definitions` for what the specs declare, so no
product is wired by its name in the composition root, and a name this code location does not
build fails when the definitions load, naming the product and the names it knows.
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from connectors.errors import TerminalError
from connectors.spec import DataProductSpec
from examples.engagement import PRODUCT as ENGAGEMENT
from examples.engagement_assets import build_engagement_definitions

# name → the builder of its definitions from the declaring (source) product's spec
DERIVED: dict[str, Callable[[DataProductSpec], dg.Definitions]] = {
    ENGAGEMENT: build_engagement_definitions,
}


class UnknownDerivedProductError(TerminalError, ValueError):
    """A spec declares a derived product this code location does not build."""


def derived_definitions(specs: list[DataProductSpec]) -> list[dg.Definitions]:
    """The definitions of every derived product the specs declare (each once)."""
    built: dict[str, str] = {}
    out: list[dg.Definitions] = []
    for spec in specs:
        for name in spec.derived:
            if name not in DERIVED:
                raise UnknownDerivedProductError(
                    f"data product {spec.name!r} declares derived: {name!r}, which this code location does not "
                    f"build (known: {', '.join(sorted(DERIVED))})")
            if name in built:
                raise UnknownDerivedProductError(
                    f"derived product {name!r} is declared by both {built[name]!r} and {spec.name!r}")
            built[name] = spec.name
            out.append(DERIVED[name](spec))
    return out
