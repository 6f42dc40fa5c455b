"""Triplet greylisting: the decision and its SQL store.

Spamware rarely retries after a temporary failure; real MTAs do. A triplet
(client network, normalised sender, recipient) seen for the first time gets
451 4.7.1; a retry after ``delay`` and inside ``retry_window`` passes, and a
passed triplet stays valid for ``lifetime`` (refreshed on use). A client
network that passed ``auto_allowlist_after`` triplets skips greylisting.

Both the milter (session at RCPT, one decision per recipient) and
``milterguard policyd`` call ``Greylist.decide``/``check``, so they share one
store and one set of settings (``settings.py``; what a triplet is made of
and its key: ``triplet_key.py``).

Null sender: greylisted like any other sender by default. Bounces come from
real MTAs, which queue and retry them (RFC 5321 4.5.4.1) so they still arrive
after the delay; letting ``<>`` through would let spamware skip greylisting by
sending with an empty MAIL FROM. ``null_sender: pass`` is there for sites
that prefer bounces without delay.

Storage: SQL kept portable for PostgreSQL (BIGINT key, DOUBLE PRECISION
timestamps, ``ON CONFLICT`` upserts). The triplet's 64-bit hash is the
primary key, so a lookup is one index probe however many millions of
triplets are stored. Threads take a connection from a small pool; SQLite
runs their reads in parallel (WAL) and serialises writes. A lookup of a
known triplet only reads, unless its lifetime is due for a refresh.

Several MX hosts share the triplets when `database:` is a PostgreSQL URL: a
sender refused at one host passes at another after the delay. The store is
then a network service that can fail, so each lookup runs on a worker
thread under ``store.deadline`` (store/health.py; a SQLite file waits at
most that long for its write lock, inline): a database that is down or
slow costs an RCPT at most that, the outcome is ``error``, and mail passes
(``on_store_error: pass``, the default) or is asked to retry (``tempfail``).
After a failure the database is left alone for ``retry_after`` seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from milterguard.clientaddr import IPAddress, in_networks, parse_client_ip
from milterguard.greylist.settings import GreylistSettings
from milterguard.greylist.triplet_key import (client_network, normalize_rcpt, normalize_sender,
                                              sender_domain, triplet_key)
from milterguard.store import db, engines
from milterguard.store.health import DatabaseUnavailable, Deadline, health_of
from milterguard.verdict import Action, Finding, Reply

#: What a store lookup on the SMTP path may raise: an outage or either engine's error.
_STORE_ERRORS: tuple[type[BaseException], ...] = (DatabaseUnavailable, *db.ERRORS)

log = logging.getLogger("milterguard.greylist")

RULE_ID = "greylist"
CATEGORY = "greylist"

#: The triplet and auto-allowlist tables.
GREYLIST_SCHEMA = db.Schema.of("greylist", [
    [
        "CREATE TABLE greylist_triplets ("
        " key BIGINT NOT NULL PRIMARY KEY,"   # signed 64-bit hash of the triplet
        " client_net TEXT NOT NULL,"
        " sender TEXT NOT NULL,"
        " rcpt TEXT NOT NULL,"
        " first_seen DOUBLE PRECISION NOT NULL,"
        " last_seen DOUBLE PRECISION NOT NULL,"
        " passed_at DOUBLE PRECISION,"        # NULL until a retry after the delay
        " expires DOUBLE PRECISION NOT NULL,"
        " attempts INTEGER NOT NULL)",
        # Cleanup deletes by expiry; without this it would scan every row.
        "CREATE INDEX greylist_triplets_expires ON greylist_triplets (expires)",
        "CREATE TABLE greylist_clients ("
        " client_net TEXT NOT NULL PRIMARY KEY,"
        " passed INTEGER NOT NULL,"
        " last_seen DOUBLE PRECISION NOT NULL,"
        " expires DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX greylist_clients_expires ON greylist_clients (expires)",
    ],
])


# ------------------------------------------------------------------ result

#: Outcomes. Only the first two answer 451; the others pass.
GREYLISTED = ("new", "early")
PASSED = ("passed", "known", "auto-allowlisted", "allowlisted", "disabled", "error")


@dataclass
class GreylistResult:
    """One decision, with what the session or policyd logs about it.

    ``outcome``: new (first attempt), early (retry before the delay),
    passed (first retry after the delay: the triplet is now known), known,
    auto-allowlisted, allowlisted (static list; ``detail`` says which),
    disabled, error (the store failed or missed its deadline: greylisting
    fails open, or answers 451 with ``on_store_error: tempfail``).
    """

    outcome: str
    finding: Finding | None = None
    retry_in: int = 0
    client_net: str = ""
    sender: str = ""
    rcpt: str = ""
    detail: str = ""

    @property
    def greylisted(self) -> bool:
        return self.finding is not None

    def log_fields(self) -> str:
        return (f"greylist={self.outcome} net={self.client_net} sender=<{self.sender}>"
                f" rcpt=<{self.rcpt}>" + (f" retry_in={self.retry_in}" if self.retry_in else "")
                + (f" detail={self.detail!r}" if self.detail else ""))


def greylist_reply(retry_in: int) -> Reply:
    return Reply("451", "4.7.1", f"Greylisted, please retry in {retry_in} seconds")


#: ``on_store_error: tempfail``: the store did not answer.
STORE_ERROR_REPLY = Reply("451", "4.7.1", "Greylisting temporarily unavailable, please retry")


# ---------------------------------------------------------------- greylist

class Greylist:
    """Greylisting decisions over the shared store; safe to call from many threads."""

    def __init__(self, settings: GreylistSettings, database: str,
                 clock: Callable[[], float] = time.time, deadline: float = 1.0) -> None:
        self.settings = settings
        self.clock = clock
        self.health = health_of(database)
        if engines.is_url(database):
            # A server can stall a query: it runs on a worker thread, and a
            # statement may run as long as the RCPT waits for it, no longer.
            self.pool = db.ConnectionPool.for_path(database, timeout=max(deadline, 2.0),
                                                   statement_timeout=max(deadline, 0.5))
            self.deadline: Deadline | None = Deadline(deadline)
        else:
            # A local file only ever waits for its write lock, which the
            # busy timeout bounds: run inline, without a thread hop per RCPT
            # (~40 us, 4x a known lookup).
            self.pool = db.ConnectionPool.for_path(database, timeout=deadline)
            self.deadline = None
        self._migrated = False
        # Greylisting off: the database is first touched by a decision (a
        # reload that switches it on, or policyd), so a read-only state dir
        # does not stop a daemon that does not greylist (issue 12, finding 9).
        if settings.enabled:
            try:
                self._migrate()
            except db.ERRORS as exc:
                if not engines.is_unavailable(exc):
                    raise
                # Start without the database: decisions fail open until it is back.
                self.health.failed(exc)
        self._cleanup_lock = threading.Lock()
        self._next_cleanup = clock() + settings.cleanup_interval
        #: Called with every decision's outcome (the daemon's metrics count
        #: them); None costs nothing.
        self.on_outcome: Callable[[str], None] | None = None

    def _migrate(self) -> None:
        if not self._migrated:
            with self.pool.connection() as conn:
                db.migrate(conn, [GREYLIST_SCHEMA])
            self._migrated = True

    @classmethod
    def from_config(cls, config: Any, clock: Callable[[], float] = time.time) -> "Greylist":
        return cls(GreylistSettings.from_section(config.section("greylist")),
                   config.database, clock, config.section("store").duration("deadline", 1.0))

    def close(self) -> None:
        if self.deadline is not None:
            self.deadline.close()
        self.pool.close()

    # -- the session's interface

    def check(self, client_addr: str, sender: str, rcpt: str) -> Finding | None:
        """The milter's RCPT check: a TEMPFAIL finding, or None to pass.

        Does nothing unless ``greylist.enabled`` is true (policyd, which is
        an explicit opt-in, calls ``decide`` directly).
        """
        if not self.settings.enabled:
            return None
        return self.decide(client_addr, sender, rcpt).finding

    def decide(self, client_addr: str, sender: str, rcpt: str) -> GreylistResult:
        """Greylist one recipient; every outcome comes back for logging."""
        result = self._decide(client_addr, sender, rcpt)
        if self.on_outcome is not None:
            self.on_outcome(result.outcome)
        return result

    def _decide(self, client_addr: str, sender: str, rcpt: str) -> GreylistResult:
        s = self.settings
        norm_sender, norm_rcpt = normalize_sender(sender), normalize_rcpt(rcpt)
        ip = parse_client_ip(client_addr)
        if ip is None:
            # A local socket or an unknown address: nothing to group retries by.
            return GreylistResult("allowlisted", sender=norm_sender, rcpt=norm_rcpt,
                                  detail="no client address")
        net = client_network(ip, s.ipv4_prefix, s.ipv6_prefix)
        result = GreylistResult("", client_net=net, sender=norm_sender, rcpt=norm_rcpt)
        reason = self._static_allow(ip, sender, norm_sender, norm_rcpt)
        if reason:
            result.outcome, result.detail = "allowlisted", reason
            return result
        now = self.clock()
        try:
            if not self.health.should_try():
                # Down a moment ago: answer now rather than wait again.
                return self._store_failed(result, self.health.last_error, known=True)
            # On a worker thread, so a database that does not answer costs
            # this RCPT the deadline and no more; the worker fills in its own
            # result, which this thread reads only if it came in time.
            if self.deadline is None:
                stored = self._stored_decision(result, now)
            else:
                stored = self.deadline.run(self._stored_decision, result, now)
        except _STORE_ERRORS as exc:
            return self._store_failed(result, exc)
        self.health.succeeded()
        result = stored
        if result.outcome in GREYLISTED:
            result.finding = Finding(RULE_ID, CATEGORY, Action.TEMPFAIL,
                                     greylist_reply(result.retry_in),
                                     detail=result.log_fields())
        self.maybe_cleanup(now)
        return result

    def _stored_decision(self, template: GreylistResult, now: float) -> GreylistResult:
        res = dataclasses.replace(template)
        try:
            self._migrate()
            with self.pool.connection() as conn:
                self._decide_stored(conn, res, now)
        except db.ERRORS as exc:
            if engines.is_unavailable(exc):
                self.pool.discard_idle()    # all of them died with the server
            raise
        return res

    def _store_failed(self, result: GreylistResult, exc: BaseException | str,
                      known: bool = False) -> GreylistResult:
        """Fail open (or 451 with ``on_store_error: tempfail``): a broken or
        unreachable store must not stop mail. ``known``: the outage was
        already logged, so this RCPT adds no log line."""
        if not known:
            # Only an unreachable or stalled database is an outage; a lock
            # timeout or a broken table fails this RCPT alone.
            if isinstance(exc, DatabaseUnavailable) or (
                    isinstance(exc, BaseException) and engines.is_unavailable(exc)):
                self.health.failed(exc)
            text = exc if isinstance(exc, str) else engines.error_text(exc)
            log.warning("event=greylist-store-error error=%r", text)
        result.outcome, result.detail = "error", "store unavailable"
        if self.settings.on_store_error == "tempfail":
            result.finding = Finding(RULE_ID, CATEGORY, Action.TEMPFAIL, STORE_ERROR_REPLY,
                                     detail=result.log_fields())
        return result

    def _static_allow(self, ip: IPAddress,
                      raw_sender: str, sender: str, rcpt: str) -> str:
        s = self.settings
        if in_networks(ip, s.allow_networks):
            return "network"
        if rcpt in s.allow_recipients or ("@" + rcpt.rpartition("@")[2]) in s.allow_recipients:
            return "recipient"
        if not sender:
            return "null-sender" if s.null_sender == "pass" else ""
        domain = sender_domain(raw_sender)
        if domain and s.allow_sender_domains:
            parts = domain.split(".")
            # "example.com" also allows "mail.example.com".
            if any(".".join(parts[i:]) in s.allow_sender_domains for i in range(len(parts))):
                return "sender-domain"
        return ""

    # -- the store

    def _decide_stored(self, conn: Any, res: GreylistResult, now: float) -> None:
        s = self.settings
        if s.auto_allowlist_after:
            row = conn.execute("SELECT passed, last_seen FROM greylist_clients"
                               " WHERE client_net = ? AND expires > ?",
                               (res.client_net, now)).fetchone()
            if row and row[0] >= s.auto_allowlist_after:
                if now - row[1] >= s.refresh_interval:
                    conn.execute("UPDATE greylist_clients SET last_seen = ?, expires = ?"
                                 " WHERE client_net = ?",
                                 (now, now + s.lifetime, res.client_net))
                res.outcome = "auto-allowlisted"
                return
        key = triplet_key(res.client_net, res.sender, res.rcpt)
        select = ("SELECT first_seen, last_seen, passed_at, expires FROM greylist_triplets"
                  " WHERE key = ?")
        row = conn.execute(select, (key,)).fetchone()
        if row and row[2] is not None and row[3] > now:
            # The common case: a known triplet, read only.
            if now - row[1] >= s.refresh_interval:
                conn.execute("UPDATE greylist_triplets SET last_seen = ?, expires = ?"
                             " WHERE key = ?", (now, now + s.lifetime, key))
            res.outcome = "known"
            return
        with db.transaction(conn):
            engines.lock_key(conn, key)
            # Read again under the write lock: another thread (or host) may
            # have inserted or passed this triplet since.
            row = conn.execute(select, (key,)).fetchone()
            self._write_decision(conn, res, key, row, now)

    def _write_decision(self, conn: Any, res: GreylistResult, key: int,
                        row: tuple[Any, ...] | None, now: float) -> None:
        s = self.settings
        if row is None or row[3] <= now:
            conn.execute(
                "INSERT INTO greylist_triplets (key, client_net, sender, rcpt, first_seen,"
                " last_seen, passed_at, expires, attempts) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, 1)"
                " ON CONFLICT (key) DO UPDATE SET client_net = excluded.client_net,"
                " sender = excluded.sender, rcpt = excluded.rcpt,"
                " first_seen = excluded.first_seen, last_seen = excluded.last_seen,"
                " passed_at = NULL, expires = excluded.expires, attempts = 1",
                (key, res.client_net, res.sender, res.rcpt, now, now,
                 now + s.retry_window))
            res.outcome, res.retry_in = "new", math.ceil(s.delay)
        elif row[2] is not None:
            res.outcome = "known"
        elif now - row[0] < s.delay:
            conn.execute("UPDATE greylist_triplets SET last_seen = ?, attempts = attempts + 1"
                         " WHERE key = ?", (now, key))
            res.outcome, res.retry_in = "early", max(1, math.ceil(row[0] + s.delay - now))
        else:
            conn.execute("UPDATE greylist_triplets SET last_seen = ?, passed_at = ?,"
                         " expires = ?, attempts = attempts + 1 WHERE key = ?",
                         (now, now, now + s.lifetime, key))
            conn.execute(
                "INSERT INTO greylist_clients (client_net, passed, last_seen, expires)"
                " VALUES (?, 1, ?, ?) ON CONFLICT (client_net) DO UPDATE SET"
                " passed = CASE WHEN greylist_clients.expires > excluded.last_seen"
                " THEN greylist_clients.passed + 1 ELSE 1 END,"
                " last_seen = excluded.last_seen, expires = excluded.expires",
                (res.client_net, now, now + s.lifetime))
            res.outcome, res.detail = "passed", f"waited={int(now - row[0])}"

    # -- cleanup

    def maybe_cleanup(self, now: float | None = None) -> None:
        """Start a cleanup in the background when one is due; never waits."""
        now = self.clock() if now is None else now
        if now < self._next_cleanup or not self._cleanup_lock.acquire(blocking=False):
            return
        self._next_cleanup = now + self.settings.cleanup_interval

        def run() -> None:
            try:
                self.cleanup(now)
            except db.ERRORS as exc:
                log.warning("event=greylist-cleanup-error error=%r", engines.error_text(exc))
            finally:
                self._cleanup_lock.release()

        threading.Thread(target=run, name="greylist-cleanup", daemon=True).start()

    def cleanup(self, now: float | None = None, batch: int = 5000) -> int:
        """Delete expired entries in small transactions; returns how many.

        Batches keep each write lock short so RCPT lookups never wait long
        behind a cleanup of millions of rows.
        """
        now = self.clock() if now is None else now
        removed: int = 0
        with self.pool.connection() as conn:
            while True:
                cur = conn.execute(
                    "DELETE FROM greylist_triplets WHERE key IN (SELECT key FROM"
                    " greylist_triplets WHERE expires <= ? LIMIT ?)", (now, batch))
                removed += cur.rowcount
                if cur.rowcount < batch:
                    break
            cur = conn.execute("DELETE FROM greylist_clients WHERE expires <= ?", (now,))
            removed += cur.rowcount
        if removed:
            log.info("event=greylist-cleanup removed=%d", removed)
        return removed

    def stats(self) -> dict[str, int]:
        """Counts for the admin: pending and passed triplets, clients."""
        now = self.clock()
        with self.pool.connection() as conn:
            pending, passed = conn.execute(
                "SELECT SUM(CASE WHEN passed_at IS NULL THEN 1 ELSE 0 END),"
                " SUM(CASE WHEN passed_at IS NULL THEN 0 ELSE 1 END)"
                " FROM greylist_triplets WHERE expires > ?", (now,)).fetchone()
            auto = conn.execute("SELECT COUNT(*) FROM greylist_clients WHERE expires > ?"
                                " AND passed >= ?",
                                (now, self.settings.auto_allowlist_after or 1 << 62)).fetchone()[0]
        return {"pending": pending or 0, "passed": passed or 0, "auto_allowlisted": auto}
