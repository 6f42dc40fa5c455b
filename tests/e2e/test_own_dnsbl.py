"""The site's own DNSBL: `bans sync` writes rbldnsd files, a real rbldnsd
serves them on 127.0.0.1, and both a plain resolver and milterguard's own
DNSBL gate see the banned address listed with its reason."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import dns.resolver
import pytest

from milterguard.config import load_config
from milterguard.gates.dnsbl import DnsblChecker
from milterguard.gates.dns import DnsQuery
from milterguard.store import db
from milterguard.store.hits import HITS_SCHEMA, insert_hits
from milterguard.verdict import Action, Hit

from tests import REPO_ROOT as REPO
ZONE = "dnsbl.example"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolver(port: int) -> dns.resolver.Resolver:
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = port
    res.timeout = res.lifetime = 2.0
    return res


@pytest.fixture
def exported(tmp_path):
    """Hits in a store, then `bans sync` with the rbldnsd exporter."""
    state = tmp_path / "state"
    state.mkdir()
    site = tmp_path / "site.yaml"
    site.write_text("""
bans:
  default: {max_hits: 2, ban_time: 1h}
  exporters: [rbldnsd]
""")
    conn = db.open_database(str(state / "milterguard.db"), [HITS_SCHEMA])
    now = time.time()
    insert_hits(conn, [Hit("helo.fqdn", "helo", "helo", Action.REJECT, client_addr=addr, ts=now - i)
                       for addr in ("192.0.2.66", "2001:db8:5:6::1") for i in range(3)])
    insert_hits(conn, [Hit("helo.fqdn", "helo", "helo", Action.REJECT,
                           client_addr="198.51.100.3", ts=now)])   # one hit: not banned
    conn.close()
    proc = subprocess.run([sys.executable, "-m", "milterguard", "bans", "-c", str(site),
                           "--state-dir", str(state), "sync", "--no-firewall"],
                          capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr
    return state


@pytest.fixture
def rbldnsd(exported):
    port = free_udp_port()
    proc = subprocess.Popen(["rbldnsd", "-n", "-b", f"127.0.0.1/{port}", "-w", str(exported),
                             f"{ZONE}:ip4set:dnsbl.ip4set", f"{ZONE}:ip6trie:dnsbl.ip6trie"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        res = resolver(port)
        deadline = time.monotonic() + 10
        while True:     # ready when the RFC 5782 test point answers
            try:
                res.resolve(f"2.0.0.127.{ZONE}", "A")
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_rbldnsd_serves_banned_addresses_with_reason(rbldnsd):
    res = resolver(rbldnsd)
    a = res.resolve(f"66.2.0.192.{ZONE}", "A")
    assert [r.address for r in a] == ["127.0.0.2"]
    txt = b"".join(res.resolve(f"66.2.0.192.{ZONE}", "TXT")[0].strings).decode()
    assert "milterguard: 3 helo hits (helo.fqdn x3)" in txt
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve(f"3.100.51.198.{ZONE}", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve(f"1.0.0.127.{ZONE}", "A")     # RFC 5782: 127.0.0.1 never listed
    # The whole /64 is listed, for any host in it.
    nibbles = ".".join(reversed("20010db8000500060000000000000abc"))
    assert [r.address for r in res.resolve(f"{nibbles}.{ZONE}", "A")] == ["127.0.0.2"]


def test_dnsbl_gate_rejects_banned_address(rbldnsd, tmp_path):
    site = tmp_path / "gate.yaml"
    site.write_text(f"""
dns:
  nameservers: [127.0.0.1]
  port: {rbldnsd}
  cache: false
dnsbl:
  self_test: false
  zones:
    - name: own
      zone: {ZONE}
      codes: [127.0.0.2]
""")
    config = load_config(str(site), str(tmp_path))
    checker = DnsblChecker.from_config(config, DnsQuery.from_config(config))
    try:
        findings = checker.findings("192.0.2.66", checker.check("192.0.2.66"))
        assert [f.action for f in findings] == [Action.REJECT]
        assert "3 helo hits" in str(findings[0].reply)
        assert checker.findings("198.51.100.3", checker.check("198.51.100.3")) == []
    finally:
        checker.close()


def test_daemon_rejects_banned_address_through_its_socket(rbldnsd, milterguard_factory):
    """The whole loop: bans -> exported zone -> rbldnsd -> the running milter."""
    from milterguard.replay.conversation import replay_message

    daemon = milterguard_factory(f"""
dns: {{nameservers: [127.0.0.1], port: {rbldnsd}, cache: false}}
dnsbl:
  self_test: true
  zones:
    - {{name: own, zone: {ZONE}, codes: [127.0.0.2]}}
envelope: {{reject_unknown_sender_domain: false, reject_null_mx: false}}
rules: {{shipped: true, site: []}}
allowlist: {{networks: ["127.0.0.0/8"]}}
""")
    message = (b"X-Replay-Client: %s mail.example.net\r\nX-Replay-Helo: mail.example.net\r\n"
               b"From: a@example.net\r\nTo: b@example.org\r\nSubject: hi\r\n"
               b"Message-ID: <1@example.net>\r\nDate: Thu, 26 Nov 2026 09:00:00 +0000\r\n\r\nhello\r\n")
    banned = replay_message(daemon.spec, message % b"192.0.2.66", name="banned")
    assert banned.action == "reject" and banned.stage == "rcpt", banned
    assert banned.reply.startswith("554 5.7.1") and "3 helo hits" in banned.reply
    clean = replay_message(daemon.spec, message % b"198.51.100.3", name="clean")
    assert clean.action == "accept", clean
