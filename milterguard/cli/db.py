"""`milterguard db copy --from SQLITE_PATH --to URL`: one host's history into
the shared database.

A site that grows from one MX host to several moves the first host's SQLite
file into PostgreSQL once, then points every host's `database:` at the URL.
Both databases are brought up to the current schema first (the copy is
column by column, by name, so an older SQLite file copies too). Rows keep
their order; row ids (hits, ban events) are given anew by the destination,
so several hosts can copy their files into one database one after the
other. Rows whose key already exists there (a ban, a greylist triplet, a
client network another host copied first) keep the destination's version.
Learned tokens are one model for the site: they are copied into a database
that has none yet, and left out (with a message) otherwise.
Hits recorded before hosts were named get the ``--host`` name (default:
``server.hostname`` of the config, else the machine's name), so `bans list`
and `stats` can tell them apart.

Run it once per file: hits have no natural key, and a second run would
copy them twice.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from typing import Any, Sequence

from milterguard.cli.main import add_config_arguments
from milterguard.errors import MilterguardError

#: Rows per INSERT batch (one transaction each).
BATCH = 2000

#: The classifier's learned counts: one model for the site, not rows per
#: host, and its serial (bayes_serial) says which tokens a daemon has read.
MODEL_TABLES = ("bayes_tokens", "bayes_messages", "bayes_serial")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("db", help="the database: copy a SQLite file into PostgreSQL",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="db_command", metavar="ACTION")
    c = sub.add_parser("copy", help="copy every table of a SQLite file into a database")
    c.add_argument("--from", dest="source", required=True, metavar="SQLITE_PATH")
    c.add_argument("--to", dest="target", required=True, metavar="URL",
                   help="postgresql://USER@HOST/DBNAME (password from passfile= or PGPASSFILE)")
    c.add_argument("--host", metavar="NAME",
                   help="host name for hits that carry none (default: server.hostname)")
    add_config_arguments(c, state_dir=False)
    p.set_defaults(func=run, _db_parser=p)


def run(args: argparse.Namespace) -> int:
    if args.db_command != "copy":
        args._db_parser.print_help()
        return 2
    from milterguard.config import load_config
    host = args.host or load_config(args.config).host_name
    counts = copy_database(args.source, args.target, host)
    for table, n in counts.items():
        print(f"{table}: {n} rows copied")
    print(f"db copy: {sum(counts.values())} rows from {args.source}"
          f" to {_describe(args.target)}")
    return 0


def _describe(database: str) -> str:
    from milterguard.store.engines import describe
    return describe(database)


def all_schemas() -> list[Any]:
    """Every component's schema, in an order where nothing reads a table
    another component has not created yet."""
    from milterguard.classifier.tokendb import CLASSIFIER
    from milterguard.greylist.triplets import GREYLIST_SCHEMA
    from milterguard.store.bans import BANS_SCHEMA
    from milterguard.store.hits import HITS_SCHEMA
    from milterguard.store.logscan import LOGSCAN_SCHEMA
    return [HITS_SCHEMA, BANS_SCHEMA, GREYLIST_SCHEMA, LOGSCAN_SCHEMA, CLASSIFIER]


def copy_database(source: str, target: str, host: str) -> dict[str, int]:
    """Copy every table of the SQLite file ``source`` into ``target``."""
    from milterguard.store import db, engines
    if engines.is_url(source):
        raise MilterguardError("db copy: --from takes a SQLite file, not a URL")
    if not os.path.isfile(source):
        raise MilterguardError(f"db copy: {source}: no such file")
    if os.path.abspath(source) == os.path.abspath(target):
        raise MilterguardError("db copy: --from and --to are the same file")
    schemas = all_schemas()
    try:
        src = db.open_database(source, schemas)
    except sqlite3.DatabaseError as exc:
        raise MilterguardError(f"db copy: {source}: not a milterguard database ({exc})") from None
    try:
        dst = db.open_database(target, schemas)
    except engines.ERRORS as exc:
        src.close()
        raise MilterguardError(f"db copy: {_describe(target)}: {engines.error_text(exc)}") from None
    counts: dict[str, int] = {}
    try:
        tables = [r[0] for r in src.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND name <> 'schema_versions' ORDER BY name")]
        model = _copy_model(src, dst, tables)
        for table in tables:
            if not engines.table_exists(dst, table) or table in MODEL_TABLES:
                continue
            counts[table] = _copy_table(src, dst, table, host)
        counts.update(model)
    finally:
        src.close()
        dst.close()
    return counts


def _copy_model(src: Any, dst: Any, tables: list[str]) -> dict[str, int]:
    """The learned tokens, into a database that has none yet.

    Counts of two models do not merge row by row (the same message learned
    on two hosts would count twice), so a database that already learned
    keeps its model and this file's is left out (said in the output). The
    serial comes along, so daemons load every copied token.
    """
    from milterguard.store import db
    if "bayes_tokens" not in tables:
        return {}
    if dst.execute("SELECT COUNT(*) FROM bayes_tokens").fetchone()[0]:
        print("learned tokens: not copied, the destination has its own"
              " (run `milterguard learn` there to add to them)")
        return {}
    copied = {table: _copy_table(src, dst, table, "") for table in MODEL_TABLES[:2]}
    serial = src.execute("SELECT serial FROM bayes_serial WHERE id = 1").fetchone()
    with db.transaction(dst):
        dst.execute("UPDATE bayes_serial SET serial = ? WHERE id = 1", (serial[0] if serial else 0,))
    return copied


def _copy_table(src: Any, dst: Any, table: str, host: str) -> int:
    from milterguard.store import db, engines
    info = src.execute(f"PRAGMA table_info({table})").fetchall()
    # A SQLite row id (``id INTEGER PRIMARY KEY``) is not copied: the
    # destination numbers rows itself, after whatever is there already.
    rowid = [r[1] for r in info if r[5] == 1 and r[2].upper() == "INTEGER" and r[1] == "id"]
    wanted = set(engines.table_columns(dst, table))
    columns = [r[1] for r in info if r[1] in wanted and r[1] not in rowid]
    if not columns:
        return 0
    fill_host = "host" in columns
    host_at = columns.index("host") if fill_host else -1
    insert = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
              f" ({', '.join('?' for _ in columns)}) ON CONFLICT DO NOTHING")
    cur = src.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid")
    copied = 0
    while True:
        rows = cur.fetchmany(BATCH)
        if not rows:
            return copied
        batch: Sequence[Any] = rows
        if fill_host:
            batch = [r[:host_at] + ((r[host_at] or host),) + r[host_at + 1:] for r in rows]
        with db.transaction(dst):
            cur_dst = dst.executemany(insert, batch)
        # rows written; a row whose key the destination has already is not
        copied += max(0, cur_dst.rowcount if cur_dst.rowcount is not None else len(rows))
