"""URI blocklists: link domains cut by the Public Suffix List, asked of
zones served by the test DNS authority (tests/e2e/test_uribl_e2e.py runs a
real rbldnsd behind real Postfix)."""

from __future__ import annotations

import pytest

from milterguard.content.views import MessageViews
from milterguard.errors import ConfigError
from milterguard.gates.gateset import Gates
from milterguard.gates.uribl import link_names
from milterguard.content.suffixes import SuffixList
from milterguard.verdict import Action
from tests.dnsfixtures import DnsAuthority, load_test_config

RECORDS = {
    # dbl.test: a domain list with per-code meaning.
    "spam-shop.test.dbl.test": {"A": ["127.0.1.2"]},
    "phish.test.dbl.test": {"A": ["127.0.1.4"]},
    # Error answers a real list gives: never a listing.
    "refused.test.dbl.test": {"A": ["127.255.255.254"]},
    "loop.test.dbl.test": {"A": ["127.0.0.1"]},
    "oddcode.test.dbl.test": {"A": ["127.0.1.255"]},
    # multi.test: bitmask answers, and IPs reversed.
    "bulk.test.multi.test": {"A": ["127.0.0.6"]},
    "only-bit-8.test.multi.test": {"A": ["127.0.0.8"]},
    "7.113.0.203.multi.test": {"A": ["127.0.0.2"]},
}


@pytest.fixture(scope="module")
def dns_server():
    server = DnsAuthority(RECORDS, servfail=["broken.test.dbl.test"]).start()
    try:
        yield server
    finally:
        server.stop()


ZONES = """\
    - name: dbl
      zone: dbl.test
      codes:
        - {match: 127.0.1.2-127.0.1.99, category: spam-domain}
    - name: multi
      zone: multi.test
      codes: ["&0x04"]
      action: score
      weight: 4
      ips: true
"""


def make_gates(tmp_path, port: int, zones: str = ZONES, extra: str = "") -> Gates:
    config = load_test_config(f"""
dns: {{nameservers: [127.0.0.1], port: {port}, timeout: 1.0}}
dnsbl: {{self_test: false}}
uribl:
  deadline: 1.0
{extra}
  zones:
{zones}
""", str(tmp_path))
    return Gates.from_config(config, start=False)


def views_with(*links: str) -> MessageViews:
    body = "Hello,\r\n" + "\r\n".join(f"see {link}" for link in links) + "\r\n"
    return MessageViews([("Subject", "links")], body.encode(), 1 << 20)


def test_registered_domains_and_ip_literals_of_the_links():
    psl = SuffixList.parse("uk\nco.uk\nnet\norg\n")
    views = views_with("http://www.a.spam-shop.co.uk/x", "https://spam-shop.co.uk/y",
                       "http://203.0.113.7/z", "http://10.1.2.3/private",
                       "http://own.example.org/", "http://third.example.net/")
    domains, ips = link_names(views, psl, frozenset({"example.org"}), limit=10)
    assert domains == ["spam-shop.co.uk", "example.net"]
    assert ips == ["203.0.113.7"]             # private addresses are never asked
    assert link_names(views, psl, frozenset(), limit=1) == (["spam-shop.co.uk"], [])


def test_listed_link_domain_rejects_naming_domain_and_zone(dns_server, tmp_path):
    gates = make_gates(tmp_path, dns_server.port)
    findings = gates.on_message(views_with("http://www.shop.spam-shop.test/buy"))
    assert len(findings) == 1
    f = findings[0]
    assert (f.rule_id, f.category, f.action) == ("uribl:dbl", "spam-domain", Action.REJECT)
    assert str(f.reply) == ("554 5.7.1 Message rejected: it links to spam-shop.test, "
                            "listed by dbl.test")
    assert "codes=127.0.1.2" in f.detail


def test_unlisted_links_and_error_answers_never_count(dns_server, tmp_path):
    gates = make_gates(tmp_path, dns_server.port)
    views = views_with("http://clean.example.com/", "http://refused.test/",
                       "http://loop.test/", "http://oddcode.test/", "http://broken.test/")
    assert gates.on_message(views) == []
    counters = gates.uribl.stats()["dbl"]
    assert counters["unknown"] == 4 and counters["clean"] == 1 and counters["listed"] == 0


def test_bitmask_zone_scores_its_weight_and_asks_ips(dns_server, tmp_path):
    gates = make_gates(tmp_path, dns_server.port)
    findings = gates.on_message(views_with("http://bulk.test/", "http://203.0.113.7/"))
    assert [(f.rule_id, f.action, f.score) for f in findings] == [
        ("uribl:multi", Action.CONTINUE, 4.0)]         # one zone counts once
    assert gates.on_message(views_with("http://only-bit-8.test/")) == []
    assert dns_server.count("7.113.0.203.multi.test", "A") == 1
    assert dns_server.count("7.113.0.203.dbl.test", "A") == 0   # ips: false


def test_no_zones_means_no_lookups_and_no_list(tmp_path):
    config = load_test_config("uribl: {public_suffix_list: /nonexistent}\n", str(tmp_path))
    gates = Gates.from_config(config, start=False)
    assert gates.uribl is None and gates.on_message(views_with("http://x.example/")) == []


def test_config_errors_name_file_line_and_field(tmp_path):
    with pytest.raises(ConfigError) as info:
        make_gates(tmp_path, 53, zones="    - {name: x, zone: x.test, action: accept}\n")
    assert "site.yaml:8" in str(info.value) and "action" in str(info.value)
    with pytest.raises(ConfigError) as info:
        make_gates(tmp_path, 53, extra="  public_suffix_list: /nonexistent/list.dat")
    assert "public_suffix_list" in str(info.value) and "publicsuffix" in str(info.value)


def test_check_command_reports_a_bad_zone(tmp_path, capsys):
    from milterguard.cli.main import main
    cfg = tmp_path / "site.yaml"
    cfg.write_text("rules: {shipped: false, site: []}\n"
                   "uribl:\n  zones:\n    - {name: x, zone: x.test, action: accept}\n")
    assert main(["check", "-c", str(cfg)]) == 1
    assert "site.yaml:4: rule x: field action: must be one of reject, tempfail, score" in \
        capsys.readouterr().out


def test_answers_are_counted_in_the_metrics(dns_server, tmp_path):
    from types import SimpleNamespace

    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client import generate_latest

    from milterguard.report.metrics import Metrics
    gates = make_gates(tmp_path, dns_server.port)
    engine = SimpleNamespace(record=lambda hits: None, gates=gates, greylist=None,
                             reloads=0, reload_failures=0)
    metrics = Metrics()
    metrics.attach(engine)
    gates.on_message(views_with("http://spam-shop.test/", "http://clean.example.com/",
                                "http://refused.test/"))
    counted = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(
                   generate_latest(metrics.registry).decode())
               for s in family.samples if s.name == "milterguard_uribl_results_total"}
    assert counted == {
        ("milterguard_uribl_results_total", (("result", "listed"), ("zone", "dbl"))): 1,
        ("milterguard_uribl_results_total", (("result", "clean"), ("zone", "dbl"))): 1,
        ("milterguard_uribl_results_total", (("result", "unknown"), ("zone", "dbl"))): 1,
        ("milterguard_uribl_results_total", (("result", "clean"), ("zone", "multi"))): 3,
    }
