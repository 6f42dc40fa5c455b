"""The database layer: transactions, explicit schemas, the connection pool."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from milterguard.store import db

WIDGETS = db.Schema.of("widgets", [
    ["CREATE TABLE widgets (name TEXT PRIMARY KEY, size INTEGER NOT NULL)"],
    ["ALTER TABLE widgets ADD COLUMN colour TEXT NOT NULL DEFAULT 'grey'"],
])


def test_transaction_commits_the_whole_block(tmp_path):
    conn = db.open_database(str(tmp_path / "t.db"), [WIDGETS])
    with db.transaction(conn):
        conn.execute("INSERT INTO widgets (name, size) VALUES ('a', 1)")
        conn.execute("INSERT INTO widgets (name, size) VALUES ('b', 2)")
    other = db.connect(str(tmp_path / "t.db"))
    assert other.execute("SELECT COUNT(*) FROM widgets").fetchone()[0] == 2
    assert not conn.in_transaction


def test_transaction_rolls_back_everything_and_reraises(tmp_path):
    conn = db.open_database(str(tmp_path / "t.db"), [WIDGETS])
    with pytest.raises(sqlite3.IntegrityError):
        with db.transaction(conn):
            conn.execute("INSERT INTO widgets (name, size) VALUES ('a', 1)")
            conn.execute("INSERT INTO widgets (name, size) VALUES ('a', 2)")   # duplicate key
    assert conn.execute("SELECT COUNT(*) FROM widgets").fetchone()[0] == 0
    assert not conn.in_transaction


def test_a_failing_rollback_does_not_hide_the_error(tmp_path):
    conn = db.open_database(str(tmp_path / "t.db"), [WIDGETS])

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with db.transaction(conn):
            conn.execute("ROLLBACK")   # the transaction is gone: our ROLLBACK will fail
            raise Boom()


def test_transaction_takes_the_write_lock_at_begin(tmp_path):
    """BEGIN IMMEDIATE: a second writer waits (here: times out) at BEGIN."""
    path = str(tmp_path / "t.db")
    first = db.open_database(path, [WIDGETS])
    second = db.connect(path, timeout=0.05)
    with db.transaction(first):
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            with db.transaction(second):
                pass   # never reached: BEGIN itself cannot get the lock
    assert not second.in_transaction


def test_migrations_run_in_order_once_and_record_the_version(tmp_path):
    path = str(tmp_path / "t.db")
    conn = db.connect(path)
    db.migrate(conn, [db.Schema.of("widgets", WIDGETS.migrations[:1])])
    conn.execute("INSERT INTO widgets (name, size) VALUES ('old', 3)")
    assert db.schema_version(conn, "widgets") == 1
    conn.close()
    conn = db.open_database(path, [WIDGETS])
    assert db.schema_version(conn, "widgets") == WIDGETS.version == 2
    assert conn.execute("SELECT name, size, colour FROM widgets").fetchall() == [("old", 3, "grey")]
    db.migrate(conn, [WIDGETS])   # nothing left to do: no error for the existing column
    assert db.schema_version(conn, "widgets") == 2


def test_a_failing_migration_leaves_the_previous_version(tmp_path):
    broken = db.Schema.of("widgets", [WIDGETS.migrations[0], ["ALTER TABLE nowhere ADD x"]])
    conn = db.connect(str(tmp_path / "t.db"))
    with pytest.raises(sqlite3.OperationalError):
        db.migrate(conn, [broken])
    assert db.schema_version(conn, "widgets") == 1


def test_only_the_named_schemas_are_created(tmp_path):
    from milterguard.store.hits import HITS_SCHEMA
    conn = db.open_database(str(tmp_path / "t.db"), [HITS_SCHEMA])
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "hits" in tables and "bans" not in tables


def test_stats_command_creates_the_bans_tables_in_a_fresh_process(tmp_path):
    """What a command needs is named where it opens the database, not
    registered by whichever module happened to be imported first."""
    state = tmp_path / "state"
    result = subprocess.run([sys.executable, "-m", "milterguard", "stats", "--state-dir",
                             str(state), "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    conn = db.connect(str(state / "milterguard.db"))
    assert db.schema_version(conn, "bans") >= 1 and db.schema_version(conn, "hits") >= 1


def test_pool_reuses_idle_connections_and_drops_failed_ones(tmp_path):
    opened: list[sqlite3.Connection] = []

    def opener() -> sqlite3.Connection:
        opened.append(db.connect(str(tmp_path / "t.db")))
        return opened[-1]

    pool = db.ConnectionPool(opener, max_idle=1)
    with pool.connection() as first:
        pass
    with pool.connection() as again:
        assert again is first
    with pytest.raises(RuntimeError):
        with pool.connection():
            raise RuntimeError("broken mid-use")
    with pool.connection() as fresh:
        assert fresh is not first
    # Two at once: the second is new, and only max_idle of them are kept.
    with pool.connection() as a, pool.connection() as b:
        assert a is not b
    assert len(opened) == 3
    pool.close()
    with pytest.raises(sqlite3.ProgrammingError):
        opened[-1].execute("SELECT 1")
