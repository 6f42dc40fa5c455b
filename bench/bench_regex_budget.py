"""What a catastrophic pattern costs one message, and the other sessions.

    python3 bench/bench_regex_budget.py [--headers 20] [--rounds 3]

Issue 12 finding 5: a pattern like ``(a|aa)+$`` over many texts used to
cost the per-search timeout once per text (300 headers: 75 s), holding the
GIL all along, so every other session waited. This runs the same message
(``--headers`` headers that make the pattern backtrack) through the
matcher two ways, alternating, in one process:

- before: every search with the per-search timeout, holding the GIL
  (what the matcher did before the budget);
- after: the matcher as it is (``timed_search`` with a ScanBudget of
  ``message.regex_time``).

and meanwhile a second thread ("another session") does small units of
Python work; the longest gap between two of its units is how long the
other sessions stood still. Figures are seconds; compare the two lines of
one run, not runs made at different times.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import regex

from milterguard.ruleset.budget import ScanBudget
from milterguard.ruleset.matcher import REGEX_TIMEOUT, TargetMatcher

PATTERN = regex.compile(r"(a|aa)+$", regex.I | regex.V0)


def before(texts: list[str]) -> None:
    for text in texts:
        try:
            PATTERN.search(text, timeout=REGEX_TIMEOUT, concurrent=False)
        except TimeoutError:
            pass


def after(texts: list[str], seconds: float) -> ScanBudget:
    budget = ScanBudget(seconds)
    TargetMatcher([], [("evil", PATTERN)]).search(texts, budget)
    return budget


def with_bystander(work) -> tuple[float, float]:
    """(seconds the work took, longest stall of another thread meanwhile)."""
    stop = threading.Event()
    worst = [0.0]

    def bystander() -> None:
        last = time.monotonic()
        while not stop.is_set():
            sum(range(200))
            now = time.monotonic()
            worst[0] = max(worst[0], now - last)
            last = now

    thread = threading.Thread(target=bystander)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    work()
    took = time.monotonic() - started
    stop.set()
    thread.join()
    return took, worst[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--headers", type=int, default=20, help="texts that make the pattern backtrack")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--regex-time", type=float, default=1.0, help="the budget (message.regex_time)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)   # one regex-timeout line per search otherwise
    texts = [f"X-Pad-{i}: " + "a" * 60 + "!" for i in range(args.headers)]
    rows = {"before": [], "after": []}
    for _ in range(args.rounds):
        rows["before"].append(with_bystander(lambda: before(texts)))
        rows["after"].append(with_bystander(lambda: after(texts, args.regex_time)))
    print(f"{args.headers} texts against (a|aa)+$, best of {args.rounds} alternating rounds")
    for name, runs in rows.items():
        took = min(r[0] for r in runs)
        stall = min(r[1] for r in runs)
        print(f"{name:<7} message {took:7.2f} s   longest stall of another thread {stall:6.3f} s")
    b, a = (min(r[0] for r in rows[k]) for k in ("before", "after"))
    print(f"after/before message time = {a / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
