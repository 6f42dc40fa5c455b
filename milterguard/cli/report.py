"""`milterguard report --html FILE`: one self-contained HTML page.

Charts of hits over time by category and of the share of incidents by
vector (inline SVG), the stats table of `milterguard stats`, the addresses
blocked now with their expiry, top addresses and rules, and the latest
hits. No scripts and no external assets: open it from disk or mail it.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable

from milterguard.cli.stats import add_common_arguments

#: Tests replace this to run the command at another time.
clock: Callable[[], float] = time.time


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="write an HTML report (charts, stats, bans)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--html", metavar="FILE", required=True, help="write the page here")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from milterguard.report import html as report_html
    from milterguard.report import stats
    from milterguard.store.bans import BanEngine, BanPolicy
    from milterguard.cli.stats import gather
    now = clock()
    config, conn, result = gather(args, now)
    try:
        starts, series = stats.hits_over_time(conn, result.since, now)
        bans = BanEngine(conn, BanPolicy.from_config(config), clock=lambda: now).active()
        page = report_html.render(result, starts, series, bans,
                                  recent=report_html.recent_hits(conn, result.since))
    finally:
        conn.close()
    tmp = args.html + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, args.html)   # a reader never sees half a page
    print(f"report written to {args.html}")
    return 0
