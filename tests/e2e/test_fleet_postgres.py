"""Several MX hosts, one PostgreSQL: greylisting, bans and stats shared.

Two real daemons ("mx1" and "mx2", each behind its own private Postfix)
point `database:` at one real PostgreSQL. A sender greylisted at mx1
passes at mx2 after the delay; spam hits recorded at both hosts add up to
one ban that `bans list` shows on either host with both hosts as its
evidence, and that both hosts' `bans sync` export; `stats` counts both.
XCLIENT makes the clients 192.0.2.7 and 198.51.100.66.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from milterguard.store import engines
from tests.e2e.postfix import milter_params, xclient_transaction

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DELAY = 3
SENDER, RCPT = "news@example.org", "alice@example.com"
SPAMMER = "198.51.100.66"
MESSAGE = (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: minutes\r\n"
           "Message-ID: <minutes-2@example.org>\r\nDate: Tue, 02 Jan 2024 10:00:00 +0000\r\n"
           "\r\nHello Alice, the minutes follow next week.\r\n")
GTUBE = (f"From: <offers@example.net>\r\nTo: <{RCPT}>\r\nSubject: offer\r\n"
         "Message-ID: <offer@example.net>\r\nDate: Tue, 02 Jan 2024 10:00:00 +0000\r\n\r\n"
         "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")


def config(url: str, host: str) -> str:
    return (f'database: "{url}"\n'
            f"server:\n  hostname: {host}\n"
            "greylist:\n"
            "  enabled: true\n"
            f"  delay: {DELAY}\n"
            "  retry_window: 1h\n"
            "  allow:\n    networks: [198.51.100.0/24]\n"
            # The test clients' names resolve nowhere here (no network).
            "envelope:\n  exceptions:\n    networks: [192.0.2.0/24, 198.51.100.0/24]\n"
            "helo:\n  exceptions:\n    networks: [192.0.2.0/24, 198.51.100.0/24]\n"
            "bans:\n"
            "  default: {find_time: 10m, max_hits: 3, ban_time: 1h}\n"
            "  exporters: [nftables, postfix]\n")


def smtp(port: int, client: str, sender: str, message: str) -> tuple[int, str]:
    return xclient_transaction(port, client, sender, RCPT, message.encode())


def cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "milterguard", *args], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def wait_rows(url: str, sql: str, count: int, timeout: float = 60.0) -> int:
    """Poll until ``sql`` counts ``count`` rows (hits are written in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = engines.connect(url)
        try:
            n = int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
        if n >= count or time.monotonic() > deadline:
            return n
        time.sleep(0.2)


def test_two_mx_hosts_share_greylist_bans_and_stats(pg_url, postfix_factory,
                                                    milterguard_factory):
    mx1 = milterguard_factory(config(pg_url, "mx1.example.net"))
    mx2 = milterguard_factory(config(pg_url, "mx2.example.net"))
    pf1 = postfix_factory(milter_params([mx1.postfix_spec]))
    pf2 = postfix_factory(milter_params([mx2.postfix_spec]))

    # Greylisted at mx1; the retry after the delay reaches mx2 and passes.
    code, text = smtp(pf1.port, "192.0.2.7", SENDER, MESSAGE)
    assert code == 451 and "Greylisted" in text, text
    time.sleep(DELAY + 0.5)
    code, text = smtp(pf2.port, "192.0.2.7", SENDER, MESSAGE)
    assert code == 250, text
    assert pf2.wait_discarded(1) == 1
    # Passed because mx1's first attempt is in the shared table (a triplet
    # new to mx2 would have been greylisted again).
    conn = engines.connect(pg_url)
    try:
        assert conn.execute("SELECT client_net, attempts, passed_at IS NOT NULL"
                            " FROM greylist_triplets").fetchall() == [("192.0.2.0/24", 2, True)]
    finally:
        conn.close()

    # Spam from one client at both hosts: 2 hits at mx1, 1 at mx2.
    for port in (pf1.port, pf1.port, pf2.port):
        code, text = smtp(port, SPAMMER, "offers@example.net", GTUBE)
        assert code == 554 and "GTUBE" in text, text
    counted = wait_rows(pg_url, "SELECT COUNT(*) FROM hits WHERE rule_id = 'gtube'", 3)
    assert counted == 3
    conn = engines.connect(pg_url)
    try:
        hosts = dict(conn.execute("SELECT host, COUNT(*) FROM hits WHERE rule_id = 'gtube'"
                                  " GROUP BY host").fetchall())
        total_hits = int(conn.execute("SELECT COUNT(*) FROM hits").fetchone()[0])
    finally:
        conn.close()
    assert hosts == {"mx1.example.net": 2, "mx2.example.net": 1}

    # mx2 syncs first and makes the ban; mx1's sync finds it and makes none.
    args = {d: ["-c", d.config, "--state-dir", d.state_dir] for d in (mx1, mx2)}
    sync2 = json.loads(cli("bans", "sync", "--no-firewall", "--json", *args[mx2]))
    sync1 = json.loads(cli("bans", "sync", "--no-firewall", "--json", *args[mx1]))
    assert sync2["new_bans"] == [SPAMMER] and sync1["new_bans"] == []
    for daemon in (mx1, mx2):
        bans = json.loads(cli("bans", "list", "--json", *args[daemon]))
        assert [(b["addr"], b["hit_count"], b["hosts"]) for b in bans] == [
            (SPAMMER, 3, "mx1.example.net,mx2.example.net")]
        table = cli("bans", "list", *args[daemon])
        assert "mx1.example.net,mx2.example.net" in table
        # Each host exports the fleet's bans to its own firewall and access map.
        with open(os.path.join(daemon.state_dir, "client_bans.cidr"), encoding="utf-8") as fh:
            assert SPAMMER in fh.read()
        with open(os.path.join(daemon.state_dir, "bans.nft"), encoding="utf-8") as fh:
            assert SPAMMER in fh.read()

    # Stats on either host count both hosts' hits.
    for daemon in (mx1, mx2):
        stats = json.loads(cli("stats", "--json", "--since", "all", *args[daemon]))
        assert stats["total_hits"] == total_hits
        gtube = [r for r in stats["top_rules"] if r["rule"] == "gtube"]
        assert gtube and gtube[0]["hits"] == 3
