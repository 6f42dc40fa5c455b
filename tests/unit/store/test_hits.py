"""HitStore: batching writer, schema upgrade in place, locked database."""

from __future__ import annotations

import sqlite3
import time

from milterguard.store import db
from milterguard.store.hits import HITS_SCHEMA, HitStore, count_hits
from milterguard.verdict import Action, Hit


def _hits(n: int, addr: str = "192.0.2.7", **kw) -> list[Hit]:
    return [Hit(rule_id="r1", category="dnsbl", stage="connect", action=Action.REJECT,
                client_addr=addr, recipients=("a@example.com", "b@example.com"),
                detail=f"n={i}", **kw) for i in range(n)]


def test_record_flush_close_writes_every_field(database):
    path = database
    store = HitStore(path, batch_size=7)
    store.record(_hits(20, observe=True, queue_id="4AB12C"))
    assert store.flush(10)
    assert store.close()
    conn = db.open_database(path, [HITS_SCHEMA])
    assert count_hits(conn) == 20
    row = conn.execute("SELECT client_addr, recipients, stage, rule_id, category, action,"
                       " queue_id, observe, source FROM hits LIMIT 1").fetchone()
    assert row == ("192.0.2.7", "a@example.com b@example.com", "connect", "r1", "dnsbl",
                   "reject", "4AB12C", 1, "milter")


def test_v1_database_upgrades_in_place_with_its_data(tmp_path):
    path = str(tmp_path / "old.db")
    conn = db.connect(path)
    conn.execute("CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    for stmt in HITS_SCHEMA.migrations[0]:       # the schema as shipped in version 1
        conn.execute(stmt)
    conn.execute("INSERT INTO schema_versions VALUES ('hits', 1)")
    conn.execute("INSERT INTO hits (ts, client_addr, rule_id, category, action)"
                 " VALUES (1000.0, '198.51.100.4', 'old-rule', 'helo', 'reject')")
    conn.close()

    store = HitStore(path)
    hit = _hits(1)[0]
    hit.authenticated = "alice"   # read when a Hit carries the SASL login
    store.record([hit])
    assert store.close()
    conn = db.open_database(path, [HITS_SCHEMA])
    assert db.schema_version(conn, "hits") == HITS_SCHEMA.version >= 2
    rows = conn.execute("SELECT client_addr, rule_id, score, authenticated, source FROM hits"
                        " ORDER BY ts").fetchall()
    assert rows[0] == ("198.51.100.4", "old-rule", 0.0, "", "milter")
    assert rows[1][0] == "192.0.2.7" and rows[1][3] == "alice"


def test_locked_database_during_burst_loses_no_hit(tmp_path):
    path = str(tmp_path / "m.db")
    store = HitStore(path, batch_size=50, lock_timeout=0.05, retry_max=0.2)
    locker = sqlite3.connect(path, isolation_level=None, timeout=1)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        for _ in range(20):                      # a burst from many "sessions"
            store.record(_hits(50))
        assert time.monotonic() - started < 1.0  # record() did not wait on the lock
        assert not store.flush(0.5)              # nothing can be written yet
        assert store.retries > 0
        assert store.backlog == 1000
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert store.flush(15)
    assert store.close()
    assert store.dropped == 0
    assert count_hits(db.open_database(path, [HITS_SCHEMA])) == 1000


def test_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    path = str(tmp_path / "m.db")
    store = HitStore(path, queue_size=10, lock_timeout=0.05)
    locker = sqlite3.connect(path, isolation_level=None, timeout=1)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        store.record(_hits(200))
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert store.close()
    assert store.dropped > 0
    assert count_hits(db.open_database(path, [HITS_SCHEMA])) == 200 - store.dropped


def test_prune_by_retention(database):
    path = database
    now = 1_700_000_000.0
    store = HitStore(path, retention=86400, clock=lambda: now, prune_interval=1e9)
    store.record([Hit("r", "c", "rcpt", Action.REJECT, client_addr="192.0.2.1", ts=now - 2 * 86400),
                  Hit("r", "c", "rcpt", Action.REJECT, client_addr="192.0.2.2", ts=now - 60)])
    assert store.flush()
    assert store.prune() == 1
    store.close()
    assert [r[0] for r in db.open_database(path, [HITS_SCHEMA]).execute("SELECT client_addr FROM hits")] == ["192.0.2.2"]
