"""Ban policy: thresholds, /64 grouping, protected networks, expiry, growth."""

from __future__ import annotations

import pytest

from milterguard.store.bans import BANS_SCHEMA, BanEngine, BanPolicy
from milterguard.config import load_config
from milterguard.errors import MilterguardError
from milterguard.store import db
from milterguard.store.hits import HITS_SCHEMA, insert_hits
from milterguard.verdict import Action, Hit

SITE = """
server:
  addresses: [198.51.100.25]
allowlist:
  networks: [127.0.0.0/8, 203.0.113.0/24, "2001:db8:ffff::/48"]
bans:
  default: {find_time: 10m, max_hits: 3, ban_time: 100s, growth: 2.0, max_ban_time: 300s}
  categories:
    dnsbl: {max_hits: 1}
    content: {enabled: false}
"""


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(tmp_path, database):
    """Every ban test runs on SQLite and on PostgreSQL (``database``)."""
    site = tmp_path / "site.yaml"
    site.write_text(SITE + f'database: "{database}"\n')
    config = load_config(str(site), str(tmp_path))
    conn = db.open_database(config.database, [HITS_SCHEMA, BANS_SCHEMA])
    clock = Clock()
    engine = BanEngine(conn, BanPolicy.from_config(config), clock=clock)
    yield conn, engine, clock
    conn.close()


def add(conn, clock, addr, n, category="helo", action=Action.REJECT, ago=1.0, **kw):
    hits = []
    for i in range(n):
        hit = Hit(f"{category}.rule", category, "helo", action, client_addr=addr,
                  ts=clock.now - ago - i * 0.01, **kw)
        hits.append(hit)
    insert_hits(conn, hits)


def addrs(bans):
    return sorted(b.addr for b in bans)


def test_threshold_per_category(env):
    conn, engine, clock = env
    add(conn, clock, "192.0.2.1", 2)                      # below max_hits 3
    add(conn, clock, "192.0.2.2", 3)
    add(conn, clock, "192.0.2.3", 1, category="dnsbl")    # dnsbl: one is enough
    add(conn, clock, "192.0.2.4", 9, category="content")  # disabled category
    add(conn, clock, "192.0.2.5", 5, ago=3600)            # outside find time
    assert addrs(engine.sync()) == ["192.0.2.2", "192.0.2.3"]
    ban = {b.addr: b for b in engine.active()}["192.0.2.2"]
    assert ban.hit_count == 3 and ban.category == "helo"
    assert ban.expires - clock.now == 100
    assert "helo.rule x3" in ban.reason


def test_what_never_counts(env):
    conn, engine, clock = env
    add(conn, clock, "192.0.2.10", 5, observe=True)
    add(conn, clock, "192.0.2.11", 5, action=Action.ACCEPT)
    add(conn, clock, "192.0.2.12", 5, action=Action.TAG)
    hits = [Hit("r", "helo", "helo", Action.REJECT, client_addr="192.0.2.13", ts=clock.now - 1)
            for _ in range(5)]
    for h in hits:
        h.authenticated = "alice"
    insert_hits(conn, hits)
    add(conn, clock, "198.51.100.25", 5)                  # the server itself
    add(conn, clock, "203.0.113.9", 5)                    # allowlisted
    add(conn, clock, "127.0.0.1", 5)
    add(conn, clock, "2001:db8:ffff:1::7", 5)             # /64 inside an allowlisted /48
    assert engine.sync() == []


def test_ipv6_grouped_by_64(env):
    conn, engine, clock = env
    for i in range(3):
        add(conn, clock, f"2001:db8:1:2::{i + 1}", 1)      # three hosts, one /64
    add(conn, clock, "2001:db8:1:3::1", 2)
    assert addrs(engine.sync()) == ["2001:db8:1:2::/64"]


def test_expiry_requires_new_evidence_and_growth_is_capped(env):
    conn, engine, clock = env
    add(conn, clock, "192.0.2.20", 3)
    assert addrs(engine.sync()) == ["192.0.2.20"]
    clock.now += 101
    assert engine.active() == []
    assert engine.sync() == []              # the same old hits do not ban again
    add(conn, clock, "192.0.2.20", 3)
    second = engine.sync()
    assert addrs(second) == ["192.0.2.20"]
    assert second[0].expires - clock.now == 200 and second[0].ban_count == 2
    for expected in (300, 300):             # 400 and 800 capped at 300
        clock.now += 301
        add(conn, clock, "192.0.2.20", 3)
        ban = engine.sync()[0]
        assert ban.expires - clock.now == expected


def test_manual_add_remove_recorded(env):
    conn, engine, clock = env
    ban = engine.add("192.0.2.30", "phoned us", 60)
    assert ban.manual and addrs(engine.active()) == ["192.0.2.30"]
    with pytest.raises(MilterguardError):
        engine.add("203.0.113.5", "oops", 60)   # allowlisted
    engine.remove("192.0.2.30", "false positive")
    assert engine.active() == []
    events = [(e[1], e[2], e[4]) for e in engine.events("192.0.2.30")]
    assert events == [("192.0.2.30", "add", "phoned us"),
                      ("192.0.2.30", "remove", "false positive")]
    with pytest.raises(MilterguardError):
        engine.remove("192.0.2.31", "not banned")


def test_removed_ban_forgives_old_hits(env):
    conn, engine, clock = env
    add(conn, clock, "192.0.2.40", 3)
    engine.sync()
    clock.now += 1
    engine.remove("192.0.2.40", "customer")
    assert engine.sync() == []


def test_bad_policy_names_file_and_line(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("bans:\n  default:\n    growth: 0.5\n")
    config = load_config(str(site), str(tmp_path))
    with pytest.raises(MilterguardError) as exc:
        BanPolicy.from_config(config)
    assert str(exc.value).startswith(f"{site}:3: field growth: must be a number from 1")
    site.write_text("bans:\n  default:\n    max_hits: 0\n  ipv6_prefix: 8\n")
    with pytest.raises(MilterguardError, match=f"{site}:3: field max_hits: must be an integer"):
        BanPolicy.from_config(load_config(str(site), str(tmp_path)))
    site.write_text("bans:\n  ipv6_prefix: 8\n")
    with pytest.raises(MilterguardError, match=f"{site}:2: field ipv6_prefix"):
        BanPolicy.from_config(load_config(str(site), str(tmp_path)))
    site.write_text("bans:\n  oops: 1\n  categories: [helo]\n")
    with pytest.raises(MilterguardError, match=f"{site}:3: field categories"):
        BanPolicy.from_config(load_config(str(site), str(tmp_path)))
    site.write_text("bans:\n  categories:\n    helo: 5\n")
    with pytest.raises(MilterguardError, match=f"{site}:3: field helo: must be a mapping"):
        BanPolicy.from_config(load_config(str(site), str(tmp_path)))


def test_hits_of_several_hosts_count_together(env, tmp_path, capsys, monkeypatch):
    """Two MX hosts on one database: 2 + 1 hits reach max_hits 3 together,
    the ban names both hosts, and a second host's sync makes no second ban."""
    conn, engine, clock = env
    one = Hit("helo.rule", "helo", "helo", Action.REJECT, client_addr="192.0.2.9",
              ts=clock.now - 1)
    insert_hits(conn, [one, one], host="mx1.example.net")
    insert_hits(conn, [one], host="mx2.example.net")
    new = engine.sync()
    assert addrs(new) == ["192.0.2.9"]
    assert new[0].hit_count == 3 and new[0].hosts == "mx1.example.net,mx2.example.net"
    assert BanEngine(conn, engine.policy, clock=clock).sync() == []
    assert [b.hosts for b in engine.active()] == ["mx1.example.net,mx2.example.net"]

    from milterguard.cli import bans as cmd_bans
    from milterguard.cli.main import main
    monkeypatch.setattr(cmd_bans, "clock", clock)
    assert main(["bans", "list", "-c", str(tmp_path / "site.yaml"),
                 "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "HOSTS" in out.splitlines()[0]
    assert "192.0.2.9" in out and "mx1.example.net,mx2.example.net" in out


# -- only definitive refusals earn bans (issue 12, finding 3) -------------

def _policy_engine(tmp_path, site_text, clock):
    site = tmp_path / "site.yaml"
    site.write_text(site_text)
    config = load_config(str(site), str(tmp_path))
    conn = db.open_database(config.database, [HITS_SCHEMA, BANS_SCHEMA])
    return conn, BanEngine(conn, BanPolicy.from_config(config), clock=clock)


def test_greylisting_one_message_to_six_recipients_earns_no_ban(tmp_path):
    from milterguard.greylist.settings import GreylistSettings
    from milterguard.greylist.triplets import Greylist

    clock = Clock()
    conn, engine = _policy_engine(tmp_path, "allowlist: {networks: []}\n", clock)
    greylist = Greylist(GreylistSettings(enabled=True), str(tmp_path / "grey.db"), clock)
    try:
        hits = []
        for n in range(6):    # first contact, six recipients: six 451s
            finding = greylist.check("192.0.2.50", "news@example.org", f"user{n}@example.com")
            assert finding is not None and finding.action is Action.TEMPFAIL
            hits.append(Hit(finding.rule_id, finding.category, "rcpt", finding.action,
                            client_addr="192.0.2.50", ts=clock.now - 1))
        insert_hits(conn, hits)
    finally:
        greylist.close()
    assert engine.sync() == []
    conn.close()


def test_policyd_greylisted_lines_read_back_by_logscan_earn_no_ban(tmp_path):
    from milterguard.store.logscan import parse_line

    clock = Clock()
    conn, engine = _policy_engine(tmp_path, "allowlist: {networks: []}\n", clock)
    line = ("Mar 10 11:59:0{n} mx postfix/smtpd[4101]: NOQUEUE: reject: RCPT from "
            "unknown[192.0.2.51]: 450 4.2.0 <b{n}@example.com>: Recipient address rejected: "
            "Greylisted, please retry in 300 seconds; from=<a@example.net> to=<b{n}@example.com>"
            " proto=ESMTP helo=<host.example.net>")
    hits = [parse_line(line.format(n=n), now=clock.now) for n in range(8)]
    assert all(h is not None and h.action is Action.TEMPFAIL for h in hits)
    insert_hits(conn, hits)
    # The log lines carry their own date: move them into the find time.
    conn.execute("UPDATE hits SET ts = ?", (clock.now - 1,))
    assert engine.sync() == []
    conn.close()


def test_dns_failure_tempfails_earn_no_ban_but_rejects_do(tmp_path):
    clock = Clock()
    conn, engine = _policy_engine(tmp_path, "allowlist: {networks: []}\n", clock)
    # Our resolver down: six retries answered 450 helo:unknown.
    insert_hits(conn, [Hit("helo:unknown", "helo", "helo", Action.TEMPFAIL,
                           client_addr="192.0.2.52", ts=clock.now - 1 - i) for i in range(6)])
    insert_hits(conn, [Hit("helo:non-fqdn", "helo", "helo", Action.REJECT,
                           client_addr="192.0.2.53", ts=clock.now - 1 - i) for i in range(6)])
    assert addrs(engine.sync()) == ["192.0.2.53"]
    conn.close()


def test_count_actions_per_category(tmp_path):
    clock = Clock()
    conn, engine = _policy_engine(tmp_path, """
allowlist: {networks: []}
bans:
  categories:
    relay: {max_hits: 2, count_actions: [reject, tempfail]}
""", clock)
    for addr, category in (("192.0.2.60", "relay"), ("192.0.2.61", "helo")):
        insert_hits(conn, [Hit("r", category, "rcpt", Action.TEMPFAIL, client_addr=addr,
                               ts=clock.now - 1 - i) for i in range(6)])
    assert addrs(engine.sync()) == ["192.0.2.60"]
    conn.close()


def test_bad_count_actions_names_the_field(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("bans:\n  categories:\n    relay: {count_actions: [reject, bounce]}\n")
    with pytest.raises(MilterguardError, match=r"site.yaml:3.*count_actions"):
        BanPolicy.from_config(load_config(str(site), str(tmp_path)))
