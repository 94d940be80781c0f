"""Which addresses a webhook may call: public unicast ones only (SSRF protection).

A customer's admin chooses webhook URLs and our worker calls them from inside our network, so
a URL naming (or resolving to) a loopback, private, link-local (cloud metadata at
169.254.169.254), CGNAT, multicast, reserved or otherwise non-global address is refused,
including IPv6 forms that embed such an IPv4 address (``::ffff:10.0.0.5``, 6to4, NAT64).
The admin API checks when a URL is saved; the worker checks every address a name resolves to
at each delivery and connects to one of those same addresses (``services.worker.webhooks``),
so DNS cannot answer differently between the check and the connection.
"""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

IPAddress = IPv4Address | IPv6Address

_CGNAT = IPv4Network("100.64.0.0/10")
_RFC1918 = (IPv4Network("10.0.0.0/8"), IPv4Network("172.16.0.0/12"), IPv4Network("192.168.0.0/16"))
_ULA = IPv6Network("fc00::/7")
_NAT64 = IPv6Network("64:ff9b::/96")


class BlockedTarget(Exception):
    """A webhook target that is (or resolves to) an address webhooks may not call; the
    message says which and why: "10.0.0.5 is a private address", "hooks.example.com
    resolves to 10.0.0.5, a private address"."""

    def __init__(self, host: str, address: IPAddress, kind: str) -> None:
        shown = host if _is_literal(host, address) else str(address)
        inner = _embedded_ipv4(address) if isinstance(address, IPv6Address) else None
        if inner is not None and str(inner) not in shown:
            shown += f" ({inner})"
        what = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
        if _is_literal(host, address):
            super().__init__(f"{shown} is {what}")
        else:
            super().__init__(f"{host} resolves to {shown}, {what}")
        self.address = address


def _is_literal(host: str, address: IPAddress) -> bool:
    try:
        return ip_address(host) == address
    except ValueError:
        return False


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, well-known NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_kind(ip: IPAddress) -> str | None:
    """What kind of non-public address ``ip`` is ("loopback", "private", ...), or None when
    it is a public unicast address a webhook may call."""
    if isinstance(ip, IPv6Address) and (inner := _embedded_ipv4(ip)) is not None:
        return blocked_kind(inner)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, IPv4Address) and ip in _CGNAT:
        return "shared (CGNAT)"
    if any(ip in net for net in _RFC1918) or (isinstance(ip, IPv6Address) and ip in _ULA):
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


def check_addresses(host: str, addresses: list[IPAddress]) -> None:
    """Raise :class:`BlockedTarget` naming the first of ``host``'s ``addresses`` that
    webhooks may not call (one is enough: a name must not reach inside through any of its
    addresses)."""
    for ip in addresses:
        kind = blocked_kind(ip)
        if kind is not None:
            raise BlockedTarget(host, ip, kind)


def is_localhost_name(host: str) -> bool:
    """``localhost`` and names under it, which always mean this machine (RFC 6761)."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to for a TCP connection, in the resolver's order of
    preference, without duplicates (numeric forms such as ``127.1`` resolve without DNS).
    Raises ``OSError`` when it does not resolve; callers bound the time it may take."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ip_address(sockaddr[0])
        if ip not in found:
            found.append(ip)
    return found
