"""CPU cost of one message through the Session (no sockets, no libmilter).

    python3 bench/bench_session.py [--messages N] [--profile] [FILE.eml ...]

The Postfix bench (bench_postfix.py) says how much throughput milterguard
costs against a do-nothing milter; this one says where that cost goes,
without Postfix's noise: it replays the same message events the adapter
would produce through a Session built from the shipped defaults (loopback
not allowlisted, DNS checks off, as in the Postfix bench), and prints
microseconds per message, with a cProfile listing on request. Without files
it uses bench_postfix.py's message.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from milterguard.config import load_config
from milterguard.milter.engine import Engine
from milterguard.milter.session import Session

try:
    from milterguard.replay.message import parse_message
except ImportError:  # bench_stages --against a revision from before replay/ was split
    from milterguard.replay.client import parse_message

CONFIG = """\
rules: {shipped: true, site: [], reload_interval: 0}
allowlist: {networks: []}
envelope: {reject_unknown_sender_domain: false, reject_null_mx: false}
helo: {reject_unknown: false}
"""


def split_message(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Header fields as the MTA hands them to the milter, and a CRLF body."""
    parsed = parse_message(raw)
    return parsed.milter_headers(), parsed.body


def _no_tick(stage: str) -> None:
    pass


def run_one(engine: Engine, headers: list[tuple[str, str]], body: bytes,
            tick: Callable[[str], None] = _no_tick) -> None:
    """One conversation as the adapter would feed it; ``tick(stage)`` after
    each stage (bench_stages.py times them)."""
    s = Session(engine)
    s.connect("client.example.com", "192.0.2.9", 40000)
    tick("connect")
    s.helo("client.example.com")
    tick("helo")
    s.mail("sender@example.com", {"i": "4F1A2B3C"})
    tick("mail")
    s.rcpt("rcpt@example.net")
    tick("rcpt")
    s.data()
    for name, value in headers:
        s.header(name, value)
    tick("headers")
    s.eoh()
    tick("eoh")
    for i in range(0, len(body), 65535):
        s.body(body[i:i + 65535])
    s.eom()
    tick("eom")
    s.close()
    tick("close")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if args.files:
        raws = [open(f, "rb").read() for f in args.files]
    else:
        import bench_postfix
        raws = [bench_postfix.MESSAGE.encode()]
    messages = [split_message(r) for r in raws]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "bench.yaml")
        with open(cfg, "w") as fh:
            fh.write(CONFIG)
        engine = Engine.from_config(load_config(cfg, tmp), with_store=False)
        try:
            for h, b in messages:     # warm caches and lazy compiles
                run_one(engine, h, b)
            n = max(1, args.messages // len(messages))
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                for _ in range(n):
                    for h, b in messages:
                        run_one(engine, h, b)
                best = min(best, (time.perf_counter() - start) / (n * len(messages)))
            print(f"session cost: {best * 1e6:.0f} us/message (best of 3, {n * len(messages)} messages each, "
                  f"{len(engine.policy.ruleset)} rules)")
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(max(1, n // 4)):
                    for h, b in messages:
                        run_one(engine, h, b)
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        finally:
            engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
