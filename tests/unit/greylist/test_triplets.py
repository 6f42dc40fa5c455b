"""Greylisting policy and store, with an injected clock (no sleeping)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from milterguard.config import load_config
from milterguard.greylist.settings import GreylistSettings
from milterguard.greylist.triplets import Greylist
from milterguard.verdict import Action

SENDER = "news@example.org"
RCPT = "alice@example.com"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(database: str, clock: Clock, **over) -> Greylist:
    """A greylist on ``database``: the ``database`` fixture runs each test
    that takes it on SQLite and on PostgreSQL."""
    settings = GreylistSettings(enabled=True, **over)
    return Greylist(settings, database, clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gl(database, clock):
    greylist = make(database, clock)
    yield greylist
    greylist.close()


def test_first_attempt_and_early_retry_are_tempfailed(gl, clock):
    finding = gl.check("192.0.2.10", SENDER, RCPT)
    assert finding is not None
    assert finding.action is Action.TEMPFAIL
    assert (finding.rule_id, finding.category) == ("greylist", "greylist")
    assert str(finding.reply) == "451 4.7.1 Greylisted, please retry in 300 seconds"
    clock.advance(120)
    early = gl.decide("192.0.2.10", SENDER, RCPT)
    assert early.outcome == "early"
    assert early.finding is not None
    assert str(early.finding.reply) == "451 4.7.1 Greylisted, please retry in 180 seconds"


def test_retry_after_delay_passes_and_stays_known(gl, clock):
    assert gl.decide("192.0.2.10", SENDER, RCPT).outcome == "new"
    clock.advance(301)
    passed = gl.decide("192.0.2.10", SENDER, RCPT)
    assert passed.outcome == "passed" and passed.finding is None
    clock.advance(10 * 86400)
    assert gl.decide("192.0.2.10", SENDER, RCPT).outcome == "known"
    assert gl.check("192.0.2.10", SENDER, RCPT) is None


def test_retry_after_window_starts_over(gl, clock):
    gl.decide("192.0.2.10", SENDER, RCPT)
    clock.advance(2 * 86400 + 1)
    assert gl.decide("192.0.2.10", SENDER, RCPT).outcome == "new"


def test_decisions_are_per_recipient(gl, clock):
    gl.decide("192.0.2.10", SENDER, RCPT)
    clock.advance(400)
    assert gl.decide("192.0.2.10", SENDER, RCPT).outcome == "passed"
    assert gl.decide("192.0.2.10", SENDER, "bob@example.com").outcome == "new"


def test_pool_sender_retrying_from_same_slash24_passes(gl, clock):
    assert gl.decide("198.51.100.7", SENDER, RCPT).outcome == "new"
    clock.advance(600)
    assert gl.decide("198.51.100.200", SENDER, RCPT).outcome == "passed"
    # Another /24 is another client.
    assert gl.decide("198.51.101.7", SENDER, RCPT).outcome == "new"


def test_ipv6_grouped_by_slash64(gl, clock):
    gl.decide("2001:db8:1:2::25", SENDER, RCPT)
    clock.advance(600)
    assert gl.decide("2001:db8:1:2:ffff::1", SENDER, RCPT).outcome == "passed"
    assert gl.decide("2001:db8:1:3::25", SENDER, RCPT).outcome == "new"


def test_expired_entry_greylists_again(gl, clock):
    gl.decide("192.0.2.10", SENDER, RCPT)
    clock.advance(301)
    assert gl.decide("192.0.2.10", SENDER, RCPT).outcome == "passed"
    clock.advance(35 * 86400 + 1)
    assert gl.decide("192.0.2.10", SENDER, RCPT).outcome == "new"


def test_lifetime_refreshed_on_use(gl, clock):
    gl.decide("192.0.2.10", SENDER, RCPT)
    clock.advance(301)
    gl.decide("192.0.2.10", SENDER, RCPT)
    for _ in range(3):  # used every 30 days: never expires
        clock.advance(30 * 86400)
        assert gl.decide("192.0.2.10", SENDER, RCPT).outcome == "known"


def test_auto_allowlist_after_n_passed_triplets(gl, clock):
    client = "203.0.113.5"
    for i in range(5):
        assert gl.decide(client, SENDER, f"user{i}@example.com").outcome == "new"
    clock.advance(301)
    for i in range(5):
        assert gl.decide(client, SENDER, f"user{i}@example.com").outcome == "passed"
    fresh = gl.decide("203.0.113.99", "someone@example.net", "new@example.com")
    assert fresh.outcome == "auto-allowlisted" and fresh.finding is None
    assert gl.stats()["auto_allowlisted"] == 1
    # Four passes are not enough for another network.
    for i in range(4):
        gl.decide("192.0.2.1", SENDER, f"user{i}@example.com")
    clock.advance(301)
    for i in range(4):
        gl.decide("192.0.2.1", SENDER, f"user{i}@example.com")
    assert gl.decide("192.0.2.1", SENDER, "other@example.com").outcome == "new"


def test_auto_allowlist_can_be_off(database, clock):
    gl = make(database, clock, auto_allowlist_after=0)
    try:
        for i in range(8):
            gl.decide("203.0.113.5", SENDER, f"u{i}@example.com")
        clock.advance(301)
        for i in range(8):
            gl.decide("203.0.113.5", SENDER, f"u{i}@example.com")
        assert gl.decide("203.0.113.5", SENDER, "x@example.com").outcome == "new"
    finally:
        gl.close()


def test_static_allowlists(database, clock):
    import ipaddress
    gl = make(database, clock,
              allow_networks=(ipaddress.ip_network("192.0.2.0/28"),),
              allow_sender_domains=frozenset({"example.net"}),
              allow_recipients=frozenset({"postmaster@example.com", "@example.org"}))
    try:
        assert gl.decide("192.0.2.3", SENDER, RCPT).detail == "network"
        assert gl.decide("192.0.2.30", SENDER, RCPT).outcome == "new"
        assert gl.decide("198.51.100.1", "a@mail.example.net", RCPT).detail == "sender-domain"
        assert gl.decide("198.51.100.1", "a@notexample.net", RCPT).outcome == "new"
        assert gl.decide("198.51.100.1", SENDER, "<PostMaster@Example.com>").detail == "recipient"
        assert gl.decide("198.51.100.1", SENDER, "anyone@example.org").detail == "recipient"
    finally:
        gl.close()


def test_null_sender_is_greylisted_by_default_then_passes(gl, clock):
    assert gl.decide("192.0.2.10", "<>", RCPT).outcome == "new"
    clock.advance(301)
    assert gl.decide("192.0.2.10", "", RCPT).outcome == "passed"


def test_null_sender_pass_option(database, clock):
    gl = make(database, clock, null_sender="pass")
    try:
        result = gl.decide("192.0.2.10", "<>", RCPT)
        assert (result.outcome, result.detail) == ("allowlisted", "null-sender")
    finally:
        gl.close()


def test_disabled_check_passes_everything(database, clock):
    gl = Greylist(GreylistSettings(enabled=False), database, clock)
    try:
        assert gl.check("192.0.2.10", SENDER, RCPT) is None
    finally:
        gl.close()


def test_local_client_passes(gl):
    assert gl.decide("", SENDER, RCPT).outcome == "allowlisted"


def test_store_error_fails_open(gl, clock):
    with gl.pool.connection() as conn:
        conn.execute("DROP TABLE greylist_triplets")
    result = gl.decide("192.0.2.10", SENDER, RCPT)
    assert result.outcome == "error" and result.finding is None


def test_cleanup_removes_only_expired(gl, clock):
    gl.decide("192.0.2.10", SENDER, RCPT)          # pending, expires after 2 days
    gl.decide("192.0.2.10", SENDER, "b@example.com")
    clock.advance(301)
    gl.decide("192.0.2.10", SENDER, "b@example.com")  # passed, lives 35 days
    clock.advance(3 * 86400)
    assert gl.cleanup() == 1
    assert gl.stats() == {"pending": 0, "passed": 1, "auto_allowlisted": 0}


def test_periodic_cleanup_runs_in_background(database, clock):
    gl = make(database, clock, cleanup_interval=60.0)
    try:
        gl.decide("192.0.2.10", SENDER, RCPT)
        clock.advance(3 * 86400)
        gl.maybe_cleanup()
        with gl._cleanup_lock:  # waits for the background run to finish
            pass
        with gl.pool.connection() as conn:
            assert conn.execute("SELECT COUNT(*) FROM greylist_triplets").fetchone()[0] == 0
    finally:
        gl.close()


def test_concurrent_first_attempts_make_one_entry(gl, clock):
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            outcome = gl.decide("192.0.2.10", SENDER, RCPT).outcome
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("new") == 1
    assert results.count("early") == 119
    with gl.pool.connection() as conn:
        assert conn.execute("SELECT attempts FROM greylist_triplets").fetchone()[0] == 120


def test_state_shared_between_instances(database, clock):
    """The milter and policyd open the same database."""
    a, b = make(database, clock), make(database, clock)
    try:
        a.decide("192.0.2.10", SENDER, RCPT)
        clock.advance(301)
        assert b.decide("192.0.2.10", SENDER, RCPT).outcome == "passed"
    finally:
        a.close()
        b.close()


def test_normalised_variants_share_a_triplet(gl, clock):
    """Next month's newsletter with a new bounce id is not greylisted again."""
    gl.decide("192.0.2.10", "bounce-1001-alice=example.com@lists.example.org", RCPT)
    clock.advance(301)
    assert gl.decide("192.0.2.10", "bounce-2002-alice=example.com@lists.example.org",
                     RCPT).outcome == "passed"
    assert gl.decide("192.0.2.10", "prvs=0042abcdef=bounce-3003@lists.example.org",
                     RCPT).outcome == "known"


def test_from_config_uses_project_database(tmp_path, clock):
    site = tmp_path / "site.yaml"
    site.write_text("greylist:\n  enabled: true\n  delay: 2s\n")
    gl = Greylist.from_config(load_config(str(site), str(tmp_path / "state")), clock)
    try:
        assert gl.check("192.0.2.10", SENDER, RCPT).reply.text.endswith("retry in 2 seconds")
        conn = sqlite3.connect(str(tmp_path / "state" / "milterguard.db"))
        assert conn.execute("SELECT COUNT(*) FROM greylist_triplets").fetchone()[0] == 1
        conn.close()
    finally:
        gl.close()
