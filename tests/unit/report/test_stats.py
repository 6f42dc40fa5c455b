"""Stats over the hits store: vectors, latest reason per address, empty and old stores."""

from __future__ import annotations

import json
import os

import pytest

from milterguard.cli import main as cli
from milterguard.cli import stats as cmd_stats
from milterguard.store import db
from milterguard.report import stats
from milterguard.store.bans import BANS_SCHEMA
from milterguard.store.hits import HITS_SCHEMA, insert_hits
from milterguard.verdict import Action, Hit

NOW = 1_800_000_000.0


def hit(addr: str, rule: str, category: str, stage: str, ts: float,
        observe: bool = False, action: Action = Action.REJECT, helo: str = "h.example") -> Hit:
    return Hit(rule_id=rule, category=category, stage=stage, action=action,
               client_addr=addr, helo=helo, ts=ts, observe=observe)


@pytest.fixture
def conn(database):
    """Each stats test runs on SQLite and on PostgreSQL."""
    c = db.open_database(database, [HITS_SCHEMA, BANS_SCHEMA])
    yield c
    c.close()


def test_vector_mapping():
    assert stats.vector_of("connect", "dnsbl") == "dnsbl"
    assert stats.vector_of("connect", "spamhaus", "milter", "dnsbl:zen") == "dnsbl"
    assert stats.vector_of("helo", "bad-helo") == "helo"
    assert stats.vector_of("rcpt", "greylist") == "greylist"
    assert stats.vector_of("mail", "bad-sender") == "envelope"
    assert stats.vector_of("eoh", "pharmacy") == "header"
    assert stats.vector_of("eom", "pharmacy") == "body"
    assert stats.vector_of("connect", "probe", "logscan", "firewall.probe") == "firewall"
    assert stats.vector_of("rcpt", "relay", "logscan") == "envelope"
    assert stats.vector_of("rcpt", "postfix", "logscan", "postfix.reject") == "mta"
    assert stats.vector_of("auth", "sasl", "logscan") == "auth"
    assert stats.vector_of("weird", "x") == "other"


def test_empty_store(conn):
    st = stats.compute_stats(conn, 0, clock=lambda: NOW, rule_ids=["a", "b"])
    assert st.total_hits == 0 and st.total_addresses == 0 and st.rows == []
    assert st.never_fired == ["a", "b"]
    assert st.firewall["active_bans"] == 0
    assert "(no hits)" in stats.format_table(st)
    starts, series = stats.hits_over_time(conn, 0, NOW)
    assert len(starts) == 48 and series == {}


def test_latest_reason_counts_address_once(conn):
    insert_hits(conn, [
        # 192.0.2.1 failed HELO, later hit a DNSBL: counts once, as dnsbl.
        hit("192.0.2.1", "helo:non-fqdn", "bad-helo", "helo", NOW - 500),
        hit("192.0.2.1", "dnsbl:zen", "dnsbl", "connect", NOW - 100),
        # 192.0.2.2: one message with two hits at the same time; the later
        # stage (recorded last) is the reason.
        hit("192.0.2.2", "hdr-no-message-id", "header-structure", "eoh", NOW - 50),
        hit("192.0.2.2", "gtube", "gtube", "eom", NOW - 50),
        hit("192.0.2.3", "helo:non-fqdn", "bad-helo", "helo", NOW - 40),
        hit("192.0.2.4", "helo:non-fqdn", "bad-helo", "helo", NOW - 30),
        # observe-mode hits are no incidents
        hit("192.0.2.5", "trial-rule", "pharmacy", "eom", NOW - 20, observe=True),
        # old, outside --since 1h
        hit("192.0.2.6", "dnsbl:zen", "dnsbl", "connect", NOW - 7200),
    ])
    st = stats.compute_stats(conn, NOW - 3600, clock=lambda: NOW,
                             rule_ids=["gtube", "never", "trial-rule", "helo:non-fqdn"],
                             observe_rule_ids=["trial-rule", "other-trial"])
    rows = {(r.vector, r.category): r for r in st.rows}
    assert st.total_addresses == 4 and st.total_hits == 6
    assert rows[("helo", "bad-helo")].addresses == 2
    assert rows[("helo", "bad-helo")].address_pct == 50.0
    assert rows[("helo", "bad-helo")].hits == 3
    assert rows[("helo", "bad-helo")].hit_pct == 50.0
    assert rows[("dnsbl", "dnsbl")].addresses == 1
    assert rows[("dnsbl", "dnsbl")].address_pct == 25.0
    assert rows[("body", "gtube")].addresses == 1
    assert rows[("header", "header-structure")].addresses == 0
    assert rows[("header", "header-structure")].hits == 1
    assert st.rows[0].vector == "helo"          # sorted by addresses
    assert st.vectors["helo"]["address_pct"] == 50.0
    assert st.top_addresses[0] == {"addr": "192.0.2.1", "hits": 2, "last_seen": NOW - 100} \
        or st.top_addresses[0]["addr"] == "192.0.2.2"
    assert {a["addr"] for a in st.top_addresses[:2]} == {"192.0.2.1", "192.0.2.2"}
    assert st.top_rules[0]["rule"] == "helo:non-fqdn" and st.top_rules[0]["hits"] == 3
    assert st.never_fired == ["never"]
    assert st.observe_hits == [{"rule": "trial-rule", "hits": 1},
                               {"rule": "other-trial", "hits": 0}]
    json.dumps(st.as_json())


def test_firewall_blocks(conn):
    insert_hits(conn, [hit("203.0.113.9", "firewall.probe", "probe", "connect", NOW - 10)],
                source="logscan")
    conn.execute("INSERT INTO bans (addr, category, reason, created, expires)"
                 " VALUES ('203.0.113.9', 'probe', 'x', ?, ?)", (NOW - 60, NOW + 60))
    conn.execute("INSERT INTO bans (addr, category, reason, created, expires)"
                 " VALUES ('203.0.113.10', 'probe', 'x', ?, ?)", (NOW - 600, NOW - 60))
    st = stats.compute_stats(conn, 0, clock=lambda: NOW)
    assert st.firewall["active_bans"] == 1
    assert st.firewall["logscan_hits"] == 1
    assert st.firewall["logscan_rules"] == {"firewall.probe": 1}
    assert st.rows[0].vector == "firewall"


def test_hits_over_time(conn):
    insert_hits(conn, [hit("192.0.2.1", "gtube", "gtube", "eom", NOW - 3600 + 1),
                       hit("192.0.2.1", "gtube", "gtube", "eom", NOW - 10),
                       hit("192.0.2.2", "dnsbl:z", "dnsbl", "connect", NOW - 10),
                       hit("192.0.2.2", "obs", "x", "eom", NOW - 10, observe=True)])
    starts, series = stats.hits_over_time(conn, NOW - 3600, NOW, buckets=4)
    assert starts[0] == NOW - 3600 and len(starts) == 4
    assert series == {"gtube": [1, 0, 0, 1], "dnsbl": [0, 0, 0, 1]}


def test_old_store_is_migrated(tmp_path):
    """A store as migration 1 left it gets the later columns and indexes."""
    path = str(tmp_path / "old.db")
    c = db.connect(path)
    c.execute("CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    for stmt in HITS_SCHEMA.migrations[0]:
        c.execute(stmt)
    c.execute("INSERT INTO schema_versions VALUES ('hits', 1)")
    c.execute("INSERT INTO hits (ts, client_addr, stage, rule_id, category, action)"
              " VALUES (?, '192.0.2.8', 'connect', 'dnsbl:zen', 'dnsbl', 'reject')", (NOW,))
    c.close()
    c = db.open_database(path, [HITS_SCHEMA, BANS_SCHEMA])
    try:
        st = stats.compute_stats(c, 0, clock=lambda: NOW)
        assert st.total_addresses == 1 and st.rows[0].vector == "dnsbl"
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"hits_combo", "hits_addr_obs_ts"} <= names
    finally:
        c.close()


def _plan(conn, sql, *params):
    return " ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_queries_use_covering_indexes(tmp_path):
    """No statistics (no ANALYZE), as on a store nobody tuned: still no row reads.
    (SQLite's plans; PostgreSQL plans by its own statistics.)"""
    conn = db.open_database(str(tmp_path / "m.db"), [HITS_SCHEMA, BANS_SCHEMA])
    plan = _plan(conn, stats.COMBO_SQL, 0)
    assert "COVERING INDEX hits_combo" in plan and "TEMP B-TREE" not in plan
    plan = _plan(conn, stats.TOP_ADDRESSES_SQL, 0, 10)
    assert "COVERING INDEX hits_addr_obs_ts" in plan and "GROUP BY" not in plan
    plan = _plan(conn, stats.LATEST_SQL, 0)
    assert "SCAN hits USING COVERING INDEX hits_addr_obs_ts" in plan
    assert "SEARCH h2 USING COVERING INDEX hits_addr_obs_ts" in plan
    assert "SEARCH h USING INTEGER PRIMARY KEY" in plan


def test_cli_stats_json_and_table(tmp_path, capsys, monkeypatch):
    state = str(tmp_path / "state")
    os.makedirs(state)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rules: {site: []}\n")
    c = db.open_database(os.path.join(state, "milterguard.db"), [HITS_SCHEMA])
    insert_hits(c, [hit("192.0.2.1", "gtube", "gtube", "eom", NOW - 10)])
    c.close()
    monkeypatch.setattr(cmd_stats, "clock", lambda: NOW)
    assert cli.main(["stats", "-c", str(cfg), "--state-dir", state, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_addresses"] == 1 and data["rows"][0]["vector"] == "body"
    assert "gtube" not in data["never_fired"] and len(data["never_fired"]) > 5
    assert cli.main(["stats", "-c", str(cfg), "--state-dir", state, "--since", "all"]) == 0
    out = capsys.readouterr().out
    assert "VECTOR" in out and "body" in out and "100.0%" in out
