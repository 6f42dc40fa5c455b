"""`milterguard replay`: drive a running milter with sample mail.

Prints one row (or one JSON line) per message and, with ``--expect``,
compares the results with a YAML file of expected outcomes:

    # expected.yaml, names relative to this file's directory
    spam/pharmacy.eml: reject            # shorthand: the action
    ham/newsletter.eml:
      action: accept
      stage: eom                         # optional
      hits: [tag-newsletter]             # optional, must be a subset
      reply: "550 5.7.1"                 # optional, a prefix of the reply

Exit status 1 if a message could not be replayed (action ``error``) or a
result differs from its expectation; 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from milterguard.errors import ConfigError, MilterguardError
from milterguard.replay.conversation import ReplayResult, ids_from_header
from milterguard.replay.files import collect_files, replay_files
from milterguard.replay.table import format_table
from milterguard.socketspec import parse_socket_spec
from milterguard.verdict import STAGES
from milterguard.yamlsrc import LDict, load_yaml_file

ACTIONS = ("accept", "tag", "reject", "tempfail", "discard", "quarantine", "error")
EXPECT_KEYS = ("action", "stage", "hits", "reply")
#: Below this many files a progress line is noise.
PROGRESS_MIN_FILES = 10


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay", help="replay sample mail through a running milter",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", required=True, metavar="SPEC",
                        help="milter socket: unix:/path, inet:PORT@HOST, inet6:PORT@HOST, "
                             "or Postfix's inet:HOST:PORT")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per message (differences go to stderr)")
    parser.add_argument("--expect", metavar="FILE", help="YAML file of expected results")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for each milter reply (default 10)")
    parser.add_argument("--add-missing-headers", action="store_true",
                        help="add Message-Id, Date and From when missing, as Postfix's cleanup "
                             "does for its local_header_rewrite_clients (by default its own "
                             "addresses) or with always_add_missing_headers = yes")
    parser.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                        help="replay N messages in parallel (default 1)")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="message files or directories (searched recursively)")
    parser.set_defaults(func=run)


# ------------------------------------------------------------ expectations

def _expected_entry(name: str, value: Any, doc: LDict) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"action": value}
    if not isinstance(value, dict):
        raise doc.error("expected an action or a mapping", key=name)
    where = value if isinstance(value, LDict) else doc
    for key in value:
        if key not in EXPECT_KEYS:
            raise where.error(f"unknown key (use {', '.join(EXPECT_KEYS)})", key=key)
    if value.get("action") not in ACTIONS:
        raise where.error(f"action must be one of {', '.join(ACTIONS)}",
                          key="action" if "action" in value else None)
    if "stage" in value and value["stage"] not in STAGES:
        raise where.error(f"stage must be one of {', '.join(STAGES)}", key="stage")
    hits = value.get("hits", [])
    if isinstance(hits, str):
        hits = ids_from_header(hits)
    if not isinstance(hits, list):
        raise where.error("hits must be a list of rule ids", key="hits")
    return {"action": value["action"], "stage": value.get("stage"),
            "hits": [str(h) for h in hits], "reply": value.get("reply")}


def load_expectations(path: str) -> dict[str, dict[str, Any]]:
    doc = load_yaml_file(path)
    if doc is None:
        return {}
    if not isinstance(doc, LDict):
        raise ConfigError("expected a mapping of file name to expected result", file=path)
    return {os.path.normpath(str(k)): _expected_entry(k, v, doc) for k, v in doc.items()}


def compare(results: list[ReplayResult], expect: dict[str, dict[str, Any]],
            expect_file: str) -> list[str]:
    """One line per difference between results and expectations."""
    base = os.path.dirname(os.path.abspath(expect_file))
    diffs: list[str] = []
    for res in results:
        key = os.path.normpath(os.path.relpath(os.path.abspath(res.file), base))
        want = expect.get(key)
        if want is None:
            diffs.append(f"{res.file}: no expectation in {expect_file} "
                         f"(got {res.action} at {res.stage})")
            continue
        if res.action != want["action"]:
            diffs.append(f"{res.file}: action {res.action}, expected {want['action']}"
                         + (f" ({res.reply})" if res.reply else ""))
        if want["stage"] and res.stage != want["stage"]:
            diffs.append(f"{res.file}: stage {res.stage}, expected {want['stage']}")
        missing = [h for h in want["hits"] if h not in res.hits]
        if missing:
            diffs.append(f"{res.file}: hits lack {', '.join(missing)} "
                         f"(got {', '.join(res.hits) or 'none'})")
        if want["reply"] and not res.reply.startswith(str(want["reply"])):
            diffs.append(f"{res.file}: reply {res.reply!r} does not start with "
                         f"{want['reply']!r}")
    for key in sorted(expect):
        if not os.path.exists(os.path.join(base, key)):
            diffs.append(f"{key}: expected in {expect_file} but the file does not exist")
    return diffs


# ------------------------------------------------------------ command

class _Progress:
    """A self-overwriting status line on a terminal; silent on pipes."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.enabled = total >= PROGRESS_MIN_FILES and sys.stderr.isatty()
        self.last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.2 or done == self.total):
            self.last = now
            sys.stderr.write(f"\rreplayed {done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise MilterguardError("--jobs must be at least 1")
    parse_socket_spec(args.socket)       # fail early on a bad spec
    expect = load_expectations(args.expect) if args.expect else None
    files = collect_files(args.paths, exclude=[args.expect] if args.expect else [])
    if not files:
        raise MilterguardError("no message files found")
    progress = _Progress(len(files))
    results: list[ReplayResult] = []
    try:
        for res in replay_files(args.socket, files, jobs=args.jobs, timeout=args.timeout,
                                add_missing_headers=args.add_missing_headers):
            results.append(res)
            if args.json:
                progress.close()
                print(res.to_json(), flush=True)
            progress.update(len(results))
    finally:
        progress.close()
    if not args.json:
        print(format_table(results))
    failed = any(r.action == "error" for r in results)
    if expect is not None:
        diffs = compare(results, expect, args.expect)
        out = sys.stderr if args.json else sys.stdout
        for line in diffs:
            print(f"mismatch: {line}", file=out)
        print(f"{len(results)} messages, {len(diffs)} differences from {args.expect}",
              file=out)
        failed = failed or bool(diffs)
    return 1 if failed else 0
