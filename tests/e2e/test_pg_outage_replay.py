"""PostgreSQL stopped in the middle of a replay of 500 messages.

The daemon runs on its own private PostgreSQL with greylisting on and a
metrics listener. Four replay workers send 500 messages over the milter
socket, paced at 50 a second; after 150 verdicts the server is stopped,
after 350 (about 4 s later) it is started again. Every message must still get a verdict (no replay error, no
timeout: the replay's per-message deadline is 10 s, the daemon's
store.deadline 1 s), greylisting must fail open while the database is away,
and once it is back every hit the daemon counted must be in the database
with none dropped (the queue bound, 100000, is far above what 500 messages
make). The figures are printed for the record (pytest -s shows them).
"""

from __future__ import annotations

import concurrent.futures
import re
import statistics
import time
import urllib.request

from milterguard.replay.conversation import replay_message
from milterguard.store import engines

N_MESSAGES, STOP_AT, START_AT = 500, 150, 350
#: Seconds between message starts: the replay takes ~10 s and the outage
#: ~4 s, long enough for the daemon to retry and skip the database a few
#: times over (store/health.py waits 2 s between tries).
PACE = 0.02
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(i: int) -> bytes:
    body = GTUBE if i % 2 else "Hello Alice, the minutes follow next week."
    return (f"X-Replay-Client: 192.0.2.{i % 200 + 1}\r\n"
            f"X-Replay-Helo: mail{i}.example.net\r\n"
            f"X-Replay-Mail-From: <sender{i}@example.org>\r\n"
            "X-Replay-Rcpt-To: <alice@example.com>\r\n"
            f"From: <sender{i}@example.org>\r\nTo: <alice@example.com>\r\n"
            f"Subject: message {i}\r\nMessage-ID: <m{i}@example.org>\r\n"
            "Date: Tue, 02 Jan 2024 10:00:00 +0000\r\n\r\n" + body + "\r\n").encode()


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(milterguard_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def test_stopping_postgresql_mid_replay_loses_no_verdict_and_no_hit(milterguard_factory,
                                                                    free_tcp_port):
    from tests.pgserver import PostgresServer
    server = PostgresServer().start()
    try:
        url = server.create_database()
        daemon = milterguard_factory(
            f'database: "{url}"\n'
            "server:\n  hostname: mx1.example.net\n"
            "greylist:\n  enabled: true\n"
            "store:\n  deadline: 1s\n"
            f"metrics:\n  listen: 127.0.0.1:{free_tcp_port}\n"
            "envelope:\n  reject_unknown_sender_domain: false\n  reject_null_mx: false\n"
            "helo:\n  reject_unknown: false\n"
            "rules:\n  site: []\n")
        results: list[tuple[int, object, str]] = []      # (index, result, phase)
        phase = "up"
        peak_queued = 0.0
        started = time.monotonic()
        stopped_at = restarted_at = 0.0
        def paced(i: int) -> object:
            time.sleep(max(0.0, started + i * PACE - time.monotonic()))
            return replay_message(daemon.spec, message(i), f"m{i}", 10.0)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = {pool.submit(paced, i): i for i in range(N_MESSAGES)}
            for future in concurrent.futures.as_completed(futures):
                results.append((futures[future], future.result(), phase))
                if len(results) == STOP_AT:
                    server.stop()
                    stopped_at, phase = time.monotonic(), "down"
                elif len(results) == START_AT:
                    peak_queued = scrape(free_tcp_port).get("milterguard_hits_queued", 0.0)
                    server.start()
                    restarted_at, phase = time.monotonic(), "back"
        elapsed = time.monotonic() - started

        errors = [(i, r.reply) for i, r, _ in results if r.action in ("error", "")]
        assert errors == []
        assert len(results) == N_MESSAGES
        down = [r for _, r, p in results if p == "down"]
        # While the database was away greylisting failed open: GTUBE mail
        # reached the body rules and was rejected there.
        assert any(r.action == "reject" and "gtube" in r.hits for r in down)
        assert peak_queued > 0

        # Back: the queue drains into the database, nothing dropped.
        deadline = time.monotonic() + 120
        while True:
            metrics = scrape(free_tcp_port)
            if metrics.get("milterguard_hits_queued", 1) == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert metrics["milterguard_hits_queued"] == 0
        assert metrics.get("milterguard_hits_dropped_total", 0) == 0
        assert metrics["milterguard_database_up"] == 1
        assert metrics["milterguard_database_outages_total"] >= 1
        conn = engines.connect(url)
        try:
            stored = int(conn.execute("SELECT COUNT(*) FROM hits").fetchone()[0])
        finally:
            conn.close()
        counted = metrics["milterguard_hits_total"]
        assert stored == counted
        log = daemon.log_text()
        assert "event=database_down" in log and "event=database_up" in log

        ms = {p: [r.ms for _, r, ph in results if ph == p] for p in ("up", "down", "back")}
        print(f"\noutage replay: {N_MESSAGES} messages in {elapsed:.1f}s, PostgreSQL down"
              f" {restarted_at - stopped_at:.1f}s, hits counted {counted:.0f}, stored {stored},"
              f" queued at restart {peak_queued:.0f}, dropped 0")
        for p, values in ms.items():
            values.sort()
            print(f"  {p:<5} {len(values):>4} messages  p50 {statistics.median(values):7.1f} ms"
                  f"  p99 {values[int(len(values) * 0.99) - 1]:7.1f} ms  max {values[-1]:7.1f} ms")
    finally:
        server.remove()
