"""Derived products are declared by the spec they derive from (`derived:`), never wired by name."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from connectors.spec import DataProductSpec, parse_spec_file
from examples.derived import UnknownDerivedProductError, derived_definitions
from examples.engagement_assets import ENGAGEMENT_HOURLY, ENGAGEMENT_WAREHOUSE

REPO = Path(__file__).resolve().parents[2]


def _keys(defs) -> set:
    return {k for d in defs for a in d.assets for k in a.keys}


def test_the_declaring_spec_gets_its_derived_product_and_others_none():
    clicks = parse_spec_file(REPO / "dataproducts" / "clicks.yaml")
    assert clicks.derived == ["partner_engagement"]
    assert {ENGAGEMENT_HOURLY, ENGAGEMENT_WAREHOUSE} <= _keys(derived_definitions([clicks]))
    # the same product under another name, without the declaration: nothing is derived
    plain = clicks.model_copy(update={"name": "clicks_copy", "derived": []})
    assert derived_definitions([plain]) == []


def test_an_undeclared_name_fails_naming_the_product_and_the_known_ones():
    clicks = parse_spec_file(REPO / "dataproducts" / "clicks.yaml")
    with pytest.raises(UnknownDerivedProductError, match=r"'clicks' declares derived: 'nope'.*known: partner_engagement"):
        derived_definitions([clicks.model_copy(update={"derived": ["nope"]})])
    twice = clicks.model_copy(update={"name": "clicks_two"})
    with pytest.raises(UnknownDerivedProductError, match="declared by both 'clicks' and 'clicks_two'"):
        derived_definitions([clicks, twice])


def test_a_derived_name_is_an_identifier():
    data = parse_spec_file(REPO / "dataproducts" / "clicks.yaml").model_dump(mode="json")
    with pytest.raises(pydantic.ValidationError, match="derived product name 'Bad-Name'"):
        DataProductSpec.model_validate({**data, "derived": ["Bad-Name"]})
