"""`milterguard stats`: what each defence layer stopped.

A table of Vector (the defence layer), Quantity (client addresses, each
counted once under its latest reason), Percentage of all incidents and
Category, next to the raw hit counts; then firewall blocks (active bans,
hits from the mail and kernel log), top addresses, top rules, observe-mode
would-have-hits and the loaded rules that never fired in the period.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

from milterguard.cli.main import add_config_arguments

#: Tests replace this to run the command at another time.
clock: Callable[[], float] = time.time


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("stats", help="hits by vector and category, top addresses and rules",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=run)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--since", metavar="DURATION", default="7d",
                   help="period: 90m, 12h, 3d, 2w, or 'all' (default 7d)")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="how many top addresses and rules (default 10)")


def since_time(text: str, now: float) -> float:
    from milterguard.duration import parse_duration
    if text.strip().lower() in ("all", "0", ""):
        return 0.0
    return now - parse_duration(text)


def gather(args: argparse.Namespace, now: float) -> tuple[Any, Any, Any]:
    """(config, open connection, Stats) for the stats and report commands."""
    from milterguard.config import load_config
    from milterguard.report import stats
    from milterguard.store import db
    from milterguard.store.bans import BANS_SCHEMA
    from milterguard.store.hits import HITS_SCHEMA
    config = load_config(args.config, args.state_dir)
    since = since_time(args.since, now)
    rule_ids, observe_ids = stats.loaded_rules(config)
    # Migrating here lets an old store answer (missing columns are added);
    # on a fresh path it creates empty tables, so an empty store works.
    conn = db.open_database(config.database, [HITS_SCHEMA, BANS_SCHEMA])
    result = stats.compute_stats(conn, since, clock=lambda: now, rule_ids=rule_ids,
                                 observe_rule_ids=observe_ids, top=args.top)
    return config, conn, result


def run(args: argparse.Namespace) -> int:
    from milterguard.report import stats
    now = clock()
    _config, conn, result = gather(args, now)
    conn.close()
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        print(stats.format_table(result))
    return 0
