#!/usr/bin/env python3
"""Differential check of the Hyperscan-screened regex matcher on a corpus.

For every message under CORPUS (default ../shared/corpus) and every target
the rule set reads, each text is matched by the rule set's own matcher
(Hyperscan screen when installed) and by the pure-`regex` reference
(RegexMatcher(compiled=False)); any difference in rule ids, patterns,
excerpts or order is printed and makes the exit status 1. It also prints
how many texts were screened and the regex time of both.

Not a test: tests never read ../shared. Run it before switching engines or
changing hsscreen.py:

    .venv/bin/python scripts/hs_differential.py [CORPUS] [--rules DIR ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from milterguard.content.views import MessageViews
from milterguard.replay.message import parse_message
from milterguard.ruleset import hsscreen
from milterguard.ruleset.matcher import RegexMatcher
from milterguard.ruleset.rules import ENVELOPE_TARGETS, load_ruleset


def message_files(corpus: str) -> list[str]:
    out = []
    for root, _dirs, files in os.walk(corpus):
        out.extend(os.path.join(root, f) for f in files
                   if f.endswith(".eml") or (f[0].isdigit() and "." in f))
    return sorted(out)


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", nargs="?", default=os.path.join(here, "..", "..", "shared", "corpus"))
    ap.add_argument("--rules", action="append", default=[], help="site rule files or directories")
    args = ap.parse_args()
    if not hsscreen.AVAILABLE:
        print("hyperscan is not installed: nothing to compare", file=sys.stderr)
        return 2
    rules = load_ruleset(True, args.rules)
    pairs = []
    for target, matcher in rules.matchers.items():
        if matcher.regexes.patterns:
            reference = RegexMatcher(matcher.regexes.patterns, compiled=False)
            pairs.append((target, matcher.regexes, reference))
    files = message_files(args.corpus)
    if not files:
        print(f"{args.corpus}: no messages found", file=sys.stderr)
        return 2
    differences = texts = screened = hits = 0
    fast_time = reference_time = 0.0
    clock = time.perf_counter
    for path in files:
        with open(path, "rb") as handle:
            parsed = parse_message(handle.read())
        views = MessageViews(parsed.milter_headers(), parsed.body)
        env = parsed.envelope
        envelope = {"client": [env.client_addr, env.client_name], "helo": [env.helo],
                    "mail": [env.sender or ""], "rcpt": list(env.recipients)}
        for target, fast, reference in pairs:
            for text in (envelope[target] if target in ENVELOPE_TARGETS else views.texts(target)):
                texts += 1
                screened += bool(text) and text.isascii()
                t0 = clock()
                got = fast.search(text)
                t1 = clock()
                want = reference.search(text)
                fast_time += t1 - t0
                reference_time += clock() - t1
                hits += len(want)
                if got != want:
                    differences += 1
                    print(f"DIFF {path} {target}: hyperscan {got!r} reference {want!r}")
    print(f"{len(files)} messages, {texts} texts ({screened} screened by Hyperscan), "
          f"{hits} regex hits, {differences} differences")
    print(f"regex time: screened {fast_time * 1e3:.0f} ms, reference {reference_time * 1e3:.0f} ms "
          f"({reference_time / max(fast_time, 1e-9):.2f}x)")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
