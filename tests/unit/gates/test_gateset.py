"""The Gates facade: config wiring, the stages, per-check exceptions."""

from __future__ import annotations

import threading

import pytest

from tests.dnsfixtures import DnsAuthority, load_test_config
from milterguard.errors import ConfigError
from milterguard.gates.gateset import Gates
from milterguard.smtpinfo import ClientInfo
from milterguard.verdict import Action

RECORDS = {
    "example.com": {"MX": ["10 mail.example.com."]},
    "mail.example.com": {"A": ["192.0.2.25"]},
    "short.example.com": {"A": ["192.0.2.26"]},
}


@pytest.fixture(scope="module")
def servers():
    # One nameserver for everything (names and the DNSBL zone), as a site's
    # local resolver would be.
    auth = DnsAuthority(RECORDS, servfail=["broken.example"], lists={
        "bl.test:ip4set": ":127.0.0.2:Listed\n192.0.2.7\n198.51.100.7\n127.0.0.2\n"}).start()
    try:
        yield auth
    finally:
        auth.stop()


SITE = """
dns: {{nameservers: [127.0.0.1], port: {port}, timeout: 1.0}}
server: {{hostname: mx.example.net, addresses: [198.51.100.25]}}
dnsbl:
  self_test: false
  zones:
    - {{name: bl, zone: bl.test}}
  exceptions:
    networks: [198.51.100.0/24]
    helo_patterns: ["*.partner.example"]
helo:
  reject_unknown: true
  exceptions:
    networks: ["2001:db8:1::/48"]
    helo_patterns: ["legacy-*"]
envelope:
  reject_unknown_recipient_domain: true
  exceptions:
    sender_domains: [broken.example]
    recipient_domains: [internal.example]
"""


@pytest.fixture
def gates(servers, tmp_path):
    g = Gates.from_config(load_test_config(SITE.format(port=servers.port), str(tmp_path)))
    try:
        yield g
    finally:
        g.close()


def test_stages(gates):
    client = ClientInfo(addr="192.0.2.7", helo="mail.example.com")
    assert [f.rule_id for f in gates.on_connect(client)] == ["dnsbl:bl"]
    assert gates.on_helo(client) == []
    assert gates.on_mail(client, "<user@example.com>") == []
    assert gates.on_rcpt(client, "<user@example.com>", "<rcpt@example.com>") == []
    assert [f.rule_id for f in gates.on_rcpt(client, "<>", "<rcpt@nonexistent.example.com>")] \
        == ["envelope:recipient-nxdomain"]


def test_helo_stage_and_missing_helo(gates):
    assert gates.on_helo(ClientInfo(addr="192.0.2.9", helo="mx.example.net"))[0].rule_id == \
        "helo:own-name"
    assert gates.on_helo(ClientInfo(addr="192.0.2.9", helo="[198.51.100.25]"))[0].rule_id == \
        "helo:own-name"
    found = gates.on_mail(ClientInfo(addr="192.0.2.9"), "<user@example.com>")
    assert [f.rule_id for f in found] == ["helo:missing"]


def test_both_helo_and_sender_findings_at_mail(gates):
    found = gates.on_mail(ClientInfo(addr="192.0.2.9"), "<user@localhost>")
    assert [f.rule_id for f in found] == ["helo:missing", "envelope:sender-non-fqdn"]


def test_dnsbl_exceptions(gates):
    # Listed, but the network is excepted from the DNSBL check.
    assert gates.on_connect(ClientInfo(addr="198.51.100.7")) == []
    # Excepted by HELO pattern (when the session calls again after HELO).
    assert gates.on_connect(ClientInfo(addr="192.0.2.7", helo="mx1.partner.example")) == []
    # The HELO exception of the dnsbl section does not cover the HELO checks.
    assert gates.on_helo(ClientInfo(addr="192.0.2.7", helo="[203.0.113.1]"))


def test_helo_exceptions(gates):
    assert gates.on_helo(ClientInfo(addr="2001:db8:1::5", helo="localhost")) == []
    assert gates.on_helo(ClientInfo(addr="192.0.2.9", helo="legacy-box")) == []
    assert gates.on_helo(ClientInfo(addr="192.0.2.9", helo="other-box"))[0].rule_id == \
        "helo:non-fqdn"
    assert gates.on_mail(ClientInfo(addr="2001:db8:1::5"), "<>") == []


def test_envelope_exceptions(gates):
    client = ClientInfo(addr="192.0.2.9", helo="mail.example.com")
    assert gates.on_mail(client, "<user@broken.example>") == []
    assert gates.on_mail(client, "<user@sub.broken.example>") == []
    assert gates.on_mail(client, "<user@notbroken.example>")[0].rule_id == \
        "envelope:sender-nxdomain"
    assert gates.on_rcpt(client, "<>", "<user@internal.example>") == []
    assert gates.on_rcpt(client, "<>", "<user@nointernal.example>")[0].action == Action.REJECT


def test_no_address_no_dnsbl(gates):
    assert gates.on_connect(ClientInfo(addr="")) == []
    assert gates.on_connect(ClientInfo(addr="not-an-ip")) == []


def test_defaults_build_and_close_without_threads_left(tmp_path):
    before = {t.name for t in threading.enumerate()}
    gates = Gates.from_config(load_test_config(
        "dnsbl:\n  self_test_interval: 5\n  zones:\n    - {name: bl, zone: bl.test}\n"
        "dns: {nameservers: [127.0.0.1], port: 9, timeout: 0.2}\n", str(tmp_path)))
    assert gates.dnsbl._thread is not None
    gates.close()
    after = {t.name for t in threading.enumerate() if t.is_alive()}
    assert "dnsbl-selftest" not in after - before
    assert not any(name.startswith("dnsbl_") for name in after - before)


@pytest.mark.parametrize("text,line,field", [
    ("dns:\n  port: 0\n", 2, "port"),
    ("dns:\n  nameservers: 127.0.0.1\n", 2, "nameservers"),
    ("dns:\n  cache_min_ttl: 100\n  cache_max_ttl: 10\n", 3, "cache_max_ttl"),
    ("helo:\n  reject_unknown: sometimes\n", 2, "reject_unknown"),
    ("envelope:\n  timeout: -1\n", 2, "timeout"),
    ("envelope:\n  exceptions:\n    networks: [nonsense]\n", 3, "networks"),
    ("helo:\n  exceptions:\n    colours: [red]\n", 3, "colours"),
    ("server:\n  addresses: [mx.example.net]\n", 2, "addresses"),
])
def test_config_errors(tmp_path, text, line, field):
    with pytest.raises(ConfigError) as info:
        Gates.from_config(load_test_config(text, str(tmp_path)), start=False).close()
    assert info.value.file.endswith("site.yaml")
    assert (info.value.line, info.value.field) == (line, field)


@pytest.mark.parametrize("body, line, field, words", [
    ("    helo_patterns: '*.example'\n", 3, "helo_patterns", "list of strings"),
    ("    networks: [192.0.2.0/24, 192.0.2.300]\n", 3, "networks", "'192.0.2.300'"),
    ("    sender_domains: [example.org, 5]\n", 3, "sender_domains", "list of strings"),
    ("    adresses: [192.0.2.1]\n", 3, "adresses", "addresses"),
])
def test_bad_exceptions_name_file_line_and_field(body, line, field, words):
    from milterguard.gates.gateset import CheckExceptions
    from milterguard.yamlsrc import load_yaml_text
    helo = load_yaml_text("helo:\n  exceptions:\n" + body, "site.yaml")["helo"]
    with pytest.raises(ConfigError) as info:
        CheckExceptions.from_section(helo)
    err = info.value
    assert (err.file, err.line, err.field) == ("site.yaml", line, field)
    assert words in str(err)
