"""The SMTP path's database stages on PostgreSQL beside SQLite, 10 sessions at once.

    python3 bench/bench_db.py [--sessions 10] [--messages 300] [--rounds 3]

Starts a private PostgreSQL (tests/pgserver.py: initdb and pg_ctl in a
temporary directory, loopback only), and a SQLite file next to it. Then, in
alternating rounds so machine noise hits both engines alike, ``--sessions``
threads play SMTP sessions against each engine:

- greylist: ``Greylist.check`` at RCPT, as the session calls it (under
  ``store.deadline``, on the deadline's worker threads): per message one
  first attempt (a write), one retry after the delay (a pass: writes the
  triplet and the client network) and two known lookups (reads);
- hits: ``HitStore.record`` of the three hits of a rejected message (the
  SMTP side: it only queues), then the time the writer needs to commit
  everything (``flush``), as hits per second.

Printed per stage and engine: p50 and p99 of one call in microseconds (all
rounds pooled), and PostgreSQL's p50/p99 as a ratio of SQLite's. The
figures are for this machine at the time of the run; compare ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Callable

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from milterguard.greylist.settings import GreylistSettings
from milterguard.greylist.triplets import Greylist
from milterguard.store.hits import HitStore
from milterguard.verdict import Action, Hit
from tests.pgserver import PostgresServer

NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def in_threads(sessions: int, work: Callable[[int], list[float]]) -> list[float]:
    """Run ``work(session)`` in ``sessions`` threads started together."""
    barrier = threading.Barrier(sessions)
    out: list[list[float]] = [[] for _ in range(sessions)]

    def run(n: int) -> None:
        barrier.wait()
        out[n] = work(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [v for part in out for v in part]


def greylist_round(database: str, sessions: int, messages: int, round_no: int) -> list[float]:
    clock = Clock()
    greylist = Greylist(GreylistSettings(enabled=True, delay=300, auto_allowlist_after=0),
                        database, clock)
    try:
        # First attempts at NOW, then the retries and known lookups after the delay.
        first = in_threads(sessions, lambda s: _first_attempts(greylist, s, messages, round_no))
        clock.now = NOW + 301
        later = in_threads(sessions, lambda s: _retries(greylist, s, messages, round_no))
        return first + later
    finally:
        greylist.close()


def _sender(session: int, i: int, round_no: int) -> str:
    return f"news@list{round_no}-{session}-{i}.example"


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _first_attempts(greylist: Greylist, session: int, messages: int, round_no: int) -> list[float]:
    client = f"192.0.2.{session + 1}"
    return [_timed(lambda i=i: greylist.check(client, _sender(session, i, round_no),
                                              "alice@example.com"))
            for i in range(messages)]


def _retries(greylist: Greylist, session: int, messages: int, round_no: int) -> list[float]:
    """Per message: the retry that passes, then two known lookups."""
    client = f"192.0.2.{session + 1}"
    times = []
    for i in range(messages):
        for _ in range(3):
            times.append(_timed(lambda i=i: greylist.check(
                client, _sender(session, i, round_no), "alice@example.com")))
    return times


def hits_round(database: str, sessions: int, messages: int) -> tuple[list[float], float]:
    store = HitStore(database, batch_size=500, host="bench.example.net")
    try:
        def work(session: int) -> list[float]:
            times = []
            for i in range(messages):
                hits = [Hit(rule, "bench", stage, Action.REJECT,
                            client_addr=f"198.51.100.{session + 1}", queue_id=f"Q{session}x{i}")
                        for rule, stage in (("helo.r", "helo"), ("hdr.r", "header"),
                                            ("body.r", "eom"))]
                started = time.perf_counter()
                store.record(hits)
                times.append(time.perf_counter() - started)
            return times

        started = time.perf_counter()
        times = in_threads(sessions, work)
        if not store.flush(300):
            raise RuntimeError("hits were not written within 300 s")
        rate = sessions * messages * 3 / (time.perf_counter() - started)
        return times, rate
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--messages", type=int, default=150, help="per session and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="mg-bench-db-")
    server = PostgresServer().start()
    try:
        engines = {"sqlite": os.path.join(tmp, "bench.db"), "postgresql": server.create_database()}
        grey: dict[str, list[float]] = {e: [] for e in engines}
        record: dict[str, list[float]] = {e: [] for e in engines}
        rates: dict[str, list[float]] = {e: [] for e in engines}
        for round_no in range(args.rounds):
            order = list(engines) if round_no % 2 == 0 else list(reversed(engines))
            for name in order:
                grey[name] += greylist_round(engines[name], args.sessions, args.messages,
                                             round_no)
                times, rate = hits_round(engines[name], args.sessions, args.messages)
                record[name] += times
                rates[name].append(rate)

        print(f"database stages, {args.sessions} concurrent sessions, {args.rounds} rounds"
              f" alternating, {args.messages} messages per session and round")
        print(f"{'stage':<26} {'engine':<11} {'p50 us':>9} {'p99 us':>9}"
              f" {'pg/sqlite p50':>14} {'p99':>6}")
        for stage, data in (("greylist check (RCPT)", grey), ("hits record (queue)", record)):
            base50, base99 = percentile(data["sqlite"], 0.5), percentile(data["sqlite"], 0.99)
            for name in engines:
                p50, p99 = percentile(data[name], 0.5), percentile(data[name], 0.99)
                ratio = "" if name == "sqlite" else f"{p50 / base50:14.2f} {p99 / base99:6.2f}"
                print(f"{stage:<26} {name:<11} {p50 * 1e6:9.0f} {p99 * 1e6:9.0f} {ratio}")
        best = {name: max(values) for name, values in rates.items()}
        print(f"{'hits written (writer)':<26} " + "  ".join(
            f"{name} {rate:,.0f}/s" for name, rate in best.items())
            + f"  pg/sqlite {best['postgresql'] / best['sqlite']:.2f}")
    finally:
        server.remove()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
