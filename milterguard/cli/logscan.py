"""`milterguard logscan`: record what Postfix and the kernel firewall refused
on their own as hits, from log files and from the systemd journal (see
store/logscan.py and store/journalscan.py for the formats).

Run it from the timer before `bans sync`; each run reads only new lines
and new journal entries. A source that cannot be read (a log file that
does not exist, a journal journalctl cannot open) is reported with its
name and skipped: the other sources are still read, and the exit status
is 1 so the failure shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from milterguard.cli.main import add_config_arguments
from milterguard.config import Config, load_config
from milterguard.errors import MilterguardError
from milterguard.store import db
from milterguard.store.journalscan import JournalScanner, JournalSource, journal_sources
from milterguard.store.logscan import LogScanner
from milterguard.yamlsrc import LDict

HELP = __doc__.split("\n\n", 1)[1] + """
Sources: logscan.files (log files) and logscan.journal (the journal: on by
default, since Debian 12 logs to the journal and has no /var/log/mail.log).
Sources given on the command line (--log, --journal, --journal-directory)
replace the config's.
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("logscan", help="record Postfix and firewall rejects as hits",
                              description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--log", metavar="FILE", action="append",
                   help="log file to read (repeatable; default: logscan.files in the config)")
    p.add_argument("--journal", action="store_true",
                   help="read the machine's systemd journal (default: logscan.journal.enabled)")
    p.add_argument("--journal-directory", metavar="DIR", action="append",
                   help="read the journal files in DIR (journalctl --directory; repeatable)")
    p.add_argument("--json", action="store_true", help="print a summary as JSON")
    p.set_defaults(func=run)


def _sources(args: argparse.Namespace,
             config: Config) -> tuple[list[str], list[JournalSource]]:
    """(log files, journal sources) from the command line or the config."""
    section = config.section("logscan")
    journal_section = section.get("journal")
    if not isinstance(journal_section, LDict):
        raise section.error("must be a mapping (see the built-in defaults)", "journal")
    if args.log or args.journal or args.journal_directory:
        files = list(args.log or [])
        journals: list[JournalSource] = []
        if args.journal:
            journals += journal_sources(journal_section)
        if args.journal_directory:
            journals += journal_sources(journal_section, args.journal_directory)
        return files, journals
    files = section.get("files") or []
    if not isinstance(files, list):
        raise section.error("must be a list of log files", "files")
    enabled = journal_section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise journal_section.error("must be true or false", "enabled")
    return [str(f) for f in files], journal_sources(journal_section) if enabled else []


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.state_dir)
    files, journals = _sources(args, config)
    if not files and not journals:
        print("logscan: no sources (logscan.files is empty and logscan.journal.enabled "
              "is false)", file=sys.stderr)
        return 1
    conn = db.connect(config.database)
    summary: list[dict[str, Any]] = []
    failed = 0
    try:
        for path in files:
            try:
                result = LogScanner(conn, path, host=config.host_name).scan()
            except OSError as exc:
                failed += 1
                hint = (" (no syslog daemon? Postfix may log to the journal: logscan.journal)"
                        if isinstance(exc, FileNotFoundError) else "")
                print(f"logscan: {path}: cannot read: {exc.strerror}{hint}", file=sys.stderr)
                summary.append({"log": path, "error": exc.strerror})
                continue
            summary.append({"log": path, "lines": result.lines, "hits": result.hits,
                            "rotated": result.rotated, "truncated": result.truncated})
        for source in journals:
            try:
                result = JournalScanner(conn, source, host=config.host_name).scan()
            except MilterguardError as exc:
                failed += 1
                print(f"logscan: {exc}", file=sys.stderr)
                summary.append({"log": source.key, "error": str(exc)})
                continue
            summary.append({"log": source.key, "entries": result.lines, "hits": result.hits})
    finally:
        conn.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for item in summary:
            if "error" not in item:
                print("logscan: " + " ".join(f"{k}={v}" for k, v in item.items()))
    return 1 if failed else 0
