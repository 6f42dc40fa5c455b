"""DNSBL zones, served in process by the test DNS authority from rbldnsd
zone texts (tests/e2e/test_dnsbl_rbldnsd.py runs the same tests against the
real rbldnsd)."""

from __future__ import annotations

import time

import pytest

from tests.dnsfixtures import DnsAuthority, load_test_config
from milterguard.gates.dnsbl import CLEAN, LISTED, SUSPENDED, UNKNOWN, DnsblChecker
from milterguard.gates.dns import DnsQuery, ResolverSettings
from milterguard.errors import ConfigError
from milterguard.gates.gateset import Gates
from milterguard.smtpinfo import ClientInfo
from milterguard.verdict import Action

TEST_POINT = "127.0.0.2\n"

ZONES = {
    # IPv4 and IPv6 listings in one zone, like most real lists.
    "bl.test:ip4set": (":127.0.0.2:Listed by bl.test, see http://bl.test/q/$\n"
                       "192.0.2.7\n192.0.2.8 :127.0.0.3:Listed as dialup\n" + TEST_POINT),
    "bl.test:ip6trie": ":127.0.0.2:IPv6 listed\n2001:db8:bad::/48\n::ffff:7f00:2\n",
    # A second list for the weighted tests.
    "bl2.test:ip4set": ":127.0.0.2:Listed by bl2\n192.0.2.7\n192.0.2.20\n" + TEST_POINT,
    # An allowlist (dnswl-style).
    "wl.test:ip4set": ":127.0.0.2:Known good\n192.0.2.20\n" + TEST_POINT,
    # A public-resolver error answer for everything, test points included.
    "err.test:ip4set": ":127.255.255.254:Query refused\n0.0.0.0/1\n128.0.0.0/1\n",
    # Answers outside the configured codes.
    "odd.test:ip4set": ":127.0.0.99:Odd\n192.0.2.7\n127.0.0.2 :127.0.0.2:test\n",
    # Bitmask answers (several lists ORed into the last octet).
    "mask.test:ip4set": ("192.0.2.7 :127.0.0.6:Listed on 2 and 4\n"
                         "192.0.2.8 :127.0.0.2:Listed on 2 only\n" + TEST_POINT),
    # A zone name that carries an access key; the TXT echoes it.
    "k3y.secret.test:ip4set": ":127.0.0.2:Blocked, see k3y.secret.test/lookup\n192.0.2.7\n"
                              + TEST_POINT,
}


@pytest.fixture(scope="module")
def blocklists():
    """A nameserver on 127.0.0.1 answering for ZONES as rbldnsd would."""
    server = DnsAuthority({}, lists=ZONES).start()
    try:
        yield server
    finally:
        server.stop()


def make_gates(tmp_path, port: int, zones_yaml: str, extra: str = "",
               deadline: float = 1.0) -> Gates:
    config = load_test_config(f"""
dns:
  nameservers: [127.0.0.1]
  port: {port}
  timeout: 1.0
dnsbl:
  deadline: {deadline}
  self_test: false
{extra}
  zones:
{zones_yaml}
""", str(tmp_path))
    return Gates.from_config(config)


BL = """\
    - name: bl
      zone: bl.test
      ipv6: true
      codes: [127.0.0.2-127.0.0.11]
"""


def test_ipv4_listing_rejects_with_zone_text(blocklists, tmp_path):
    gates = make_gates(tmp_path, blocklists.port, BL)
    try:
        findings = gates.on_connect(ClientInfo(addr="192.0.2.7"))
        assert len(findings) == 1
        found = findings[0]
        assert found.rule_id == "dnsbl:bl"
        assert found.category == "dnsbl"
        assert found.action == Action.REJECT
        assert (found.reply.code, found.reply.xcode) == ("554", "5.7.1")
        assert found.reply.text == ("Service unavailable; Client host [192.0.2.7] blocked "
                                    "using bl.test; Listed by bl.test, see "
                                    "http://bl.test/q/192.0.2.7")
        assert gates.on_connect(ClientInfo(addr="192.0.2.99")) == []
        stats = gates.stats()["bl"]
        assert (stats["listed"], stats["clean"], stats["unknown"]) == (1, 1, 0)
    finally:
        gates.close()


def test_ipv6_listing_uses_nibbles(blocklists, tmp_path):
    gates = make_gates(tmp_path, blocklists.port, BL)
    try:
        findings = gates.on_connect(ClientInfo(addr="2001:db8:bad::25"))
        assert [f.rule_id for f in findings] == ["dnsbl:bl"]
        assert "IPv6 listed" in findings[0].reply.text
        assert gates.on_connect(ClientInfo(addr="2001:db8:900d::25")) == []
    finally:
        gates.close()


def test_ipv6_not_asked_of_an_ipv4_only_zone(blocklists, tmp_path):
    zones = BL.replace("ipv6: true", "ipv6: false")
    gates = make_gates(tmp_path, blocklists.port, zones)
    try:
        assert gates.on_connect(ClientInfo(addr="2001:db8:bad::25")) == []
        assert gates.stats()["bl"]["queries"] == 0
    finally:
        gates.close()


def test_error_answer_for_everything_never_rejects(blocklists, tmp_path):
    zones = """\
    - name: err
      zone: err.test
      codes: ["127.0.0.2-127.255.255.255"]
"""
    gates = make_gates(tmp_path, blocklists.port, zones)
    try:
        # Even a filter wide enough to cover 127.255.255.254 does not list.
        assert gates.on_connect(ClientInfo(addr="192.0.2.7")) == []
        assert gates.stats()["err"]["unknown"] == 1
        assert gates.stats()["err"]["listed"] == 0
    finally:
        gates.close()


def test_codes_outside_the_configured_set_are_unknown(blocklists, tmp_path):
    zones = """\
    - name: odd
      zone: odd.test
      codes: [127.0.0.2-127.0.0.11]
"""
    gates = make_gates(tmp_path, blocklists.port, zones)
    try:
        results = gates.dnsbl.check("192.0.2.7")
        assert [(r.status, r.codes) for r in results] == [(UNKNOWN, ("127.0.0.99",))]
        assert gates.on_connect(ClientInfo(addr="192.0.2.7")) == []
        assert gates.stats()["odd"]["unknown"] == 2
    finally:
        gates.close()


def test_bitmask_filter_and_per_code_category(blocklists, tmp_path):
    zones = """\
    - name: mask
      zone: mask.test
      codes:
        - {match: "&0x04", category: dnsbl-botnet, action: tempfail}
"""
    gates = make_gates(tmp_path, blocklists.port, zones)
    try:
        findings = gates.on_connect(ClientInfo(addr="192.0.2.7"))
        assert [(f.category, f.action) for f in findings] == [("dnsbl-botnet", Action.TEMPFAIL)]
        # 127.0.0.2 has no 0x04 bit: the answer is not a listing of this filter.
        assert gates.on_connect(ClientInfo(addr="192.0.2.8")) == []
        assert gates.stats()["mask"]["unknown"] == 1
    finally:
        gates.close()


def test_code_ranges_map_to_different_actions(blocklists, tmp_path):
    zones = """\
    - name: bl
      zone: bl.test
      codes:
        - {match: 127.0.0.2, action: reject}
        - {match: 127.0.0.3-127.0.0.11, action: tempfail, category: dialup}
"""
    gates = make_gates(tmp_path, blocklists.port, zones)
    try:
        assert gates.on_connect(ClientInfo(addr="192.0.2.7"))[0].action == Action.REJECT
        dialup = gates.on_connect(ClientInfo(addr="192.0.2.8"))[0]
        assert (dialup.action, dialup.category) == (Action.TEMPFAIL, "dialup")
        assert dialup.reply.text.endswith("Listed as dialup")
    finally:
        gates.close()


WEIGHTED = """\
    - name: bl
      zone: bl.test
      weight: 2
    - name: bl2
      zone: bl2.test
      weight: 2
    - name: wl
      zone: wl.test
      weight: -3
"""


def test_weighted_mode_adds_up_with_allowlist(blocklists, tmp_path):
    gates = make_gates(tmp_path, blocklists.port, WEIGHTED,
                       extra="  mode: weighted\n  threshold: 3")
    try:
        findings = gates.on_connect(ClientInfo(addr="192.0.2.7"))  # bl + bl2 = 4
        assert len(findings) == 1
        assert findings[0].action == Action.REJECT
        assert findings[0].score == 4
        assert findings[0].rule_id in ("dnsbl:bl", "dnsbl:bl2")
        assert "bl:2" in findings[0].detail and "bl2:2" in findings[0].detail
        # bl2 (2) + wl (-3) = -1: below the threshold.
        assert gates.on_connect(ClientInfo(addr="192.0.2.20")) == []
        # One listing alone (2) is below 3 too.
        assert gates.on_connect(ClientInfo(addr="192.0.2.8")) == []
    finally:
        gates.close()


def test_allowlist_zone_in_immediate_mode(blocklists, tmp_path):
    zones = """\
    - name: bl2
      zone: bl2.test
    - name: wl
      zone: wl.test
      action: accept
"""
    gates = make_gates(tmp_path, blocklists.port, zones)
    try:
        assert gates.on_connect(ClientInfo(addr="192.0.2.20")) == []
        assert [f.rule_id for f in gates.on_connect(ClientInfo(addr="192.0.2.7"))] == ["dnsbl:bl2"]
    finally:
        gates.close()


def test_secret_zone_name_is_hidden(blocklists, tmp_path):
    zones = """\
    - name: paid
      zone: k3y.secret.test
      reply_name: our-blocklist
"""
    gates = make_gates(tmp_path, blocklists.port, zones)
    try:
        found = gates.on_connect(ClientInfo(addr="192.0.2.7"))[0]
        assert "k3y" not in found.reply.text.lower()
        assert "k3y" not in found.detail.lower()
        assert "blocked using our-blocklist; Blocked, see our-blocklist/lookup" in found.reply.text
    finally:
        gates.close()


def test_txt_is_sanitised(tmp_path):
    auth = DnsAuthority({
        "7.2.0.192.dirty.test": {"A": ["127.0.0.2"],
                                  "TXT": ['"line one\\013\\010250 fake\\009 100% " "' + "x" * 250 + '"']},
    }).start()
    try:
        gates = make_gates(tmp_path, auth.port, """\
    - name: dirty
      zone: dirty.test
""")
        try:
            reply = gates.on_connect(ClientInfo(addr="192.0.2.7"))[0].reply
        finally:
            gates.close()
    finally:
        auth.stop()
    assert "\r" not in reply.text and "\n" not in reply.text
    assert "line one 250 fake 100%% x" in reply.text
    assert len(reply.text) <= 200


def test_answers_after_the_deadline_are_unknown(tmp_path):
    # The server lists the client, but answers only after 3 s: past the
    # stage's 0.5 s deadline, well within the resolver's 5 s timeout. A
    # checker that waited for the resolver would report both listings.
    late = {"7.2.0.192.bl.test": {"A": ["127.0.0.2"]}, "7.2.0.192.bl2.test": {"A": ["127.0.0.2"]}}
    with DnsAuthority(late, delay=3.0) as auth:
        config = load_test_config(f"""
dns: {{nameservers: [127.0.0.1], port: {auth.port}, timeout: 5.0}}
dnsbl:
  deadline: 0.5
  self_test: false
  zones:
    - {{name: bl, zone: bl.test}}
    - {{name: bl2, zone: bl2.test}}
""", str(tmp_path))
        gates = Gates.from_config(config)
        try:
            results = gates.dnsbl.check("192.0.2.7")
            assert [(r.zone.name, r.status, r.error) for r in results] == \
                [("bl", UNKNOWN, "timeout"), ("bl2", UNKNOWN, "timeout")]
            # Both zones were asked (A only: nothing listed, so no TXT), and
            # neither answer was waited for.
            assert auth.count("7.2.0.192.bl.test", "A") >= 1
            assert auth.count("7.2.0.192.bl2.test", "A") >= 1
            # (The resolver probes, dns.probe_names, ask their own SOA.)
            assert {rdtype for name, rdtype in auth.queries if name.endswith(".test")} == {"A"}
            assert gates.on_connect(ClientInfo(addr="192.0.2.7")) == []
            stats = gates.stats()
            assert (stats["bl"]["unknown"], stats["bl"]["listed"]) == (2, 0)
            assert (stats["bl2"]["unknown"], stats["bl2"]["listed"]) == (2, 0)
        finally:
            gates.close()


def test_silent_zone_does_not_hold_back_the_others(blocklists, tmp_path):
    # One nameserver (like a site's local resolver) that forwards bl.test to
    # the lists server and never answers for slow.test.
    auth = DnsAuthority({}, silent=["slow.test"],
                        forward={"bl.test": ("127.0.0.1", blocklists.port)}).start()
    try:
        gates = make_gates(tmp_path, auth.port, """\
    - {name: bl, zone: bl.test}
    - {name: slow, zone: slow.test}
""", deadline=0.6)
        try:
            results = {r.zone.name: r.status for r in gates.dnsbl.check("192.0.2.7", 0.6)}
            assert results == {"bl": LISTED, "slow": UNKNOWN}
            assert [f.rule_id for f in gates.on_connect(ClientInfo(addr="192.0.2.7"))] == \
                ["dnsbl:bl"]
        finally:
            gates.close()
    finally:
        auth.stop()


def test_self_test_suspends_failing_zone(blocklists, tmp_path):
    zones = """\
    - {name: bl, zone: bl.test, ipv6: true}
    - {name: err, zone: err.test}
    - {name: odd, zone: odd.test}
    - {name: wl, zone: wl.test}
"""
    gates = make_gates(tmp_path, blocklists.port, zones)
    try:
        assert gates.dnsbl.run_self_tests() == {"bl": True, "err": False, "odd": True,
                                                "wl": True}
        statuses = {r.zone.name: r.status for r in gates.dnsbl.check("192.0.2.9")}
        assert statuses == {"bl": CLEAN, "err": SUSPENDED, "odd": CLEAN, "wl": CLEAN}
        assert gates.stats()["err"]["suspended"] == 1
        assert gates.stats()["err"]["self_test_failures"] == 1
    finally:
        gates.close()


def test_ipv6_only_zone_uses_ipv6_test_points(blocklists, tmp_path):
    gates = make_gates(tmp_path, blocklists.port, """\
    - {name: bl6, zone: bl.test, ipv4: false, ipv6: true}
""")
    try:
        assert gates.dnsbl.run_self_tests() == {"bl6": True}
    finally:
        gates.close()


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wait_for(predicate, limit: float = 5.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_periodic_self_test_suspends_and_resumes(tmp_path):
    records: dict[str, dict[str, list[str]]] = {}
    auth = DnsAuthority(records, ttl=1).start()
    clock = FakeClock()
    query = DnsQuery(ResolverSettings(nameservers=("127.0.0.1",), port=auth.port,
                                      timeout=0.5), clock=clock)
    config = load_test_config("dnsbl:\n  zones:\n    - {name: flip, zone: flip.test}\n",
                              str(tmp_path))
    template = DnsblChecker.from_config(config, query, clock)
    checker = DnsblChecker(template.zones, query, deadline=0.5, self_test_interval=600,
                           self_test_poll=0.02, clock=clock)
    try:
        checker.start()
        # The start-up test fails: 127.0.0.2 is not listed.
        assert wait_for(lambda: "flip" in checker.suspended)
        auth.records["2.0.0.127.flip.test"] = {"A": ["127.0.0.2"]}
        time.sleep(0.2)
        assert "flip" in checker.suspended  # not due yet
        clock.now += 601
        assert wait_for(lambda: "flip" not in checker.suspended)
    finally:
        checker.close()
        auth.stop()
    assert checker._thread is None


def test_config_errors_name_file_line_and_field(tmp_path):
    text = """\
dnsbl:
  zones:
    - name: bl
      zone: bl.test
      codes: [127.0.0.2, 127.0.0.300]
"""
    with pytest.raises(ConfigError) as info:
        make_gates_from_text(tmp_path, text)
    err = info.value
    assert err.file.endswith("site.yaml") and err.line == 5 and err.field == "codes"
    assert err.rule == "bl"

    with pytest.raises(ConfigError) as info:
        make_gates_from_text(tmp_path, "dnsbl:\n  mode: sometimes\n")
    assert (info.value.line, info.value.field) == (2, "mode")

    with pytest.raises(ConfigError) as info:
        make_gates_from_text(tmp_path, "dnsbl:\n  zones:\n    - {name: x, zone: x.test, "
                             "reply: '554 4.7.1 mixed classes'}\n")
    assert info.value.field == "reply"

    with pytest.raises(ConfigError) as info:
        make_gates_from_text(tmp_path, "dnsbl:\n  zones:\n    - {name: x, zone: x.test, "
                             "codes: [{match: '&0x04', weight: lots}]}\n")
    assert info.value.field == "weight"


def make_gates_from_text(tmp_path, text: str) -> Gates:
    gates = Gates.from_config(load_test_config(text, str(tmp_path)), start=False)
    gates.close()
    return gates
