"""Greylist lookups per second on a store of 10,000 and of 1,000,000 triplets.

    python3 bench/bench_greylist.py [--small 10000] [--large 1000000] [--lookups 20000]

Both stores are built in the same run (bulk insert with executemany in one
transaction), then measured alternately, several rounds each, so machine
noise hits both alike. The figure that matters is the ratio large/small:
the key is a 64-bit hash with its own index, so a lookup is one index
probe and the ratio should stay near 1 (the target is >= 0.5).

Measured: ``Greylist.decide`` of known (passed) triplets, the common case
at RCPT (read only), and of first attempts (a write each); plus known
lookups from 4 threads on the large store.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from milterguard.greylist.settings import GreylistSettings
from milterguard.greylist.triplet_key import triplet_key
from milterguard.greylist.triplets import Greylist

NOW = 1_700_000_000.0
#: Documentation networks only (RFC 5737); the variety is in sender and recipient.
CLIENTS = [("192.0.2.10", "192.0.2.0/24"), ("198.51.100.10", "198.51.100.0/24"),
           ("203.0.113.10", "203.0.113.0/24")]


def triplet(i: int) -> tuple[str, str, str, str]:
    """(client address, its /24, normalised sender, recipient) of triplet i."""
    addr, net = CLIENTS[i % 3]
    # Digits in a sender's local part are normalised away, so vary the domain.
    return addr, net, f"news@list{i % 50000}.example", f"user{i}@example.com"


def build(path: str, count: int) -> Greylist:
    settings = GreylistSettings(enabled=True, auto_allowlist_after=0)
    greylist = Greylist(settings, path, clock=lambda: NOW)
    started = time.perf_counter()
    rows = []
    for i in range(count):
        _, net, sender, rcpt = triplet(i)
        rows.append((triplet_key(net, sender, rcpt), net, sender, rcpt,
                     NOW - 600, NOW, NOW - 300, NOW + settings.lifetime, 2))
    # In key order, the primary-key B-tree only ever appends: several times
    # faster than inserting hashes in random order.
    rows.sort()
    with greylist.pool.connection() as conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO greylist_triplets (key, client_net, sender, rcpt,"
                         " first_seen, last_seen, passed_at, expires, attempts)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(path) / 1e6
    print(f"built {count:>9,} triplets in {time.perf_counter() - started:6.1f} s"
          f" ({size:,.0f} MB)")
    return greylist


def known_rate(greylist: Greylist, count: int, n: int, seed: int) -> float:
    rng = random.Random(seed)
    sample = [triplet(rng.randrange(count)) for _ in range(n)]
    started = time.perf_counter()
    for addr, _, sender, rcpt in sample:
        if greylist.decide(addr, sender, rcpt).outcome != "known":
            raise SystemExit("bench: a stored triplet was not found")
    return n / (time.perf_counter() - started)


def new_rate(greylist: Greylist, n: int, tag: str) -> float:
    started = time.perf_counter()
    for i in range(n):
        if greylist.decide("192.0.2.10", f"fresh@{tag}.example",
                           f"new{i}@example.net").outcome != "new":
            raise SystemExit("bench: a fresh triplet was not new")
    return n / (time.perf_counter() - started)


def threaded_rate(greylist: Greylist, count: int, n: int, threads: int) -> float:
    per = n // threads
    barrier = threading.Barrier(threads + 1)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        sample = [triplet(rng.randrange(count)) for _ in range(per)]
        barrier.wait()
        for addr, _, sender, rcpt in sample:
            greylist.decide(addr, sender, rcpt)

    workers = [threading.Thread(target=worker, args=(s,)) for s in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    return per * threads / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="mg-bench-greylist-")
    try:
        small = build(os.path.join(tmp, "small.db"), args.small)
        large = build(os.path.join(tmp, "large.db"), args.large)
        known = {"small": [], "large": []}
        fresh = {"small": [], "large": []}
        for r in range(args.rounds):
            # Alternate, so drift in machine load hits both stores alike.
            for name, gl, count in (("small", small, args.small), ("large", large, args.large)):
                known[name].append(known_rate(gl, count, args.lookups, seed=r))
                fresh[name].append(new_rate(gl, args.lookups // 10, f"r{r}"))
        threaded = threaded_rate(large, args.large, args.lookups, 4)
        k_small, k_large = statistics.median(known["small"]), statistics.median(known["large"])
        f_small, f_large = statistics.median(fresh["small"]), statistics.median(fresh["large"])
        print(f"known triplet lookups/s   {args.small:>9,}: {k_small:9,.0f}"
              f"   {args.large:>9,}: {k_large:9,.0f}   ratio {k_large / k_small:.2f}")
        print(f"first-attempt lookups/s   {args.small:>9,}: {f_small:9,.0f}"
              f"   {args.large:>9,}: {f_large:9,.0f}   ratio {f_large / f_small:.2f}")
        print(f"known lookups/s, 4 threads on {args.large:,}: {threaded:9,.0f}"
              f"   ratio to 1 thread {threaded / k_large:.2f}")
        ok = k_large / k_small >= 0.5
        print("target (large >= 0.5 x small, known lookups):", "met" if ok else "MISSED")
        small.close()
        large.close()
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
