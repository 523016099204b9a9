"""Fixtures of the gateway tests, defined in flow_support.py (test modules do not import each other)."""

from __future__ import annotations

from tests.connectors.gateway.flow_support import broker, receiver  # noqa: F401 - fixtures, found here by pytest
