"""Client addresses in the MTA's notations, and network membership."""

from __future__ import annotations

import ipaddress

import pytest

from milterguard.clientaddr import (client_in_networks, in_networks, parse_client_ip,
                                    parse_network, unmapped)

NETS = [ipaddress.ip_network("192.0.2.0/28"), ipaddress.ip_network("2001:db8:1::/48")]


@pytest.mark.parametrize("text, expected", [
    ("192.0.2.1", "192.0.2.1"),
    (" 192.0.2.1 ", "192.0.2.1"),
    ("[192.0.2.1]", "192.0.2.1"),
    ("2001:db8::1", "2001:db8::1"),
    ("IPv6:2001:db8::1", "2001:db8::1"),
    ("ipv6:2001:DB8::1", "2001:db8::1"),
    ("[IPv6:2001:db8::1]", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("::ffff:192.0.2.9", "192.0.2.9"),
    ("IPv6:::ffff:192.0.2.9", "192.0.2.9"),
])
def test_parse_client_ip_notations(text, expected):
    assert parse_client_ip(text) == ipaddress.ip_address(expected)


@pytest.mark.parametrize("text", ["", "unknown", "localhost", "192.0.2", "[]", "IPv6:", "::g"])
def test_parse_client_ip_rejects_what_is_not_an_address(text):
    assert parse_client_ip(text) is None


def test_unmapped_only_changes_mapped_addresses():
    assert unmapped(ipaddress.ip_address("::ffff:198.51.100.4")) == ipaddress.ip_address(
        "198.51.100.4")
    six = ipaddress.ip_address("2001:db8::c633:6404")   # same low bits, not mapped
    assert unmapped(six) is six


def test_membership_by_version_and_mapping():
    assert client_in_networks("192.0.2.15", NETS)
    assert not client_in_networks("192.0.2.16", NETS)
    assert client_in_networks("::ffff:192.0.2.15", NETS)
    assert client_in_networks("IPv6:2001:db8:1:2::3", NETS)
    assert not client_in_networks("2001:db8:2::3", NETS)
    # ::c000:20f carries 192.0.2.15 in its low bits but is an IPv6 address.
    assert not client_in_networks("::c000:20f", NETS)
    assert not client_in_networks("", NETS)
    assert not in_networks(None, NETS)
    assert not client_in_networks("192.0.2.1", [])


def test_parse_network_accepts_hosts_and_host_bits():
    assert parse_network("192.0.2.7/24") == ipaddress.ip_network("192.0.2.0/24")
    assert parse_network(" 2001:db8::1 ") == ipaddress.ip_network("2001:db8::1/128")
    with pytest.raises(ValueError, match="not an address or network: '192.0.2.0/33'"):
        parse_network("192.0.2.0/33")
