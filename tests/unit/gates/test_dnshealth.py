"""A resolver that denies names that must exist (issue 12, finding 4).

A resolver without upstream answers NXDOMAIN for everything; the envelope
and HELO checks then refused every sender with 550 5.1.8 and nothing in
the log stood out. With probe names that must exist, such a resolver is
noticed: the NXDOMAIN-based refusals answer 4xx, a counter and a log line
say so, and once the resolver answers again they are permanent again.
"""

from __future__ import annotations

import logging

import pytest

from tests.dnsfixtures import DnsAuthority, load_test_config
from milterguard.gates.gateset import Gates
from milterguard.smtpinfo import ClientInfo
from milterguard.verdict import Action

SITE = """
dns: {{nameservers: [127.0.0.1], port: {port}, timeout: 1.0}}
dnsbl: {{self_test: false, zones: []}}
helo: {{reject_unknown: true}}
envelope: {{reject_unknown_recipient_domain: true}}
"""

RECORDS = {"example.com": {"MX": ["10 mail.example.com."]},
           "mail.example.com": {"A": ["192.0.2.25"]}}


def _gates(auth: DnsAuthority, tmp_path) -> Gates:
    return Gates.from_config(load_test_config(SITE.format(port=auth.port), str(tmp_path)),
                             start=False)


@pytest.fixture
def denying_resolver():
    auth = DnsAuthority(RECORDS, tlds=()).start()   # "com" does not exist
    try:
        yield auth
    finally:
        auth.stop()


def test_nxdomain_for_probe_names_makes_dns_refusals_temporary(denying_resolver, tmp_path,
                                                                caplog):
    gates = _gates(denying_resolver, tmp_path)
    try:
        caplog.set_level(logging.INFO, logger="milterguard")
        assert gates.health.probe() == ("com", "net", "org")
        assert "event=resolver-denies-existence" in caplog.text
        client = ClientInfo(addr="192.0.2.7", helo="host.nowhere.example")

        [sender] = gates.on_mail(client, "alice@nx.example")
        assert sender.action is Action.TEMPFAIL
        assert str(sender.reply) == ("450 4.1.8 <alice@nx.example>: Sender address rejected: "
                                     "Domain not found")
        [rcpt] = gates.on_rcpt(client, "alice@example.com", "bob@nx.example")
        assert rcpt.action is Action.TEMPFAIL and rcpt.reply.code == "450"
        [helo] = gates.on_helo(client)
        assert helo.rule_id == "helo:unknown" and helo.action is Action.TEMPFAIL
        assert str(helo.reply).startswith("450 4.7.1 <host.nowhere.example>: ")

        assert gates.health.counters()["downgraded"] == 3
        assert gates.health.counters()["denies_existence"] == 1
        assert caplog.text.count("event=dns-reject-downgraded") == 3
        # An existing domain is still fine.
        assert gates.on_mail(ClientInfo(addr="192.0.2.7", helo="mail.example.com"),
                             "alice@example.com") == []
    finally:
        gates.close()


def test_a_resolver_that_knows_the_probes_keeps_550(tmp_path):
    auth = DnsAuthority(RECORDS).start()
    gates = _gates(auth, tmp_path)
    try:
        assert gates.health.probe() == ()
        [sender] = gates.on_mail(ClientInfo(addr="192.0.2.7", helo="mail.example.com"),
                                 "alice@nx.example")
        assert sender.action is Action.REJECT and str(sender.reply).startswith("550 5.1.8")
    finally:
        gates.close()
        auth.stop()


def test_recovery_restores_permanent_refusals(tmp_path, caplog):
    auth = DnsAuthority(RECORDS, tlds=()).start()
    gates = _gates(auth, tmp_path)
    try:
        caplog.set_level(logging.INFO, logger="milterguard")
        gates.health.probe()
        auth.records["com"] = {"SOA": ["a.nic.com. h.nic.com. 1 3600 600 86400 300"]}
        auth.records["net"] = auth.records["org"] = auth.records["com"]
        assert gates.health.probe() == ()
        assert "event=resolver-recovered" in caplog.text
        [sender] = gates.on_mail(ClientInfo(addr="192.0.2.7", helo="mail.example.com"),
                                 "alice@nx.example")
        assert sender.action is Action.REJECT
    finally:
        gates.close()
        auth.stop()


def test_a_dead_resolver_is_not_a_denying_one(tmp_path):
    # Timeouts say nothing about NXDOMAIN answers (the checks already 4xx them).
    gates = Gates.from_config(load_test_config(
        "dns: {nameservers: [127.0.0.1], port: 9, timeout: 0.2}\n"
        "dnsbl: {self_test: false, zones: []}\n", str(tmp_path)), start=False)
    try:
        assert gates.health.probe() == ()
    finally:
        gates.close()


def test_probe_names_config(tmp_path):
    gates = Gates.from_config(load_test_config(
        "dns: {probe_names: [example.net.], probe_interval: 1h}\n", str(tmp_path)),
        start=False)
    try:
        assert gates.health.settings.names == ("example.net",)
        assert gates.health.settings.interval == 3600
    finally:
        gates.close()


def test_metrics_expose_the_resolver_state(denying_resolver, tmp_path):
    from prometheus_client import generate_latest

    from milterguard.report.metrics import Metrics

    gates = _gates(denying_resolver, tmp_path)
    try:
        gates.health.probe()
        gates.on_mail(ClientInfo(addr="192.0.2.7", helo="h.example.com"), "a@nx.example")
        engine = type("E", (), {"gates": gates, "record": lambda self, hits: None})()
        metrics = Metrics()
        metrics.attach(engine)
        text = generate_latest(metrics.registry).decode()
        assert "milterguard_resolver_denies_existence 1.0" in text
        assert "milterguard_dns_rejects_downgraded_total 1.0" in text
    finally:
        gates.close()
