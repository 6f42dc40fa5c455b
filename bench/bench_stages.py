"""Per-stage CPU of the Session on the throughput bench's message, A/B.

    python3 bench/bench_stages.py                      # this checkout
    python3 bench/bench_stages.py --against REV        # A = REV, B = this checkout
    python3 bench/bench_stages.py --against /some/tree # A = another checkout

bench_postfix.py says whether milterguard is fast enough; this one says
which stage got faster or slower with a change, without Postfix. It replays
bench_postfix.MESSAGE (plus the Received header Postfix adds) through a
Session built from the shipped defaults (loopback not allowlisted, DNS
checks off, logging at WARNING, as in the Postfix bench) and prints the
best microseconds per stage: connect, helo, mail, rcpt, the headers, end
of headers, end of message, close.

This machine is shared and noisy: the same code has swung 2x between two
runs a minute apart. So with --against the two checkouts run in separate
processes, alternating, several rounds, and each stage keeps its best
(lowest) figure per side; compare the two columns, not runs made at
different times. REV is any git revision: it is checked out into a
temporary worktree, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

STAGES = ("connect", "helo", "mail", "rcpt", "headers", "eoh", "eom", "close")

#: What Postfix puts in front of the message before the milter sees it.
RECEIVED = ("from client.example.net (client.example.net [192.0.2.9])\r\n"
            "\tby mx.example.org (Postfix) with ESMTP id 4F1A2B3C\r\n"
            "\tfor <bob@example.org>; Tue,  4 Mar 2025 10:15:01 +0100 (CET)")


def measure(messages: int, repeats: int) -> dict[str, float]:
    """Best microseconds per stage in this process (the checkout on sys.path)."""
    import logging

    # The package first: bench_session puts this checkout on sys.path, and
    # with --against the package must stay the other checkout's.
    from milterguard.config import load_config
    from milterguard.milter.engine import Engine
    sys.path.insert(0, HERE)
    from bench_postfix import MESSAGE
    from bench_session import CONFIG, run_one, split_message

    logging.basicConfig(level=logging.WARNING)
    headers, body = split_message(MESSAGE.encode())
    headers = [("Received", RECEIVED)] + headers
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(CONFIG)
        engine = Engine.from_config(load_config(path, tmp), with_store=False)
        clock = time.perf_counter_ns
        acc = dict.fromkeys(STAGES, 0)
        last = [0]

        def tick(stage: str) -> None:
            now = clock()
            acc[stage] += now - last[0]
            last[0] = now

        def one() -> None:
            last[0] = clock()
            run_one(engine, headers, body, tick)

        try:
            for _ in range(max(1, messages // 10)):   # warm caches and lazy compiles
                one()
            best = dict.fromkeys(STAGES, float("inf"))
            for _ in range(repeats):
                acc.update(dict.fromkeys(STAGES, 0))
                for _ in range(messages):
                    one()
                for stage in STAGES:
                    best[stage] = min(best[stage], acc[stage] / messages / 1000)
        finally:
            engine.close()
    return best


def run_in(tree: str, messages: int, repeats: int) -> dict[str, float]:
    """measure() in a subprocess that imports the package from ``tree``
    (this script and its bench helpers stay ours, so any revision works)."""
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, os.path.abspath(__file__),
                          "--child", "--messages", str(messages), "--repeats", str(repeats)],
                         env=env, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def show(label: str, figures: dict[str, float]) -> None:
    cells = "  ".join(f"{stage}={figures[stage]:.1f}" for stage in STAGES)
    print(f"{label:<3} {cells}  total={sum(figures.values()):.1f} us")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", help="git revision or checkout directory to compare with (side A)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds with --against")
    ap.add_argument("--messages", type=int, default=1000, help="messages per repeat")
    ap.add_argument("--repeats", type=int, default=5, help="repeats per process (best kept)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        sys.path.insert(0, os.getcwd())   # the checkout being measured
        print(json.dumps(measure(args.messages, args.repeats)))
        return 0
    if not args.against:
        sys.path.insert(0, ROOT)
        show("B", measure(args.messages, args.repeats))
        return 0

    worktree = None
    other = args.against
    if not os.path.isdir(other):
        worktree = tempfile.mkdtemp(prefix="mg-stages-")
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", worktree, other],
                       check=True, capture_output=True)
        other = worktree
    try:
        best = {"A": dict.fromkeys(STAGES, float("inf")), "B": dict.fromkeys(STAGES, float("inf"))}
        for _ in range(args.rounds):
            for side, tree in (("A", other), ("B", ROOT)):
                figures = run_in(tree, args.messages, args.repeats)
                for stage in STAGES:
                    best[side][stage] = min(best[side][stage], figures[stage])
        print(f"A = {args.against}\nB = {ROOT} (working tree)\n"
              f"best of {args.rounds} alternating rounds x {args.repeats} repeats x "
              f"{args.messages} messages, us per message")
        show("A", best["A"])
        show("B", best["B"])
        total_a, total_b = sum(best["A"].values()), sum(best["B"].values())
        print(f"B/A total = {total_b / total_a:.3f}")
    finally:
        if worktree:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", worktree],
                           capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
