"""What a triplet is made of: the normalised sender, the client network, the key."""

from __future__ import annotations

import pytest

from milterguard.clientaddr import parse_client_ip
from milterguard.greylist.triplet_key import client_network, normalize_sender, triplet_key

SENDER = "news@example.org"
RCPT = "alice@example.com"


@pytest.mark.parametrize("raw, expected", [
    ("<News@Example.ORG>", "news@example.org"),
    ("", ""),
    ("<>", ""),
    ("prvs=1234abcdef=user@example.org", "user@example.org"),
    ("msprvs1=18123abcdeF=bounces-list@example.org", "bounces-list@example.org"),
    ("btv1==123abcdef==user@example.org", "user@example.org"),
    ("SRS0=HhSh=TT=example.org=user@forwarder.example", "user@example.org"),
    ("SRS0+HhSh=TT=example.org=user@forwarder.example", "user@example.org"),
    ("SRS1=HHH=first.example==HhSh=TT=example.org=user@second.example",
     "user@example.org"),
    ("SRS0=HhSh=TT=example.org=prvs=1234abcdef=user@forwarder.example",
     "user@example.org"),
    ("user+newsletter@example.org", "user@example.org"),
    ("+weird@example.org", "+weird@example.org"),
    ("bounce-123-alice=example.com@lists.example.org", "bounce-#@lists.example.org"),
    ("list-bounces+alice=example.com@lists.example.org", "list-bounces@lists.example.org"),
    ("owner-list-alice=example.com@lists.example.org", "owner-list@lists.example.org"),
    ("msg-20240101-998877@mailer.example.net", "msg-#-#@mailer.example.net"),
    ("user@Example.ORG.", "user@example.org"),
    ("localonly", "localonly"),
])
def test_normalize_sender(raw, expected):
    assert normalize_sender(raw) == expected


def test_addresses_and_networks():
    assert client_network(parse_client_ip("192.0.2.77"), 24, 64) == "192.0.2.0/24"
    assert client_network(parse_client_ip("::ffff:192.0.2.77"), 24, 64) == "192.0.2.0/24"
    assert client_network(parse_client_ip("IPv6:2001:db8::1"), 24, 64) == "2001:db8::/64"
    assert client_network(parse_client_ip("192.0.2.77"), 32, 64) == "192.0.2.77/32"
    assert triplet_key("a", "b", "c") != triplet_key("a", "bc", "")
    assert -(2 ** 63) <= triplet_key("192.0.2.0/24", SENDER, RCPT) < 2 ** 63
