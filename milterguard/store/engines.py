"""The two database engines behind `database:`, and every difference between them.

`database:` is either a SQLite file path or a ``postgresql://`` URL (libpq
syntax: ``postgresql://USER@HOST:PORT/DBNAME?passfile=/etc/milterguard/pgpass``;
a password comes from that file or ``PGPASSFILE``, the way libpq reads it,
and never appears in a log line: ``describe()`` is the form to print).

The rest of the code writes one dialect, SQLite's DB-API style, kept
portable: ``?`` placeholders, ``BEGIN IMMEDIATE`` for a write transaction,
``ON CONFLICT ... DO UPDATE`` upserts, ``INTEGER``/``REAL``/``VARCHAR``/
``TEXT`` columns, ``id INTEGER PRIMARY KEY`` for a row id. On PostgreSQL a
``PgConnection`` runs that dialect by translating each statement once
(cached): placeholders become ``%s``; ``BEGIN IMMEDIATE`` becomes ``BEGIN``
and a plain (read) ``BEGIN`` a REPEATABLE READ one, SQLite's snapshot;
in DDL ``INTEGER`` becomes ``BIGINT`` (inodes, offsets and counters pass
2**31), ``REAL`` becomes ``DOUBLE PRECISION`` (PostgreSQL's ``real`` is 4
bytes and would round timestamps to minutes) and the row id an identity
column. A ``numeric`` result (PostgreSQL's ``SUM`` of a ``bigint``) comes
back as int or float, as SQLite returns it. That is the whole translation;
anything else must already be portable SQL.

psycopg (3.1 or later, the pure-Python build over the system's libpq) is
imported only when a URL is configured, so a SQLite-only site needs
neither it nor libpq.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import urllib.parse
from typing import Any, Iterable, Sequence

from milterguard.errors import MilterguardError

URL_SCHEMES = ("postgresql://", "postgres://")

#: Session-level advisory lock ids (any constant 64-bit numbers; these
#: spell "mg-migr" and "mg-bans" so they are easy to spot in pg_locks).
LOCK_IDS = {"migrations": 0x6D672D6D69677200, "bans": 0x6D672D62616E7300}


def is_url(database: str) -> bool:
    """True for a PostgreSQL URL, False for a SQLite file path."""
    return database.strip().lower().startswith(URL_SCHEMES)


def engine_name(database: str) -> str:
    return "postgresql" if is_url(database) else "sqlite"


def check_url(database: str) -> str:
    """A problem with a PostgreSQL URL as text, or '' (no libpq needed)."""
    parts = urllib.parse.urlsplit(database.strip())
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        return "a postgresql:// URL must name the database (postgresql://USER@HOST/DBNAME)"
    try:
        _ = parts.port          # the property raises for a port that is not a number
    except ValueError:
        return "the port in the postgresql:// URL is not a number"
    return ""


def describe(database: str) -> str:
    """``database`` fit for a log line: any password replaced by ``***``."""
    if not is_url(database):
        return database
    parts = urllib.parse.urlsplit(database)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = userinfo + "@" + host
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, "***" if k == "password" else v) for k, v in query]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path,
                                    urllib.parse.urlencode(query, safe="/*"), ""))


# ------------------------------------------------------------------ errors

def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:   # the package, or libpq under it, is missing
        raise MilterguardError(
            f"database: a postgresql:// URL needs psycopg 3 and libpq ({exc}); install "
            "python3-psycopg (Debian) or `pip install psycopg`") from None
    return psycopg


class PostgresError(Exception):
    """A psycopg error, as the rest of the code sees it.

    PgConnection turns every psycopg error into this, so catching either
    engine's errors (``ERRORS``) needs no psycopg import: a SQLite site
    never loads psycopg or libpq (~0.1-0.3 s at every command's start).
    ``unavailable``: the server could not be reached, dropped the
    connection or cancelled a statement that ran too long (an outage),
    rather than refusing a query. ``sqlstate``: PostgreSQL's error code.
    """

    def __init__(self, message: str, unavailable: bool = False,
                 sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.unavailable = unavailable
        self.sqlstate = sqlstate


#: What any database operation may raise when the database is locked, down
#: or broken: ``except ERRORS`` works for both engines.
ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, PostgresError)


def is_unavailable(exc: BaseException) -> bool:
    """True if ``exc`` says the database cannot be reached (not a bad query)."""
    return isinstance(exc, PostgresError) and exc.unavailable


def _wrapped(exc: BaseException) -> PostgresError:
    import psycopg
    return PostgresError(str(exc), isinstance(exc, (psycopg.OperationalError,
                                                    psycopg.InterfaceError)),
                         getattr(exc, "sqlstate", None))


def error_text(exc: BaseException) -> str:
    """One line for a key=value log: libpq's messages span several lines."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# -------------------------------------------------------------- translation

_DDL_ID = re.compile(r"\bid INTEGER PRIMARY KEY\b", re.I)
_DDL_INTEGER = re.compile(r"\bINTEGER\b", re.I)
_DDL_REAL = re.compile(r"\bREAL\b", re.I)


@functools.lru_cache(maxsize=1024)
def to_postgres(sql: str) -> str:
    """One statement of the project's dialect as PostgreSQL runs it."""
    stripped = sql.lstrip()
    head = stripped[:16].upper()
    if head.startswith("BEGIN"):
        # SQLite's deferred BEGIN reads one snapshot (WAL) until COMMIT;
        # PostgreSQL does that at REPEATABLE READ. BEGIN IMMEDIATE (a write
        # transaction) stays at READ COMMITTED: concurrent writers wait on
        # row locks instead of failing with serialization errors.
        return "BEGIN" if "IMMEDIATE" in head else "BEGIN ISOLATION LEVEL REPEATABLE READ"
    if head.startswith(("CREATE", "ALTER")):
        sql = _DDL_ID.sub("id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
        sql = _DDL_INTEGER.sub("BIGINT", sql)
        sql = _DDL_REAL.sub("DOUBLE PRECISION", sql)
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection that speaks the project's (SQLite-style) dialect.

    Autocommit, like the SQLite connections (``isolation_level=None``):
    a statement outside ``BEGIN``/``COMMIT`` commits at once.
    """

    engine = "postgresql"

    def __init__(self, raw: Any) -> None:
        import psycopg
        self.raw = raw
        self._psycopg_error = psycopg.Error

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        cur = self.raw.cursor()
        try:
            cur.execute(to_postgres(sql), tuple(params) if params else None)
        except self._psycopg_error as exc:
            raise _wrapped(exc) from exc
        return cur

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        cur = self.raw.cursor()
        try:
            cur.executemany(to_postgres(sql), [tuple(r) for r in rows])
        except self._psycopg_error as exc:
            raise _wrapped(exc) from exc
        return cur

    def close(self) -> None:
        try:
            self.raw.close()
        except self._psycopg_error:
            pass     # closing a connection that is already gone

    @property
    def closed(self) -> bool:
        return bool(self.raw.closed)


def _number_loader() -> Any:
    from psycopg.adapt import Loader

    class NumberLoader(Loader):
        """``numeric`` as SQLite would return it: int when whole, else float."""

        def load(self, data: Any) -> Any:
            text = bytes(data).decode("ascii")
            if "." in text or "e" in text.lower() or text in ("NaN", "Infinity", "-Infinity"):
                return float(text)
            return int(text)

    return NumberLoader


def connect_postgres(url: str, timeout: float = 5.0,
                     statement_timeout: float = 0.0) -> PgConnection:
    """Open one connection; ``timeout`` bounds the connect.

    libpq's own ``connect_timeout`` counts whole seconds (at least 2), so a
    dead host costs at most that. ``statement_timeout`` (0 = none: the CLI's
    long reports) stops a statement of the daemon stuck behind a lock
    instead of holding a thread. TCP keepalives notice a server that
    vanished without closing the connection.
    """
    psycopg = _psycopg()
    seconds = max(2, int(round(timeout)))
    try:
        raw = psycopg.connect(
            url, autocommit=True, connect_timeout=seconds,
            application_name="milterguard",
            options=f"-c statement_timeout={int(statement_timeout * 1000)}",
            keepalives=1, keepalives_idle=30, keepalives_interval=5, keepalives_count=3)
    except psycopg.ProgrammingError as exc:   # a malformed URL: the admin's mistake
        raise MilterguardError(f"database: {describe(url)}: {error_text(exc)}") from None
    except psycopg.Error as exc:
        raise _wrapped(exc) from None
    raw.adapters.register_loader("numeric", _number_loader())
    return PgConnection(raw)


# ------------------------------------------------------------ the engine API

def connect(database: str, timeout: float = 5.0, statement_timeout: float = 0.0) -> Any:
    """A connection to either engine, in autocommit mode.

    ``timeout``: how long to wait for the server or for SQLite's lock;
    ``statement_timeout`` (PostgreSQL): the longest a statement may run.
    """
    if is_url(database):
        return connect_postgres(database, timeout, statement_timeout)
    return connect_sqlite(database, timeout)


class DatabaseOpenError(MilterguardError, sqlite3.OperationalError):
    """The database file cannot be opened or created: a clear message for
    the admin (not a traceback), still an sqlite3 error for code that
    retries on those."""


def connect_sqlite(path: str, timeout: float = 5.0) -> sqlite3.Connection:
    """Open the database file in WAL mode, creating its directory.

    ``check_same_thread=False`` because the pool hands a connection to
    whichever thread asks next (one thread at a time).
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                               check_same_thread=False)
    except (OSError, sqlite3.OperationalError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DatabaseOpenError(f"cannot open database {path}: {reason} (can this user "
                                f"write to {directory}? see state_dir / --state-dir)") from None
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=%d" % int(timeout * 1000))
    return conn


def is_postgres(conn: Any) -> bool:
    return getattr(conn, "engine", "sqlite") == "postgresql"


def table_exists(conn: Any, name: str) -> bool:
    if is_postgres(conn):
        sql = ("SELECT 1 FROM information_schema.tables"
               " WHERE table_schema = current_schema() AND table_name = ?")
    else:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(sql, (name,)).fetchone() is not None


def table_columns(conn: Any, name: str) -> list[str]:
    """A table's column names in their defined order."""
    cur = conn.execute(f"SELECT * FROM {name} WHERE 1 = 0")
    return [d[0] for d in cur.description]


def lock(conn: Any, name: str) -> None:
    """Take a cluster-wide lock (PostgreSQL advisory lock; waits for it).

    Several MX hosts share one PostgreSQL: migrations and ban syncs must not
    run twice at once. One SQLite file has one host, whose writers are
    already serialised by ``BEGIN IMMEDIATE``; there this does nothing.
    """
    if is_postgres(conn):
        conn.execute("SELECT pg_advisory_lock(?)", (LOCK_IDS[name],))


def unlock(conn: Any, name: str) -> None:
    if is_postgres(conn):
        conn.execute("SELECT pg_advisory_unlock(?)", (LOCK_IDS[name],))


def lock_key(conn: Any, key: int) -> None:
    """Inside a write transaction: serialise it with others on ``key``.

    SQLite's ``BEGIN IMMEDIATE`` already holds the one write lock of the
    file, so a read-then-write block runs alone. PostgreSQL lets writers
    run side by side (READ COMMITTED); a transaction-scoped advisory lock on
    the key (a greylist triplet's 64-bit hash) gives the same "read again,
    then write" guarantee per key, across hosts, without a table lock.
    """
    if is_postgres(conn):
        conn.execute("SELECT pg_advisory_xact_lock(?)", (key,))
