"""The project's database layer: connections, transactions, versioned schema.

One SQLite file, or one PostgreSQL database shared by several MX hosts
(`database:` is then a ``postgresql://`` URL), behind the same functions;
engines.py holds every difference between the two. Every component that keeps tables (hits, bans, greylist, logscan) declares
a ``Schema`` next to its queries, and whoever opens the database names the
schemas it needs (``open_database(path, [HITS, BANS])``). Nothing is
registered at import time, so what a command reads never depends on which
modules happened to be imported before it.

The version each component has reached is kept in ``schema_versions``, so
an older database upgrades in place on open and no query ever meets a
missing column. Migrations are plain, portable SQL statements: one
history for both engines. On PostgreSQL, hosts that start together migrate
one after the other under an advisory lock, each finding the work done.

Every write that must be atomic goes through ``transaction()``; the pool
hands connections to short-lived threads (the milter runs one per SMTP
connection) so the number of open handles follows peak concurrency.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from milterguard.store import engines
from milterguard.store.engines import ERRORS as ERRORS  # re-exported: callers catch db.ERRORS


@dataclass(frozen=True)
class Schema:
    """One component's tables: its name in ``schema_versions`` and its history.

    ``migrations`` is ordered; each migration is a sequence of SQL
    statements run in one transaction. Append only: never edit a migration
    that has shipped, because databases in the field already ran it.
    """

    component: str
    migrations: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, component: str, migrations: Sequence[Sequence[str]]) -> "Schema":
        return cls(component, tuple(tuple(step) for step in migrations))

    @property
    def version(self) -> int:
        """The version a fully migrated database reports for this component."""
        return len(self.migrations)


def connect(database: str, timeout: float = 5.0, statement_timeout: float = 0.0) -> Any:
    """A connection to the SQLite file or PostgreSQL URL ``database``.

    Autocommit: a transaction is only ever the one ``transaction()`` opens,
    never one the driver opened behind our back. See engines.connect.
    """
    return engines.connect(database, timeout, statement_timeout)


@contextlib.contextmanager
def transaction(conn: Any) -> Iterator[Any]:
    """Run the block as one write transaction: all of it commits, or none.

    BEGIN IMMEDIATE takes the write lock up front, so a read-then-write
    block never fails half-way on a lock another writer took after our read.
    If the block (or COMMIT) fails, the transaction is rolled back and the
    original error propagates; a failing ROLLBACK (SQLite may already have
    rolled back by itself, e.g. on a full disk) must not hide that error.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(*ERRORS):
            conn.execute("ROLLBACK")
        raise


_migrate_lock = threading.Lock()


def migrate(conn: Any, schemas: Sequence[Schema]) -> None:
    """Bring the given components' tables up to date (each step atomic)."""
    with _migrate_lock:
        engines.lock(conn, "migrations")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_versions ("
                         " component VARCHAR(64) PRIMARY KEY, version INTEGER NOT NULL)")
            for schema in schemas:
                current = schema_version(conn, schema.component)
                for version in range(current + 1, schema.version + 1):
                    with transaction(conn):
                        for stmt in schema.migrations[version - 1]:
                            conn.execute(stmt)
                        conn.execute("INSERT INTO schema_versions (component, version)"
                                     " VALUES (?, ?) ON CONFLICT (component)"
                                     " DO UPDATE SET version = excluded.version",
                                     (schema.component, version))
        finally:
            engines.unlock(conn, "migrations")


def open_database(path: str, schemas: Sequence[Schema],
                  timeout: float = 5.0, statement_timeout: float = 0.0) -> Any:
    """Connect and bring the named components' tables up to date.

    Migrating on open lets an old database answer (missing columns are
    added) and a fresh path work at once (empty tables are created).
    """
    conn = connect(path, timeout=timeout, statement_timeout=statement_timeout)
    try:
        migrate(conn, schemas)
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: Any, component: str) -> int:
    """The migration a component's tables have reached (0: none yet)."""
    row = conn.execute("SELECT version FROM schema_versions WHERE component=?",
                       (component,)).fetchone()
    return row[0] if row else 0


class ConnectionPool:
    """Connections handed to one thread at a time; grows to peak concurrency.

    The milter runs a thread per SMTP connection, and those threads come and
    go; a pool keeps the number of open database handles at the peak number
    of concurrent users instead of one per thread ever started. A connection
    whose block raised is closed rather than reused: it may be mid-transaction
    or broken.
    """

    def __init__(self, opener: Callable[[], Any], max_idle: int = 16) -> None:
        self._opener = opener
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._max_idle = max_idle
        self._closed = False

    @classmethod
    def for_path(cls, database: str, max_idle: int = 16, timeout: float = 5.0,
                 statement_timeout: float = 0.0) -> "ConnectionPool":
        return cls(lambda: connect(database, timeout, statement_timeout), max_idle)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._opener()
        ok = False
        try:
            yield conn
            ok = True
        finally:
            if ok and not self._closed and self._idle.qsize() < self._max_idle:
                self._idle.put(conn)
            else:
                conn.close()

    def discard_idle(self) -> None:
        """Close the idle connections: after a database outage they are all
        dead, and each would fail one caller before being dropped."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
            except ERRORS:
                continue

    def close(self) -> None:
        self._closed = True
        self.discard_idle()
