"""Which webhook URLs Squeeze may call: http(s) to public addresses only, checked when a job is submitted
and again by the worker right before each delivery (the name may resolve elsewhere by then).

A URL passes when every address its host resolves to is public: loopback, private, link-local,
multicast, reserved, unspecified and shared addresses are refused, also when embedded in IPv6
(IPv4-mapped, 6to4, Teredo, NAT64). The caller connects to the address returned here, never re-resolving.
"""

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import WebhookRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
AddressPolicy = Callable[[IPAddress], bool]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Target:
    """A checked webhook destination: where to connect (a pinned IP) and what to ask for."""

    scheme: str
    host: str
    port: int
    ip: str
    path: str


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host:port."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_public(ip: IPAddress) -> bool:
    """True for a globally routable unicast address, including any IPv4 address an IPv6 one embeds."""
    if (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return False
    return all(is_public(v4) for v4 in _embedded_ipv4(ip)) if isinstance(ip, ipaddress.IPv6Address) else True


def check_url(url: str, resolver: Resolver = system_resolver, allow: AddressPolicy = is_public) -> Target:
    """The destination to connect to for `url`; WebhookRefused (422) if it is not allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WebhookRefused(f"webhook.url must be http:// or https://, not {parts.scheme!r}")
    if parts.username or parts.password:
        raise WebhookRefused("webhook.url must not carry user:password; the payload is signed instead")
    host = parts.hostname
    if not host:
        raise WebhookRefused("webhook.url has no host name")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookRefused(f"webhook.url has an invalid port: {exc}") from exc
    try:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    except (OSError, UnicodeError, ValueError) as exc:
        raise WebhookRefused(f"webhook.url host {host!r} does not resolve ({exc}); give a public name") from exc
    if not addresses:
        raise WebhookRefused(f"webhook.url host {host!r} does not resolve; give a public name")
    refused = [str(a) for a in addresses if not allow(a)]
    if refused:
        raise WebhookRefused(
            f"webhook.url host {host!r} resolves to {', '.join(refused)}, which is not a "
            "public address (loopback, private, link-local, multicast and reserved ranges "
            "are refused)"
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, str(addresses[0]), path)
