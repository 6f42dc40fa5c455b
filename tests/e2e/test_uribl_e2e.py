"""URI blocklists end to end: real Postfix, a real rbldnsd domain zone
(dnset) behind the test resolver, the daemon. A message linking to a listed
domain is rejected at end of data; one linking to an unlisted domain, or to
a domain the zone answers with an error code, is delivered."""

from __future__ import annotations

import smtplib
from typing import Iterator

import pytest

from tests.dnsfixtures import DnsAuthority, resolver_with_lists
from tests.e2e.postfix import milter_params

SENDER = "news@example.org"
RCPT = "alice@example.com"
ZONE = (":127.0.1.2:Listed spam domain\n"
        "spam-shop.test\n"
        "refused.test :127.255.255.254:query refused\n")


def message(link: str) -> bytes:
    return (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: our offer\r\n"
            "Message-ID: <offer-1@example.org>\r\nDate: Tue, 02 Jan 2024 10:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            f'<p>Hello, see <a href="{link}">our shop</a>.</p>\r\n').encode()


@pytest.fixture
def dns_server() -> Iterator[DnsAuthority]:
    with resolver_with_lists({"dbl.test:dnset": ZONE}) as server:
        yield server


@pytest.fixture
def mta(dns_server, milterguard_factory, postfix_factory):
    daemon = milterguard_factory(f"""
dns: {{nameservers: [127.0.0.1], port: {dns_server.port}, timeout: 2.0}}
envelope: {{reject_unknown_sender_domain: false}}
uribl:
  zones:
    - {{name: dbl, zone: dbl.test, codes: [127.0.1.2-127.0.1.99]}}
""")
    return postfix_factory(milter_params([daemon.spec]))


def send(port: int, link: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("client.example.org")
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt(RCPT)[0] == 250
        code, text = smtp.data(message(link))
        return code, text.decode()


def test_listed_link_domain_is_rejected(mta):
    code, text = send(mta.port, "http://www.offers.spam-shop.test/buy?id=1")
    assert code == 554, text
    assert "5.7.1 Message rejected: it links to spam-shop.test, listed by dbl.test" in text
    assert "[uribl:dbl]" in text


def test_unlisted_and_error_answers_are_delivered(mta):
    code, text = send(mta.port, "https://shop.example.net/catalogue")
    assert code == 250, text
    code, text = send(mta.port, "http://www.refused.test/")
    assert code == 250, text
    assert mta.wait_discarded(2) == 2
