"""Metrics end to end: replay mail through the real daemon, scrape /metrics over HTTP.

The daemon runs with ``metrics.listen`` on a free loopback port, a DNSBL
zone that lists one client, a second zone whose server never answers
(timeouts), greylisting with a one-second delay, and a fast reload
interval. Each counter must move by exactly what the replayed mail, a
manual ban and two config edits (one good, one broken) cause.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families


from tests.dnsfixtures import DnsAuthority, free_port
from milterguard.replay.conversation import replay_message
from tests.e2e.test_stats_e2e import REPO, listed, message, wait_hits

CONFIG = """\
rules: {{shipped: false, site: [], reload_interval: 0.2}}
allowlist: {{networks: []}}
envelope: {{reject_unknown_sender_domain: false, reject_null_mx: false}}
helo: {{reject_unknown: false}}
dns: {{nameservers: [127.0.0.1], port: {dns_port}, timeout: 0.5, cache: false}}
dnsbl:
  self_test: false
  deadline: 0.5
  zones:
    - {{name: bl, zone: bl.test}}
    - {{name: slow, zone: slow.test}}
greylist: {{enabled: true, delay: 1, auto_allowlist_after: 0}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
"""


@pytest.fixture
def dns_auth() -> Iterator[DnsAuthority]:
    auth = DnsAuthority({}, silent=["slow.test"]).start()
    try:
        yield auth
    finally:
        auth.stop()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def wait_for(port: int, key: tuple, value: float, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = scrape(port)
        if got.get(key) == value or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_metrics_move_by_the_right_amounts(dns_auth, milterguard_factory):
    port = free_port()
    daemon = milterguard_factory(CONFIG.format(dns_port=dns_auth.port, metrics_port=port))
    before = scrape(port)
    assert before[("milterguard_active_bans", ())] == 0
    assert before[("milterguard_rule_reloads_total", ())] == 0
    assert not any(k[0] == "milterguard_hits_total" for k in before)

    x, y = "203.0.113.50", "203.0.113.60"
    listed(dns_auth, x)
    r1 = replay_message(daemon.spec, message(x, "mail.example.org", n=1), "x")
    r2 = replay_message(daemon.spec, message(y, "mail.example.org", n=2), "y-new")
    r3 = replay_message(daemon.spec, message(y, "mail.example.org", n=3), "y-early")
    time.sleep(1.3)
    r4 = replay_message(daemon.spec, message(y, "mail.example.org", n=4), "y-passed")
    assert [r.action for r in (r1, r2, r3, r4)] == ["reject", "tempfail", "tempfail", "accept"]
    assert wait_hits(os.path.join(daemon.state_dir, "milterguard.db"), 3) == 3

    got = scrape(port)
    assert got[("milterguard_hits_total",
                (("category", "dnsbl"), ("observe", "0"), ("rule", "dnsbl:bl")))] == 1
    assert got[("milterguard_hits_total",
                (("category", "greylist"), ("observe", "0"), ("rule", "greylist")))] == 2
    assert got[("milterguard_dnsbl_results_total", (("result", "listed"), ("zone", "bl")))] == 1
    assert got[("milterguard_dnsbl_results_total", (("result", "clean"), ("zone", "bl")))] == 3
    assert got[("milterguard_dnsbl_results_total", (("result", "unknown"), ("zone", "slow")))] == 4
    assert got[("milterguard_dnsbl_timeouts_total", (("zone", "slow"),))] == 4
    assert ("milterguard_dnsbl_timeouts_total", (("zone", "bl"),)) not in got
    assert got[("milterguard_greylist_total", (("outcome", "new"),))] == 1
    assert got[("milterguard_greylist_total", (("outcome", "early"),))] == 1
    assert got[("milterguard_greylist_total", (("outcome", "passed"),))] == 1

    # Messages by final action, counted by the session where it logs them.
    assert got[("milterguard_messages_total", (("action", "reject"),))] == 1
    assert got[("milterguard_messages_total", (("action", "accept"),))] == 1
    assert ("milterguard_messages_total", (("action", "tag"),)) not in got
    # Per-stage latency, timed by the adapter around each callback: four
    # connections reach RCPT, one reaches end of message; every connect
    # waits out the silent zone's 0.5 s deadline.
    count = "milterguard_stage_duration_seconds_count"
    assert got[(count, (("stage", "connect"),))] == 4
    assert got[(count, (("stage", "rcpt"),))] == 4
    assert got[(count, (("stage", "eom"),))] == 1
    assert got[("milterguard_stage_duration_seconds_sum", (("stage", "connect"),))] >= 4 * 0.45

    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "milterguard", "bans", "add", "192.0.2.99",
                           "--reason", "metrics test", "--time", "1h", "--no-firewall",
                           "-c", daemon.config,
                           "--state-dir", daemon.state_dir],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert scrape(port)[("milterguard_active_bans", ())] == 1

    # A good edit reloads; a broken one is refused and counted.
    with open(daemon.config, "a", encoding="utf-8") as fh:
        fh.write("# edited\n")
    got = wait_for(port, ("milterguard_rule_reloads_total", ()), 1)
    assert got[("milterguard_rule_reloads_total", ())] == 1
    assert got[("milterguard_rule_reload_failures_total", ())] == 0
    time.sleep(0.05)
    with open(daemon.config, "a", encoding="utf-8") as fh:
        fh.write("message: {tag_score: -1}\n")
    got = wait_for(port, ("milterguard_rule_reload_failures_total", ()), 1)
    assert got[("milterguard_rule_reload_failures_total", ())] == 1
    assert got[("milterguard_rule_reloads_total", ())] == 1
