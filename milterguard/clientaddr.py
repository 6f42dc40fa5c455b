"""Client IP addresses as the MTA writes them, and "is it in these networks".

Postfix and libmilter hand over a client address in several notations:
``192.0.2.1``, ``2001:db8::1``, ``IPv6:2001:db8::1`` (the policy protocol,
address literals), ``[192.0.2.1]``, a zone id (``fe80::1%eth0``), or an
IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) when a dual-stack socket
accepted an IPv4 client. Every check that compares a client with a network
(allowlists, gate exceptions, greylisting, bans, DNSBL queries) must see
the mapped form as the IPv4 address it is, or an allowlisted IPv4 client
connecting over a dual-stack listener would be treated as a stranger.
This module is the one place that knows these notations.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def unmapped(ip: IPAddress) -> IPAddress:
    """``::ffff:192.0.2.1`` as ``192.0.2.1``; any other address unchanged."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_client_ip(text: str) -> IPAddress | None:
    """The client's IP from the MTA's notation; None if it is not an address.

    None stands for a local client (unix socket: empty), Postfix's
    ``unknown``, or garbage; callers decide what that means for them.
    """
    text = text.strip()
    if text[:1] == "[" and text[-1:] == "]":
        text = text[1:-1]
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return unmapped(ip)


def in_networks(ip: IPAddress | None, networks: Iterable[IPNetwork]) -> bool:
    """The address lies in one of the networks (an IPv4 one never in an IPv6 one)."""
    if ip is None:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def client_in_networks(addr: str, networks: Iterable[IPNetwork]) -> bool:
    """``in_networks`` for an address as the MTA wrote it."""
    return in_networks(parse_client_ip(addr), networks)


def network_of(ip: IPAddress, ipv4_prefix: int, ipv6_prefix: int) -> IPNetwork:
    """The network a client is grouped by (greylisting, bans): one host
    usually owns a whole IPv6 /64, and sender pools retry from siblings."""
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return ipaddress.ip_network(f"{ip}/{prefix}", strict=False)


def parse_network(text: str) -> IPNetwork:
    """``192.0.2.0/24``, ``2001:db8::/32`` or one address (a /32, /128).

    Host bits are allowed (``192.0.2.7/24`` is 192.0.2.0/24): admins write
    an address with its prefix length more often than the network itself.
    Raises ValueError naming the text.
    """
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        raise ValueError(f"not an address or network: {text!r}") from None
