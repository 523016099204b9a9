"""Fixtures of the gateway tests, defined in tests/support/gateway.py (test modules do not import each other)."""

from __future__ import annotations

from tests.support.gateway import broker, receiver  # noqa: F401 - fixtures, found here by pytest
