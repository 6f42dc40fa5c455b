"""The project's database: one SQLite file (PostgreSQL later), versioned schema.

Each component (hits, bans, greylist, ...) owns a list of migrations; the
version each component has reached is kept in ``schema_versions``, so an
older database upgrades in place on open and no query ever meets a missing
column. Migrations are plain, portable SQL statements.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Sequence

#: component name -> ordered list of migrations; each migration is a list of
#: SQL statements. Append only: never edit a migration that has shipped.
MIGRATIONS: dict[str, list[Sequence[str]]] = {}


def register_migrations(component: str, migrations: list[Sequence[str]]) -> None:
    """Declare a component's schema history (called at import time)."""
    MIGRATIONS[component] = migrations


def connect(path: str, timeout: float = 5.0) -> sqlite3.Connection:
    """Open the database file in WAL mode, creating its directory.

    ``check_same_thread=False`` because the store's writer thread and the
    CLI share the connection type; each thread still opens its own.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=%d" % int(timeout * 1000))
    return conn


_migrate_lock = threading.Lock()


def migrate(conn: sqlite3.Connection, components: Sequence[str] | None = None) -> None:
    """Bring the named components (default: all registered) up to date."""
    with _migrate_lock:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_versions ("
                     " component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        for name in components or sorted(MIGRATIONS):
            steps = MIGRATIONS[name]
            row = conn.execute("SELECT version FROM schema_versions WHERE component=?",
                               (name,)).fetchone()
            current = row[0] if row else 0
            for version in range(current + 1, len(steps) + 1):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in steps[version - 1]:
                        conn.execute(stmt)
                    conn.execute("INSERT OR REPLACE INTO schema_versions(component, version)"
                                 " VALUES (?, ?)", (name, version))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise


def schema_version(conn: sqlite3.Connection, component: str) -> int:
    row = conn.execute("SELECT version FROM schema_versions WHERE component=?",
                       (component,)).fetchone()
    return row[0] if row else 0
