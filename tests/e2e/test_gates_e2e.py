"""Connect and HELO gates end to end: real Postfix, real rbldnsd, the daemon.

XCLIENT makes Postfix (and so the milter) see client addresses and HELO
names other than 127.0.0.1. DNS for the daemon is a dnspython authority on
127.0.0.1 that answers the test domains and forwards the DNSBL zone to a
real rbldnsd, as a site's local resolver would.
"""

from __future__ import annotations

import smtplib
from typing import Iterator

import pytest


from tests.dnsfixtures import DnsAuthority, resolver_with_lists
from tests.e2e.postfix import milter_params

SENDER = "news@example.org"
RCPT = "alice@example.com"
MESSAGE = (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: minutes\r\n"
           "Message-ID: <minutes-2@example.org>\r\nDate: Tue, 02 Jan 2024 10:00:00 +0000\r\n"
           "\r\nHello Alice, the minutes follow next week.\r\n")
RECORDS = {
    "example.org": {"MX": ["10 mail.example.org."]},
    "example.com": {"MX": ["10 mx.example.com."]},
    "mail.example.org": {"A": ["192.0.2.7"]},
    "mx.example.com": {"A": ["192.0.2.25"]},
}


@pytest.fixture
def dns_servers() -> Iterator[DnsAuthority]:
    with resolver_with_lists({"bl.test:ip4set": (":127.0.0.2:Listed by bl.test, see "
                                                 "http://bl.test/$\n192.0.2.66\n"
                                                 "198.51.100.66\n127.0.0.2\n")},
                             RECORDS) as server:
        yield server


@pytest.fixture
def mta(dns_servers, milterguard_factory, postfix_factory):
    daemon = milterguard_factory(f"""
dns: {{nameservers: [127.0.0.1], port: {dns_servers.port}, timeout: 2.0}}
allowlist:
  networks: [127.0.0.0/8, "::1/128", 198.51.100.0/24]
  authenticated: true
dnsbl:
  zones:
    - {{name: bl, zone: bl.test}}
helo:
  reject_unknown: true
""")
    # SASL on, so that XCLIENT LOGIN= sets the login name ({auth_authen}).
    return postfix_factory(milter_params([daemon.spec], smtpd_sasl_auth_enable="yes"))


def transaction(port: int, addr: str, helo: str, login: str = "",
                sender: str = SENDER) -> tuple[int, str]:
    """One SMTP transaction as ``addr``; the first refusal, or DATA's reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("client.example.org")
        attrs = f"ADDR={addr} NAME=mail.example.org HELO={helo}"
        if login:
            attrs += f" LOGIN={login}"
        code, text = smtp.docmd("XCLIENT", attrs)
        assert code == 220, (code, text)
        smtp.ehlo(helo)
        for command in (lambda: smtp.mail(sender), lambda: smtp.rcpt(RCPT)):
            code, text = command()
            if code != 250:
                return code, text.decode()
        code, text = smtp.data(MESSAGE.encode())
        return code, text.decode()


def test_listed_client_rejected_with_zone_text(mta):
    code, text = transaction(mta.port, "192.0.2.66", "mail.example.org")
    assert code == 554, text
    assert "5.7.1 Service unavailable; Client host [192.0.2.66] blocked using bl.test" in text
    assert "Listed by bl.test, see http://bl.test/192.0.2.66" in text


def test_unlisted_client_passes(mta):
    code, text = transaction(mta.port, "192.0.2.7", "mail.example.org")
    assert code == 250, text
    assert mta.wait_discarded(1) == 1


def test_broken_helo_gets_the_helo_reply(mta):
    code, text = transaction(mta.port, "192.0.2.7", "localhost")
    assert code == 504, text
    assert "5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname" in text
    code, text = transaction(mta.port, "192.0.2.7", "nonexistent.example.org")
    assert code == 550, text
    assert "Host not found" in text


def test_allowlisted_client_passes_although_listed(mta):
    code, text = transaction(mta.port, "198.51.100.66", "mail.example.org")
    assert code == 250, text


def test_authenticated_client_skips_envelope_gates(mta):
    bad_sender = "news@nonexistent.example.org"
    code, text = transaction(mta.port, "192.0.2.7", "mail.example.org", sender=bad_sender)
    assert code == 550, text
    assert "5.1.8" in text and "Domain not found" in text
    code, text = transaction(mta.port, "192.0.2.7", "mail.example.org", login="alice",
                             sender=bad_sender)
    assert code == 250, text


def test_authenticated_client_passes_although_listed(mta):
    code, text = transaction(mta.port, "192.0.2.66", "mail.example.org", login="alice")
    assert code == 250, text
