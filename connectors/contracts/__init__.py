"""Data contracts of the products in open standards: ODCS v3 (odcs.py)."""

from connectors.contracts.odcs import ContractError, contract, spec_from_contract, validate

__all__ = ["ContractError", "contract", "spec_from_contract", "validate"]
