"""Stats end to end: the real daemon fills the store, `milterguard stats` counts it.

Mail is replayed straight to the daemon's socket (the replay harness plays
Postfix). DNS is a dnspython authority on 127.0.0.1 serving the DNSBL zone
``bl.test``; its records change between messages so that one address first
fails HELO and is later listed, and must then count once, as dnsbl.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from typing import Iterator

import pytest


from tests.dnsfixtures import DnsAuthority
from milterguard.replay.conversation import replay_message

from tests import REPO_ROOT as REPO
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

#: Our own rules rather than the shipped set, which grows: the counts below
#: must not change when someone adds a rule.
SITE_RULES = """\
rules:
  - id: test-gtube
    target: body
    phrases: ["GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL"]
    action: reject
    reply: "554 5.7.1 test pattern refused"
    category: gtube
  - id: test-never
    target: header:Subject
    phrases: ["this phrase is never sent"]
    action: reject
    category: pharmacy
  - id: test-helper
    target: body
    phrases: ["minutes"]
    mode: helper
    category: misc
  - id: test-trial
    target: body
    phrases: ["minutes follow"]
    action: reject
    mode: observe
    category: misc
"""

CONFIG = """\
rules: {{shipped: false, site: [{rules}], reload_interval: 0}}
allowlist: {{networks: []}}
envelope: {{reject_unknown_sender_domain: false, reject_null_mx: false}}
helo: {{reject_unknown: false}}
dns: {{nameservers: [127.0.0.1], port: {port}, timeout: 1.0, cache: false}}
dnsbl:
  self_test: false
  deadline: 1.0
  zones:
    - {{name: bl, zone: bl.test}}
"""


def message(addr: str, helo: str, body: str = "The minutes follow next week.",
            n: int = 0) -> bytes:
    return (f"X-Replay-Client: {addr} mail.example.org\r\n"
            f"X-Replay-Helo: {helo}\r\n"
            "X-Replay-Mail-From: <news@example.org>\r\n"
            "X-Replay-Rcpt-To: <alice@example.com>\r\n"
            "From: News <news@example.org>\r\nTo: Alice <alice@example.com>\r\n"
            "Subject: minutes of the meeting\r\n"
            f"Message-ID: <minutes-{n}-{addr}@example.org>\r\n"
            "Date: Tue, 02 Jan 2024 10:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
            f"\r\nHello Alice,\r\n\r\n{body}\r\n\r\nRegards\r\n").encode()


def listed(auth: DnsAuthority, addr: str) -> None:
    name = ".".join(reversed(addr.split("."))) + ".bl.test"
    auth.records[name] = {"A": ["127.0.0.2"], "TXT": ["listed for testing"]}


def wait_hits(db_path: str, count: int, timeout: float = 20.0) -> int:
    """The store writes in the background: wait until ``count`` rows are there."""
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        if os.path.exists(db_path):
            try:
                conn = sqlite3.connect(db_path, timeout=2)
                try:
                    n = conn.execute("SELECT COUNT(*) FROM hits").fetchone()[0]
                finally:
                    conn.close()
            except sqlite3.Error:
                n = -1
            if n >= count:
                return n
        time.sleep(0.1)
    return n


@pytest.fixture
def dns_auth() -> Iterator[DnsAuthority]:
    auth = DnsAuthority({}).start()
    try:
        yield auth
    finally:
        auth.stop()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "milterguard", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=60)


def test_stats_after_replay(dns_auth, milterguard_factory, e2e_dir):
    rules = os.path.join(e2e_dir, "site-rules.yaml")
    with open(rules, "w", encoding="utf-8") as fh:
        fh.write(SITE_RULES)
    daemon = milterguard_factory(CONFIG.format(port=dns_auth.port, rules=rules))
    a, b, c, d = "203.0.113.10", "203.0.113.20", "203.0.113.30", "203.0.113.40"
    results = []
    # A fails HELO (not yet listed), then is listed and comes back with a good HELO.
    results.append(replay_message(daemon.spec, message(a, "bogus", n=1), "a1"))
    listed(dns_auth, a)
    results.append(replay_message(daemon.spec, message(a, "mail.example.org", n=2), "a2"))
    results.append(replay_message(daemon.spec, message(b, "bogus2", n=3), "b"))
    results.append(replay_message(daemon.spec, message(c, "mail.example.org", GTUBE, n=4), "c"))
    results.append(replay_message(daemon.spec, message(d, "mail.example.org", n=5), "d"))
    assert [(r.action, r.hits) for r in results] == [
        ("reject", ["helo:non-fqdn"]), ("reject", ["dnsbl:bl"]),
        ("reject", ["helo:non-fqdn"]), ("reject", ["test-gtube"]), ("accept", ["test-trial"])]
    db_path = os.path.join(daemon.state_dir, "milterguard.db")
    assert wait_hits(db_path, 5) == 5          # 4 incidents + 1 observe-mode hit

    proc = run_cli("stats", "-c", daemon.config, "--state-dir", daemon.state_dir,
                   "--since", "1h", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["total_addresses"] == 3 and data["total_hits"] == 4
    rows = {(r["vector"], r["category"]): r for r in data["rows"]}
    assert set(rows) == {("helo", "bad-helo"), ("dnsbl", "dnsbl"), ("body", "gtube")}
    # A counts once, under its latest reason (dnsbl); its HELO hit stays a hit.
    assert rows[("helo", "bad-helo")]["addresses"] == 1
    assert rows[("helo", "bad-helo")]["hits"] == 2
    assert rows[("helo", "bad-helo")]["hit_pct"] == 50.0
    assert rows[("dnsbl", "dnsbl")]["addresses"] == 1
    assert rows[("dnsbl", "dnsbl")]["hits"] == 1
    assert rows[("dnsbl", "dnsbl")]["hit_pct"] == 25.0
    assert rows[("body", "gtube")]["addresses"] == 1
    for row in rows.values():
        assert row["address_pct"] == 33.3
    assert data["top_addresses"][0] == {"addr": a, "hits": 2,
                                        "last_seen": data["top_addresses"][0]["last_seen"]}
    assert data["top_rules"][0]["rule"] == "helo:non-fqdn" and data["top_rules"][0]["hits"] == 2
    # The helper matched too, but is never recorded, so never listed.
    assert data["never_fired"] == ["test-never"]
    # Observe mode: only D's message reaches the body with the phrase (the
    # others are refused at RCPT, or carry GTUBE): one would-have-hit, no incident.
    assert data["observe_hits"] == [{"rule": "test-trial", "hits": 1}]
    assert data["firewall"]["active_bans"] == 0

    proc = run_cli("stats", "-c", daemon.config, "--state-dir", daemon.state_dir)
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    assert "3 addresses" in table and "4 hits" in table
    line = next(x for x in table.splitlines() if x.startswith("dnsbl"))
    assert line.split() == ["dnsbl", "1", "33.3%", "dnsbl", "1", "25.0%"]
    line = next(x for x in table.splitlines() if x.startswith("helo"))
    assert line.split() == ["helo", "1", "33.3%", "bad-helo", "2", "50.0%"]
