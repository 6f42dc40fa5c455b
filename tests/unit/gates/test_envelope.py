"""Envelope checks: address syntax, non-FQDN, sender and recipient domains."""

from __future__ import annotations

import pytest

from tests.dnsfixtures import DnsAuthority
from milterguard.gates.dns import DnsQuery, ResolverSettings
from milterguard.gates.envelope import (DOMAIN_NONE, DOMAIN_NULL_MX, DOMAIN_OK,
                                         DOMAIN_UNKNOWN, EnvelopeChecks, EnvelopeSettings,
                                         domain_state, parse_envelope_address)
from milterguard.verdict import Action

RECORDS = {
    "example.com": {"MX": ["10 mail.example.com."]},
    "mail.example.com": {"A": ["192.0.2.25"]},
    "aonly.example.net": {"A": ["192.0.2.26"]},
    "v6only.example.net": {"AAAA": ["2001:db8::26"]},
    "nullmx.example.org": {"MX": ["0 ."]},
    "txtonly.example.org": {"TXT": ['"hello"']},
}


@pytest.fixture(scope="module")
def authority():
    server = DnsAuthority(RECORDS, servfail=["broken.example"],
                          silent=["silent.example"]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def query(authority):
    return DnsQuery(ResolverSettings(nameservers=("127.0.0.1",), port=authority.port,
                                     timeout=0.5, cache=False))


@pytest.fixture
def checks(query):
    return EnvelopeChecks(EnvelopeSettings(reject_unknown_recipient_domain=True, timeout=0.5),
                          query)


@pytest.mark.parametrize("raw,text,local,domain", [
    ("<user@example.com>", "user@example.com", "user", "example.com"),
    ("user@example.com", "user@example.com", "user", "example.com"),
    ("<first.last+tag@example.com>", "first.last+tag@example.com", "first.last+tag",
     "example.com"),
    ('<"john doe"@example.com>', '"john doe"@example.com', '"john doe"', "example.com"),
    ("<@relay.example:user@example.com>", "user@example.com", "user", "example.com"),
    ("<user@[192.0.2.1]>", "user@[192.0.2.1]", "user", "[192.0.2.1]"),
    ("<jörg@bücher.example>", "jörg@bücher.example", "jörg", "bücher.example"),
    ("<postmaster>", "postmaster", "postmaster", ""),
])
def test_parse_valid(raw, text, local, domain):
    addr = parse_envelope_address(raw)
    assert addr is not None
    assert (addr.text, addr.local, addr.domain) == (text, local, domain)


@pytest.mark.parametrize("raw", ["<user@@example.com>", "<...@example.com>",
                                 "<user@exa mple.com>",
                                 "<user@-bad.example.com>", "<user@[300.0.0.1]>",
                                 "<" + "x" * 65 + "@example.com>", "user@example.com>",
                                 "<user name@example.com>", "<@example.com>",
                                 "<user@example.com.>"])
def test_parse_invalid(raw):
    assert parse_envelope_address(raw) is None


@pytest.mark.parametrize("raw", ["<j..doe@example.com>", "<.user@example.com>",
                                 "<user.@example.com>"])
def test_dots_anywhere_in_local_part_are_accepted_like_postfix(raw):
    # Real senders use them; refusing them loses legitimate mail.
    assert parse_envelope_address(raw) is not None


def test_null_sender_is_legal(checks):
    assert parse_envelope_address("<>").null
    assert checks.check_sender("<>") == []
    assert checks.check_sender("") == []


def test_null_recipient_is_not(checks):
    found = checks.check_recipient("<>")
    assert found[0].rule_id == "envelope:recipient-syntax"


def test_domain_states(query):
    assert domain_state(query, "example.com", 0.5) == DOMAIN_OK
    assert domain_state(query, "aonly.example.net", 0.5) == DOMAIN_OK
    assert domain_state(query, "v6only.example.net", 0.5) == DOMAIN_OK
    assert domain_state(query, "nullmx.example.org", 0.5) == DOMAIN_NULL_MX
    assert domain_state(query, "txtonly.example.org", 0.5) == DOMAIN_NONE
    assert domain_state(query, "nonexistent.example.com", 0.5) == DOMAIN_NONE
    assert domain_state(query, "broken.example", 0.5) == DOMAIN_UNKNOWN
    assert domain_state(query, "silent.example", 0.5) == DOMAIN_UNKNOWN


def test_good_sender_passes(checks):
    assert checks.check_sender("<user@example.com>") == []
    assert checks.check_sender("<user@aonly.example.net>") == []
    assert checks.check_sender("<user@[192.0.2.1]>") == []


def test_sender_syntax(checks):
    found = checks.check_sender("<user@@example.com>")
    assert found[0].rule_id == "envelope:sender-syntax"
    assert (found[0].reply.code, found[0].reply.xcode) == ("501", "5.1.7")
    assert found[0].category == "bad-sender"


def test_non_fqdn_sender(checks):
    for sender in ("<user@localhost>", "<user>"):
        found = checks.check_sender(sender)
        assert found[0].rule_id == "envelope:sender-non-fqdn"
        assert str(found[0].reply).startswith("504 5.5.2 <")
        assert found[0].reply.text.endswith("Sender address rejected: need fully-qualified address")


def test_sender_domain_nxdomain(checks):
    found = checks.check_sender("<user@nonexistent.example.com>")
    assert found[0].rule_id == "envelope:sender-nxdomain"
    assert found[0].action == Action.REJECT
    assert str(found[0].reply) == ("550 5.1.8 <user@nonexistent.example.com>: Sender address "
                                   "rejected: Domain not found")


def test_sender_domain_without_mx_or_address(checks):
    found = checks.check_sender("<user@txtonly.example.org>")
    assert (found[0].rule_id, found[0].reply.code) == ("envelope:sender-nxdomain", "550")


def test_sender_domain_dns_failure_tempfails(checks):
    for domain in ("broken.example", "silent.example"):
        found = checks.check_sender(f"<user@{domain}>")
        assert found[0].action == Action.TEMPFAIL
        assert (found[0].reply.code, found[0].reply.xcode) == ("450", "4.1.8")


def test_sender_null_mx(checks):
    found = checks.check_sender("<user@nullmx.example.org>")
    assert found[0].rule_id == "envelope:sender-null-mx"
    assert (found[0].reply.code, found[0].reply.xcode) == ("550", "5.7.27")
    assert "nullMX" in found[0].reply.text


def test_recipient_checks(checks):
    assert checks.check_recipient("<user@example.com>") == []
    assert checks.check_recipient("<Postmaster>") == []
    found = checks.check_recipient("<user@localhost>")
    assert found[0].rule_id == "envelope:recipient-non-fqdn"
    assert found[0].category == "bad-recipient"
    assert str(found[0].reply) == ("504 5.5.2 <user@localhost>: Recipient address rejected: "
                                   "need fully-qualified address")
    found = checks.check_recipient("<user@nonexistent.example.com>")
    assert (found[0].rule_id, found[0].reply.code, found[0].reply.xcode) == \
        ("envelope:recipient-nxdomain", "550", "5.1.2")
    found = checks.check_recipient("<user@broken.example>")
    assert (found[0].action, found[0].reply.code) == (Action.TEMPFAIL, "450")
    found = checks.check_recipient("<user@nullmx.example.org>")
    assert (found[0].reply.code, found[0].reply.xcode) == ("556", "5.1.10")
    found = checks.check_recipient("<bad dots@example.com>")
    assert (found[0].rule_id, found[0].reply.xcode) == ("envelope:recipient-syntax", "5.1.3")


def test_switched_off(query):
    quiet = EnvelopeChecks(EnvelopeSettings(
        reject_bad_syntax=False, reject_non_fqdn_sender=False, reject_non_fqdn_recipient=False,
        reject_unknown_sender_domain=False, reject_null_mx=False,
        reject_unknown_recipient_domain=False), query)
    for addr in ("<user@@x>", "<user@localhost>", "<user@nonexistent.example.com>",
                 "<user@nullmx.example.org>"):
        assert quiet.check_sender(addr) == []
        assert quiet.check_recipient(addr) == []


def test_reply_carries_no_exception_text(checks):
    found = checks.check_sender("<user@silent.example>")
    text = str(found[0].reply).lower()
    assert "timeout" not in text and "exception" not in text and "error" not in text
