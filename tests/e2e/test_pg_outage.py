"""A PostgreSQL that goes away: mail keeps flowing, hits wait, nothing lost.

Each test here stops and starts its own private server (tests/pgserver.py),
so the run's shared server is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from milterguard.greylist.settings import GreylistSettings
from milterguard.greylist.triplets import Greylist
from milterguard.store import db, engines
from milterguard.store.hits import HITS_SCHEMA, HitStore, count_hits
from milterguard.verdict import Action, Hit

SENDER, RCPT = "news@example.org", "alice@example.com"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def own_server():
    from tests.pgserver import PostgresServer
    server = PostgresServer().start()   # a directory the postgres user can reach
    try:
        yield server
    finally:
        server.remove()


def _hits(n: int, start: int = 0) -> list[Hit]:
    return [Hit("r1", "dnsbl", "connect", Action.REJECT, client_addr="192.0.2.7",
                detail=f"n={start + i}") for i in range(n)]


def test_hits_wait_in_memory_while_the_server_is_down(own_server):
    url = own_server.create_database()
    store = HitStore(url, batch_size=25, retry_max=0.2)
    try:
        store.record(_hits(40))
        assert store.flush(30)
        own_server.stop()
        store.record(_hits(300, start=40))
        assert not store.flush(1.5)            # nowhere to write them
        assert store.backlog == 300 and store.dropped == 0
        assert not store.health.up and store.health.outages == 1
        own_server.start()
        assert store.flush(60)
        assert store.health.up
    finally:
        store.close()
    conn = db.open_database(url, [HITS_SCHEMA])
    try:
        assert count_hits(conn) == 340
        details = {r[0] for r in conn.execute("SELECT detail FROM hits")}
        assert details == {f"n={i}" for i in range(340)}
    finally:
        conn.close()


def test_hits_beyond_the_queue_bound_are_counted_not_blocking(own_server):
    url = own_server.create_database()
    own_server.stop()
    store = HitStore(url, queue_size=100, retry_max=0.2)   # starts while the server is down
    try:
        store.record(_hits(250))
        assert store.dropped == 150 and store.backlog == 100
        own_server.start()
        assert store.flush(60)
    finally:
        store.close()
    conn = db.open_database(url, [HITS_SCHEMA])
    try:
        assert count_hits(conn) == 100
    finally:
        conn.close()


def test_greylist_fails_open_while_the_server_is_down_then_resumes(own_server):
    url = own_server.create_database()
    greylist = Greylist(GreylistSettings(enabled=True), url)
    greylist.health.retry_after = 0.0
    try:
        assert greylist.decide("192.0.2.10", SENDER, RCPT).outcome == "new"
        own_server.stop()
        result = greylist.decide("192.0.2.10", SENDER, RCPT)
        assert result.outcome == "error" and result.finding is None
        assert not greylist.health.up
        own_server.start()
        # The pooled connections died with the server; the next one is new.
        assert greylist.decide("192.0.2.10", SENDER, RCPT).outcome == "early"
        assert greylist.health.up
    finally:
        greylist.close()


def test_greylist_on_store_error_tempfail(free_tcp_port):
    url = f"postgresql://postgres@127.0.0.1:{free_tcp_port}/milterguard"
    greylist = Greylist(GreylistSettings(enabled=True, on_store_error="tempfail"), url)
    try:
        result = greylist.decide("192.0.2.10", SENDER, RCPT)
        assert result.outcome == "error"
        assert result.finding is not None and result.finding.reply.code == "451"
        assert "temporarily unavailable" in result.finding.reply.text
    finally:
        greylist.close()


def test_greylist_answers_at_the_deadline_when_the_database_hangs(pg_url):
    greylist = Greylist(GreylistSettings(enabled=True), pg_url, deadline=0.3)
    greylist.health.retry_after = 0.0
    blocker = engines.connect(pg_url)
    try:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE greylist_triplets IN ACCESS EXCLUSIVE MODE")
        result = greylist.decide("192.0.2.10", SENDER, RCPT)
        assert result.outcome == "error" and result.finding is None
        blocker.execute("ROLLBACK")
        # The late query may still have recorded the first attempt.
        assert greylist.decide("192.0.2.10", SENDER, RCPT).outcome in ("new", "early")
    finally:
        blocker.close()
        greylist.close()


def test_hosts_starting_together_migrate_once(pg_url):
    """Six processes (six hosts) open a fresh database at the same moment."""
    code = ("import sys; from milterguard.store import db;"
            " from milterguard.store.hits import HITS_SCHEMA;"
            " from milterguard.store.bans import BANS_SCHEMA;"
            " db.open_database(sys.argv[1], [HITS_SCHEMA, BANS_SCHEMA]).close()")
    procs = [subprocess.Popen([sys.executable, "-c", code, pg_url], cwd=REPO_ROOT,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    failures = [p.stderr.read() for p in procs if p.wait(120) != 0]
    assert failures == []
    conn = engines.connect(pg_url)
    try:
        assert db.schema_version(conn, "hits") == HITS_SCHEMA.version
        assert conn.execute("SELECT COUNT(*) FROM schema_versions").fetchone()[0] == 2
    finally:
        conn.close()
