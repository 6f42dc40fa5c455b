"""Time `milterguard stats` on a generated store of 1,000,000 hits.

Generates the store (bulk insert with the store's own schema), then times
the stats queries and the whole `milterguard stats` command in a
subprocess. Baseline in the same run: one plain read of every row
(``SELECT ... FROM hits``), i.e. what a naive full scan in Python costs.
Target: stats under 5 s. Also prints EXPLAIN QUERY PLAN of each query.

    python3 bench/bench_stats.py [--rows 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from milterguard.store import db
from milterguard.report import stats
from milterguard.store.bans import BANS_SCHEMA
from milterguard.store.hits import HITS_SCHEMA, HIT_COLUMNS

KINDS = [  # (stage, rule_id, category, action, source, weight)
    ("connect", "dnsbl:zen", "dnsbl", "reject", "milter", 30),
    ("helo", "helo:non-fqdn", "bad-helo", "reject", "milter", 10),
    ("helo", "helo-dynamic-pool", "bad-helo", "continue", "milter", 5),
    ("mail", "envelope:sender-nxdomain", "bad-sender", "reject", "milter", 8),
    ("rcpt", "greylist", "greylist", "tempfail", "milter", 15),
    ("eoh", "pharmacy-subject", "pharmacy", "reject", "milter", 6),
    ("eoh", "hdr-no-message-id", "header-structure", "continue", "milter", 6),
    ("eom", "gtube", "gtube", "reject", "milter", 2),
    ("eom", "phish-verify-account", "phishing", "continue", "milter", 5),
    ("connect", "firewall.probe", "probe", "reject", "logscan", 8),
    ("connect", "postscreen.pregreet", "postscreen", "reject", "logscan", 3),
    ("auth", "postfix.sasl_failed", "sasl", "reject", "logscan", 2),
]


def generate(path: str, rows: int, now: float, days: float = 30.0) -> float:
    """Insert ``rows`` hits spread over ``days`` before ``now``; returns seconds."""
    started = time.perf_counter()
    # Build the store as migration 2 left it, fill it, then let db.open_database()
    # apply the later migrations: the stats indexes are then built by one
    # sort (fast), and the run also shows an old store being upgraded.
    conn = db.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS schema_versions ("
                 " component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    for step in HITS_SCHEMA.migrations[:2]:
        for stmt in step:
            conn.execute(stmt)
    conn.execute("INSERT INTO schema_versions VALUES ('hits', 2)")
    db.migrate(conn, [BANS_SCHEMA])
    conn.execute("PRAGMA synchronous=OFF")
    rnd = random.Random(7)
    weights = [k[5] for k in KINDS]
    placeholders = ", ".join("?" for _ in HIT_COLUMNS)
    sql = f"INSERT INTO hits ({', '.join(HIT_COLUMNS)}) VALUES ({placeholders})"
    batch = []
    conn.execute("BEGIN")
    for i in range(rows):
        stage, rule, cat, action, source, _ = rnd.choices(KINDS, weights)[0]
        addr = f"198.51.{rnd.randrange(100)}.{rnd.randrange(256)}" if i % 3 else \
            f"203.0.113.{rnd.randrange(256)}"
        observe = 1 if i % 97 == 0 else 0
        batch.append((now - rnd.random() * days * 86400, addr, "host.example",
                      "s@example.com", "r@example.net", stage, rule, cat, action, "",
                      observe, "", 0.0, "", source))
        if len(batch) >= 50_000:
            conn.executemany(sql, batch)
            batch = []
    if batch:
        conn.executemany(sql, batch)
    for i in range(2000):
        conn.execute("INSERT INTO bans (addr, category, reason, created, expires) "
                     "VALUES (?, 'dnsbl', 'bench', ?, ?)",
                     (f"203.0.113.{i % 256}" if i < 256 else f"2001:db8::{i:x}",
                      now - 3600, now + (3600 if i % 2 else -60)))
    conn.execute("COMMIT")
    conn.close()
    conn = db.open_database(path, [HITS_SCHEMA, BANS_SCHEMA])   # migration 3: the indexes
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - started


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", metavar="DIR", help="keep the generated store here")
    args = ap.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="mg-bench-stats-")
    path = os.path.join(work, "milterguard.db")
    try:
        now = time.time()
        if not os.path.exists(path):
            print(f"generating {args.rows} hits ...", flush=True)
            print(f"generate: {generate(path, args.rows, now):.1f} s")
        conn = db.open_database(path, [HITS_SCHEMA, BANS_SCHEMA])
        base_t, n = timed(lambda: sum(1 for _ in conn.execute(
            "SELECT ts, client_addr, stage, category, rule_id, observe, source FROM hits")))
        print(f"baseline: read all {n} rows in Python: {base_t:.2f} s")
        for since_label, since in (("all", 0.0), ("3d", now - 3 * 86400)):
            t, st = timed(lambda since=since: stats.compute_stats(conn, since, clock=lambda: now,
                                                     rule_ids=["never-a", "gtube"]))
            print(f"compute_stats since={since_label}: {t:.2f} s  "
                  f"(ratio to baseline {t / base_t:.2f}); hits={st.total_hits} "
                  f"addresses={st.total_addresses}")
            t2, _ = timed(lambda since=since: stats.hits_over_time(conn, since, now))
            print(f"hits_over_time since={since_label}: {t2:.2f} s")
        conn.close()
        env = dict(os.environ, PYTHONPATH=REPO)
        for since_label in ("all", "3d"):
            cmd = [sys.executable, "-m", "milterguard", "stats", "--state-dir", work,
                   "--since", since_label]
            started = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
            t = time.perf_counter() - started
            print(f"`milterguard stats --since {since_label}` (whole command, shipped "
                  f"rules loaded): {t:.2f} s rc={proc.returncode}  target < 5 s: "
                  f"{'OK' if t < 5 and proc.returncode == 0 else 'MISSED'}")
            if proc.returncode:
                print(proc.stderr[-2000:])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
