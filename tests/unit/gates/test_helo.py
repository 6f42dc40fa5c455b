"""HELO checks: Postfix's semantics and codes, DNS from a local authority."""

from __future__ import annotations

import pytest

from tests.dnsfixtures import DnsAuthority
from milterguard.gates.dns import DnsQuery, ResolverSettings
from milterguard.gates.helo import HeloChecks, HeloSettings, valid_hostname
from milterguard.smtpinfo import ClientInfo
from milterguard.verdict import Action

RECORDS = {
    "mail.example.com": {"A": ["192.0.2.25"]},
    "v6only.example.com": {"AAAA": ["2001:db8::25"]},
    "mxonly.example.net": {"MX": ["10 mail.example.com."]},
    "txtonly.example.org": {"TXT": ['"v=spf1 -all"']},
}


@pytest.fixture(scope="module")
def authority():
    server = DnsAuthority(RECORDS, servfail=["broken.example"]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def checks(authority):
    query = DnsQuery(ResolverSettings(nameservers=("127.0.0.1",), port=authority.port,
                                      timeout=1.0, cache=False))
    settings = HeloSettings(reject_unknown=True, own_names=("mx.example.net",),
                            own_addresses=("198.51.100.25", "2001:db8::25:1"), timeout=1.0)
    return HeloChecks(settings, query)


def one(checks: HeloChecks, helo: str, addr: str = "192.0.2.7"):
    found = checks.check(ClientInfo(addr=addr, helo=helo))
    assert len(found) <= 1
    return found[0] if found else None


@pytest.mark.parametrize("helo", ["mail.example.com", "MAIL.Example.COM.", "v6only.example.com",
                                  "mxonly.example.net", "[192.0.2.7]"])
def test_good_helo_passes(checks, helo):
    assert one(checks, helo) is None


def test_ipv6_literal_of_the_client_passes(checks):
    assert one(checks, "[IPv6:2001:db8::7]", addr="2001:db8::7") is None
    assert one(checks, "[IPv6:2001:DB8:0::7]", addr="2001:db8::7") is None


def test_non_fqdn(checks):
    found = one(checks, "localhost")
    assert found.rule_id == "helo:non-fqdn"
    assert found.category == "bad-helo"
    assert str(found.reply) == ("504 5.5.2 <localhost>: Helo command rejected: "
                                "need fully-qualified hostname")


@pytest.mark.parametrize("helo", ["bad_host!.example.com", "-dash.example.com",
                                  "a..example.com", "[300.1.1.1]", "[IPv6:zz::1]",
                                  "[192.0.2.7", "x" * 64 + ".example.com"])
def test_invalid_syntax(checks, helo):
    found = one(checks, helo)
    assert found.rule_id == "helo:invalid"
    assert (found.reply.code, found.reply.xcode) == ("501", "5.5.2")
    assert found.reply.text.endswith("Helo command rejected: Invalid name")


def test_bare_ip_without_brackets(checks):
    found = one(checks, "192.0.2.7")
    assert found.rule_id == "helo:bare-ip"
    assert str(found.reply) == "501 5.5.2 <192.0.2.7>: Helo command rejected: Invalid name"
    assert one(checks, "2001:db8::7", addr="2001:db8::7").rule_id == "helo:bare-ip"


def test_literal_not_the_clients_address(checks):
    found = one(checks, "[203.0.113.9]")
    assert found.rule_id == "helo:literal-mismatch"
    assert (found.reply.code, found.reply.xcode, found.action) == ("550", "5.7.1",
                                                                    Action.REJECT)


def test_own_name_and_address(checks):
    assert one(checks, "mx.example.net").rule_id == "helo:own-name"
    assert one(checks, "MX.EXAMPLE.NET.").rule_id == "helo:own-name"
    assert one(checks, "[198.51.100.25]").rule_id == "helo:own-name"
    assert one(checks, "[IPv6:2001:db8::25:1]", addr="2001:db8::99").rule_id == "helo:own-name"
    assert str(one(checks, "mx.example.net").reply) == \
        "550 5.7.1 <mx.example.net>: Helo command rejected: You are not me"


def test_unknown_name_nxdomain_rejects(checks):
    found = one(checks, "nonexistent.example.com")
    assert found.rule_id == "helo:unknown"
    assert found.action == Action.REJECT
    assert str(found.reply) == ("550 5.7.1 <nonexistent.example.com>: Helo command rejected: "
                                "Host not found")


def test_name_without_address_or_mx_rejects(checks):
    found = one(checks, "txtonly.example.org")
    assert (found.rule_id, found.action) == ("helo:unknown", Action.REJECT)


def test_dns_failure_tempfails(checks):
    found = one(checks, "host.broken.example")
    assert found.action == Action.TEMPFAIL
    assert str(found.reply) == ("450 4.7.1 <host.broken.example>: Helo command rejected: "
                                "Host not found")


def test_hostile_helo_text_is_cleaned(checks):
    found = one(checks, "evil\r\n250 ok")
    assert "\r" not in found.reply.text and "\n" not in found.reply.text


def test_missing_helo(checks):
    found = checks.missing(ClientInfo(addr="192.0.2.7", helo=""))
    assert [str(f.reply) for f in found] == ["503 5.5.1 Error: send HELO/EHLO first"]
    assert checks.missing(ClientInfo(addr="192.0.2.7", helo="mail.example.com")) == []


def test_checks_can_be_switched_off(authority):
    query = DnsQuery(ResolverSettings(nameservers=("127.0.0.1",), port=authority.port))
    quiet = HeloChecks(HeloSettings(require=False, reject_invalid=False, reject_non_fqdn=False,
                                    reject_own_name=False, reject_literal_mismatch=False,
                                    reject_unknown=False, own_names=("mx.example.net",)),
                       query)
    for helo in ("localhost", "192.0.2.7", "bad!.example", "mx.example.net", "[203.0.113.9]",
                 "nonexistent.example.com"):
        assert quiet.check(ClientInfo(addr="192.0.2.7", helo=helo)) == []
    assert quiet.missing(ClientInfo(addr="192.0.2.7")) == []


def test_valid_hostname_rules():
    assert valid_hostname("a-b.example.com")
    assert valid_hostname("under_score.example.com")  # Postfix accepts it
    assert not valid_hostname("1.2.3.4")
    assert not valid_hostname("trailing-.example.com")
    assert not valid_hostname("")


def test_shown_text_and_bare_ip_fast_paths_agree_with_the_slow_ones():
    import ipaddress

    from milterguard.gates.helo import _is_bare_ip, shown_text
    from milterguard.verdict import clean_reply_text
    for text in ["mail.example.com", " x ", "a  b", "100%", "caf\u00e9", "a\nb", "", "\x7f"]:
        for limit in (2, 100):
            assert shown_text(text, limit) == clean_reply_text(text, limit)
    for name in ["192.0.2.1", "2001:db8::1", "192.0.2", "mail.example.com", "1.2.3.4.",
                 "::", "12345", "a:b", "[192.0.2.1]"]:
        try:
            ipaddress.ip_address(name)
            expected = True
        except ValueError:
            expected = False
        assert _is_bare_ip(name) is expected
