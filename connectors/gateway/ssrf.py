"""Where a sink may point: checked before any connection is opened (server-side request forgery).

A sink must be `https://` unless settings allow `http://`; its host is resolved and refused
unless *every* address it resolves to is global — private (10/8, 172.16/12, 192.168/16, fc00::/7),
loopback, link-local (169.254/16, where the cloud metadata service 169.254.169.254 lives),
shared, reserved and multicast addresses are refused. `FLOWSUITE_FLOW_ALLOW_SINKS` lists networks
allowed anyway (tests and the demo allow 127.0.0.1/32). The check runs at subscription time and
again before each connection; redirects are never followed. A host that is an IP literal is
checked without any lookup; a name is resolved by the system resolver (which, for `localhost`,
reads /etc/hosts and sends no packet).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from connectors.errors import TerminalError
from connectors.gateway.settings import GatewaySettings

METADATA_ADDRESS = ipaddress.ip_address("169.254.169.254")


class SinkRefused(TerminalError, ValueError):
    """The sink is not an address flowsuite will send to; the message says why."""


def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SinkRefused(f"sink host {host!r} does not resolve ({exc})") from None
    return sorted({ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}, key=str)


def check_sink(url: str, settings: GatewaySettings) -> list[str]:
    """The addresses `url` resolves to, all allowed; raises SinkRefused otherwise."""
    if not isinstance(url, str) or len(url) > 2048:
        raise SinkRefused("sink must be a URL of at most 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SinkRefused(f"sink is not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise SinkRefused(f"sink scheme {parts.scheme!r} is not supported: use https://")
    if parts.scheme == "http" and not settings.allow_http:
        raise SinkRefused("sink must be https:// (plain http is allowed only by FLOWSUITE_FLOW_ALLOW_HTTP)")
    if parts.username or parts.password:
        raise SinkRefused("sink must not carry credentials in the URL")
    host = parts.hostname
    if not host:
        raise SinkRefused("sink has no host")
    addresses = _addresses(host, port or (443 if parts.scheme == "https" else 80))
    if not addresses:
        raise SinkRefused(f"sink host {host!r} does not resolve")
    for addr in addresses:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if any(addr in net for net in settings.allow_sinks):
            continue
        if addr == METADATA_ADDRESS:
            raise SinkRefused(f"sink host {host!r} is the cloud metadata address {addr}")
        if not addr.is_global or addr.is_multicast:
            kind = (
                "loopback" if addr.is_loopback else "link-local" if addr.is_link_local
                else "private" if addr.is_private else "not a global address"
            )
            raise SinkRefused(f"sink host {host!r} resolves to {addr} ({kind}); only global addresses are allowed")
    return [str(a) for a in addresses]
