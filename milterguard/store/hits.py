"""The hits store: one row per finding, written off the SMTP path.

The milter's callback threads call ``HitStore.record()``, which only puts
the hits on a bounded in-memory queue. One writer thread drains the queue
in batches (one transaction per batch). When the database is locked or
unavailable the writer keeps the batch and retries with a growing pause,
so a busy ``bans sync`` or a backup holding a lock loses no hit; only a
full queue (the database unavailable for a long time under load) drops
hits, and those are counted and logged.

The schema is plain portable SQL, the same on SQLite and PostgreSQL. With
PostgreSQL a server outage or restart is just a long "unavailable": the
queue holds up to ``store.queue_size`` hits, the outage is logged once and
exported (store/health.py), and the writer empties the queue when the
server is back. Each hit carries the name of the host that recorded it
(``server.hostname``), so hits from several MX hosts stay apart.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Iterable

from milterguard.store import db, engines
from milterguard.store.health import health_of
from milterguard.verdict import Hit

log = logging.getLogger("milterguard.store")

#: Column order used for inserts; ``source`` says who recorded the hit
#: (the milter, or logscan reading what Postfix or the kernel rejected).
#: ``host`` names the MX host that recorded it (several share a PostgreSQL).
HIT_COLUMNS = ("ts", "client_addr", "helo", "sender", "recipients", "stage",
               "rule_id", "category", "action", "queue_id", "observe", "detail",
               "score", "authenticated", "source", "host")

# Append-only. Migration 1 is the first shipped schema; migration 2 added
# score, the SASL login of authenticated clients (so bans can skip them)
# and the source of each hit. Migration 3 added two covering indexes for stats.
# Migration 4 added the recording host (hits from several MX hosts in one
# PostgreSQL; '' for hits recorded before).
#: The hits table. Open a database that records or reads hits with it.
HITS_SCHEMA = db.Schema.of("hits", [
    [
        "CREATE TABLE hits ("
        " id INTEGER PRIMARY KEY,"
        " ts REAL NOT NULL,"
        " client_addr VARCHAR(64) NOT NULL DEFAULT '',"
        " helo VARCHAR(255) NOT NULL DEFAULT '',"
        " sender VARCHAR(512) NOT NULL DEFAULT '',"
        " recipients TEXT NOT NULL DEFAULT '',"
        " stage VARCHAR(16) NOT NULL DEFAULT '',"
        " rule_id VARCHAR(128) NOT NULL DEFAULT '',"
        " category VARCHAR(64) NOT NULL DEFAULT '',"
        " action VARCHAR(16) NOT NULL DEFAULT '',"
        " queue_id VARCHAR(32) NOT NULL DEFAULT '',"
        " observe INTEGER NOT NULL DEFAULT 0,"
        " detail TEXT NOT NULL DEFAULT '')",
        "CREATE INDEX hits_ts ON hits (ts)",
        "CREATE INDEX hits_addr_ts ON hits (client_addr, ts)",
        "CREATE INDEX hits_category_ts ON hits (category, ts)",
    ],
    [
        "ALTER TABLE hits ADD COLUMN score REAL NOT NULL DEFAULT 0",
        "ALTER TABLE hits ADD COLUMN authenticated VARCHAR(255) NOT NULL DEFAULT ''",
        "ALTER TABLE hits ADD COLUMN source VARCHAR(16) NOT NULL DEFAULT 'milter'",
    ],
    [
        # For stats (stats.py) on millions of rows: per-rule counts walk
        # hits_combo in GROUP BY order without sorting, and "latest reason
        # per address" / top addresses walk hits_addr_obs_ts; both cover
        # their queries, so no row is read.
        "CREATE INDEX hits_combo ON hits (observe, source, stage, category, rule_id, ts)",
        "CREATE INDEX hits_addr_obs_ts ON hits (client_addr, observe, ts)",
    ],
    [
        "ALTER TABLE hits ADD COLUMN host VARCHAR(255) NOT NULL DEFAULT ''",
    ],
])

#: Seconds one batch may take on PostgreSQL before the writer gives up on it.
WRITE_TIMEOUT = 30.0

_INSERT = ("INSERT INTO hits (" + ", ".join(HIT_COLUMNS) + ") VALUES ("
           + ", ".join("?" for _ in HIT_COLUMNS) + ")")


def hit_row(hit: Hit, source: str = "milter", host: str = "") -> tuple[Any, ...]:
    """The row for one hit. ``authenticated`` is read if the Hit has it."""
    action = getattr(hit.action, "value", hit.action)
    return (float(hit.ts), hit.client_addr or "", hit.helo or "", hit.sender or "",
            " ".join(hit.recipients), hit.stage or "", hit.rule_id or "",
            hit.category or "", str(action), hit.queue_id or "",
            1 if hit.observe else 0, hit.detail or "", float(hit.score or 0.0),
            str(getattr(hit, "authenticated", "") or ""),
            str(getattr(hit, "source", "") or source), host)


def insert_hits(conn: Any, hits: Iterable[Hit], source: str = "milter",
                host: str = "") -> int:
    """Write hits in one transaction (for the writer thread and for logscan)."""
    rows = [hit_row(h, source, host) for h in hits]
    if not rows:
        return 0
    with db.transaction(conn):
        conn.executemany(_INSERT, rows)
    return len(rows)


def prune_hits(conn: Any, before: float) -> int:
    """Delete hits older than ``before`` (a Unix time); returns the count."""
    cur = conn.execute("DELETE FROM hits WHERE ts < ?", (before,))
    return cur.rowcount if cur.rowcount is not None else 0


def count_hits(conn: Any) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM hits").fetchone()[0])


class HitStore:
    """Asynchronous, batched writer of hits. Thread-safe ``record()``.

    ``clock`` and ``sleep`` are injectable for tests of the retry path.
    """

    def __init__(self, path: str, *, queue_size: int = 100_000, batch_size: int = 500,
                 retry_initial: float = 0.05, retry_max: float = 5.0,
                 lock_timeout: float = 0.2, retention: float = 0.0,
                 prune_interval: float = 3600.0, host: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.host = host
        self.health = health_of(path)
        self.batch_size = batch_size
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.lock_timeout = lock_timeout
        self.retention = retention
        self.prune_interval = prune_interval
        self.clock = clock
        self.dropped = 0
        self.written = 0
        self.retries = 0
        self._queue: queue.Queue[Hit] = queue.Queue(maxsize=queue_size)
        self._pending: list[Hit] = []       # taken off the queue, not yet committed
        self._outstanding = 0               # recorded and not yet committed
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._abandon = threading.Event()   # close() gave up waiting
        self._wake = threading.Event()
        self._conn: Any = None
        self._last_prune = clock()   # first prune one interval after start
        # Create or upgrade the schema now, so a broken database shows at
        # start-up rather than as dropped hits later. A database server that
        # is down is no reason to refuse mail: hits wait in the queue, and
        # the writer migrates when it first connects.
        try:
            db.open_database(path, [HITS_SCHEMA]).close()
        except db.ERRORS as exc:
            if not engines.is_unavailable(exc):
                raise
            self.health.failed(exc)
        self._thread = threading.Thread(target=self._run, name="hitstore-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: Any, **kw: Any) -> "HitStore":
        settings = cls.settings_from_config(config)
        kw.setdefault("host", config.host_name)
        return cls(config.database, **settings, **kw)

    @staticmethod
    def settings_from_config(config: Any) -> dict[str, Any]:
        """The ``store:`` section as constructor arguments (nothing opened)."""
        section = config.section("store")
        # 0 days: keep forever.
        retention_days = section.number("retention_days", 90, 0, 1e6, "days")
        queue_size = section.integer("queue_size", 100_000, 1, 100_000_000)
        batch_size = section.integer("batch_size", 500, 1, 1_000_000)
        return {"queue_size": queue_size, "batch_size": batch_size,
                "retention": float(retention_days) * 86400.0}

    # -- the SMTP side -------------------------------------------------

    def record(self, hits: list[Hit]) -> None:
        """Queue hits for writing. Never blocks; a full queue drops (counted)."""
        for hit in hits:
            try:
                self._queue.put_nowait(hit)
            except queue.Full:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("event=hits_dropped dropped=%d reason=queue_full", self.dropped)
                continue
            with self._cond:
                self._outstanding += 1
        self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded so far is committed (or timeout)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._cond:
            while self._outstanding > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
                self._wake.set()
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Flush, then stop the writer. Returns False if hits were left unwritten."""
        flushed = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(1.0, timeout))
        if self._thread.is_alive():
            self._abandon.set()
            self._thread.join(timeout=2.0)
        if not flushed:
            log.warning("event=hits_lost_on_close count=%d", self._outstanding)
        return flushed

    @property
    def backlog(self) -> int:
        return self._outstanding

    def prune(self, older_than: float | None = None) -> int:
        """Delete hits older than the retention (or ``older_than`` seconds)."""
        age = self.retention if older_than is None else older_than
        if age <= 0:
            return 0
        conn = db.connect(self.path)
        try:
            return prune_hits(conn, self.clock() - age)
        finally:
            conn.close()

    # -- the writer thread ---------------------------------------------

    def _take_batch(self) -> None:
        while len(self._pending) < self.batch_size:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break

    def _write_pending(self) -> None:
        if self._conn is None:
            # A short busy timeout: the thread retries by itself, and a long
            # wait inside SQLite would hold up close().
            # On PostgreSQL a batch that hangs (a server stalled behind a
            # lock) is given up after WRITE_TIMEOUT and retried.
            self._conn = db.open_database(self.path, [HITS_SCHEMA], timeout=self.lock_timeout,
                                          statement_timeout=WRITE_TIMEOUT)
        n = insert_hits(self._conn, self._pending, host=self.host)
        self.health.succeeded()
        self.written += n
        self._pending = []
        with self._cond:
            self._outstanding -= n
            self._cond.notify_all()

    def _maybe_prune(self) -> None:
        if self.retention <= 0 or self._conn is None:
            return
        now = self.clock()
        if now - self._last_prune < self.prune_interval:
            return
        self._last_prune = now
        try:
            removed = prune_hits(self._conn, now - self.retention)
            if removed:
                log.info("event=hits_pruned count=%d", removed)
        except db.ERRORS as exc:
            log.info("event=hits_prune_deferred error=%r", engines.error_text(exc))

    def _run(self) -> None:
        pause = self.retry_initial
        while True:
            if not self._pending:
                self._wake.wait(0.5)
                self._wake.clear()
            self._take_batch()
            if not self._pending:
                if self._stop.is_set():
                    break
                self._maybe_prune()
                continue
            try:
                self._write_pending()
                pause = self.retry_initial
            except db.ERRORS as exc:
                # Locked, busy or unavailable: keep the batch (and the queue
                # behind it) and retry until the database is back.
                self.retries += 1
                if engines.is_unavailable(exc):
                    self.health.failed(exc)
                if self.retries == 1 or self.retries % 100 == 0:
                    log.warning("event=hits_write_retry pending=%d queued=%d error=%r",
                                len(self._pending), self._outstanding,
                                engines.error_text(exc))
                if self._conn is not None and "locked" not in str(exc) and "busy" not in str(exc):
                    try:
                        self._conn.close()
                    except db.ERRORS:
                        pass
                    self._conn = None
                if self._abandon.is_set():
                    break
                if self._stop.is_set():
                    time.sleep(min(pause, 0.2))  # closing: keep trying quickly
                else:
                    self._stop.wait(pause)
                pause = min(pause * 2, self.retry_max)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
