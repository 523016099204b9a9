"""The flow gateway: other organisations subscribe to a data product and receive its events as
signed CloudEvents over HTTP (docs/flow.md). Dagster-free, like all of connectors/."""

from connectors.gateway.filters import FilterError, matches, validate_filters
from connectors.gateway.gateway import Gateway
from connectors.gateway.service import FlowError, FlowService
from connectors.gateway.settings import GatewaySettings, load_gateway_settings
from connectors.gateway.ssrf import SinkRefused, check_sink
from connectors.gateway.store import GatewayStore, Subscription

__all__ = [
    "FilterError", "FlowError", "FlowService", "Gateway", "GatewaySettings", "GatewayStore",
    "SinkRefused", "Subscription", "check_sink", "load_gateway_settings", "matches", "validate_filters",
]
