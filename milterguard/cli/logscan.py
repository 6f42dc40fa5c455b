"""`milterguard logscan [--log FILE]`: record what Postfix and the kernel
firewall refused on their own as hits (see logscan.py for the formats).

Run it from the timer before `bans sync`; each run reads only new lines.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from milterguard.store import db
from milterguard.cli.main import add_config_arguments
from milterguard.config import load_config
from milterguard.store.logscan import LogScanner


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("logscan", help="record Postfix and firewall rejects as hits",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--log", metavar="FILE", action="append",
                   help="log file to read (repeatable; default: logscan.files in the config)")
    p.add_argument("--json", action="store_true", help="print a summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.state_dir)
    files = args.log
    if not files:
        section = config.section("logscan")
        files = section.get("files") or ["/var/log/mail.log"]
        if not isinstance(files, list):
            raise section.error("must be a list of log files", "files")
    conn = db.connect(config.database)
    summary = []
    try:
        for path in files:
            result = LogScanner(conn, str(path), host=config.host_name).scan()
            summary.append({"log": path, "lines": result.lines, "hits": result.hits,
                            "rotated": result.rotated, "truncated": result.truncated})
    finally:
        conn.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for item in summary:
            print("logscan: " + " ".join(f"{k}={v}" for k, v in item.items()))
    return 0
