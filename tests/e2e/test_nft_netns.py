"""Real nftables in a network namespace: a banned client is dropped; a port
not named in ``bans.nftables.ports`` stays open to it; an allowlisted client
is never in the set; a re-sync restores the set after a firewall reload; a
short ban's element is removed by the kernel when its timeout runs out (no
sync needed), and that client gets in again.

Two namespaces joined by a veth pair, with RFC 5737 addresses only inside
them. Nothing touches the machine's own namespace.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid

import pytest

from milterguard.store import db
from milterguard.store.hits import HITS_SCHEMA, insert_hits
from milterguard.verdict import Action, Hit

from tests import REPO_ROOT as REPO
SERVER_IP, BANNED_IP, ALLOWED_IP, PORT = "192.0.2.1", "192.0.2.10", "192.0.2.20", 2525
#: A port the ban does not cover (think SSH): must stay reachable.
OTHER_PORT = 2222
SHORT_IP = "192.0.2.30"     # banned by hand, for SHORT_BAN only
SHORT_BAN = "5s"

SERVER_SCRIPT = """
import selectors, socket
sel = selectors.DefaultSelector()
for port in (%d, %d):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("%s", port))
    s.listen(16)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        c, _ = key.fileobj.accept()
        c.close()
""" % (PORT, OTHER_PORT, SERVER_IP)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


@pytest.fixture
def namespaces():
    tag = uuid.uuid4().hex[:6]
    server, client = f"mgsrv{tag}", f"mgcli{tag}"
    veth_s, veth_c = f"mgs{tag}", f"mgc{tag}"
    proc = None
    try:
        sh("ip", "netns", "add", server)
        sh("ip", "netns", "add", client)
        sh("ip", "link", "add", veth_s, "netns", server, "type", "veth",
           "peer", "name", veth_c, "netns", client)
        sh("ip", "-n", server, "addr", "add", f"{SERVER_IP}/24", "dev", veth_s)
        sh("ip", "-n", client, "addr", "add", f"{BANNED_IP}/24", "dev", veth_c)
        sh("ip", "-n", client, "addr", "add", f"{ALLOWED_IP}/24", "dev", veth_c)
        sh("ip", "-n", client, "addr", "add", f"{SHORT_IP}/24", "dev", veth_c)
        for ns, dev in ((server, veth_s), (client, veth_c)):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        proc = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c", SERVER_SCRIPT],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        yield server, client
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
        sh("ip", "netns", "del", server, check=False)
        sh("ip", "netns", "del", client, check=False)


def connects(client_ns: str, source: str, port: int = PORT) -> bool:
    code = ("import socket,sys\n"
            "try:\n"
            f"    socket.create_connection(('{SERVER_IP}', {port}), timeout=1.0,"
            f" source_address=('{source}', 0)).close()\n"
            "except OSError:\n    sys.exit(1)\n")
    return sh("ip", "netns", "exec", client_ns, sys.executable, "-c", code, check=False).returncode == 0


def bans(site: str, state: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "milterguard", "bans", "-c", site,
                           "--state-dir", state, *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == expect, proc.stderr
    return proc


def sync(site: str, state: str, server_ns: str) -> None:
    bans(site, state, "sync", "--netns", server_ns)


def nft_set(server_ns: str) -> str:
    return sh("ip", "netns", "exec", server_ns, "nft", "list", "set", "inet", "milterguard",
              "banned4").stdout


def test_ban_drops_then_expires(namespaces, tmp_path):
    server, client = namespaces
    site = tmp_path / "site.yaml"
    site.write_text(f"""
allowlist:
  networks: [127.0.0.0/8, {ALLOWED_IP}/32]
bans:
  default: {{find_time: 10m, max_hits: 3, ban_time: 1h}}
  exporters: [nftables]
  nftables: {{ports: [{PORT}]}}
""")
    state = str(tmp_path / "state")
    os.makedirs(state)
    conn = db.open_database(os.path.join(state, "milterguard.db"), [HITS_SCHEMA])
    now = time.time()
    insert_hits(conn, [Hit("helo.fqdn", "helo", "helo", Action.REJECT, client_addr=addr, ts=now - i)
                       for addr in (BANNED_IP, ALLOWED_IP) for i in range(4)])
    conn.close()

    assert connects(client, BANNED_IP) and connects(client, ALLOWED_IP)
    sync(str(site), state, server)
    members = nft_set(server)
    assert BANNED_IP in members and ALLOWED_IP not in members
    assert not connects(client, BANNED_IP)
    assert connects(client, BANNED_IP, OTHER_PORT)
    assert connects(client, ALLOWED_IP)

    # A firewall reload wipes our table; the next sync restores it.
    sh("ip", "netns", "exec", server, "nft", "flush", "ruleset")
    assert connects(client, BANNED_IP)
    sync(str(site), state, server)
    assert not connects(client, BANNED_IP)

    # A short ban: the element carries the ban's remaining time as its kernel
    # timeout, and the kernel removes it by itself (no sync in between),
    # while the hour-long ban stays.
    assert connects(client, SHORT_IP)
    # (add writes and loads the exporters at once: into the test's namespace)
    bans(str(site), state, "add", SHORT_IP, "--reason", "test", "--time", SHORT_BAN,
         "--netns", server)
    sync(str(site), state, server)
    assert re.search(rf"{re.escape(SHORT_IP)} timeout [1-5]s", nft_set(server)), nft_set(server)
    deadline = time.monotonic() + 60      # a limit for a hung kernel, not a measurement
    while SHORT_IP in nft_set(server) and time.monotonic() < deadline:
        time.sleep(0.5)
    members = nft_set(server)
    assert SHORT_IP not in members, members
    assert connects(client, SHORT_IP)
    assert BANNED_IP in members and not connects(client, BANNED_IP)


def test_manual_add_and_remove_reach_the_firewall_at_once(namespaces, tmp_path):
    """Issue 12, finding 9: `bans add/remove` changed only the database
    until the next sync; a failing nft load skipped the other exporters."""
    server, client = namespaces
    site = tmp_path / "site.yaml"
    site.write_text(f"""
bans:
  exporters: [nftables, rbldnsd]
  nftables: {{ports: [{PORT}]}}
""")
    state = str(tmp_path / "state")
    os.makedirs(state)
    assert connects(client, BANNED_IP)
    bans(str(site), state, "add", BANNED_IP, "--reason", "by hand", "--time", "1h",
         "--netns", server)
    assert BANNED_IP in nft_set(server)
    assert not connects(client, BANNED_IP)
    with open(os.path.join(state, "dnsbl.ip4set"), encoding="utf-8") as fh:
        assert BANNED_IP in fh.read()

    bans(str(site), state, "remove", BANNED_IP, "--reason", "false alarm", "--netns", server)
    assert BANNED_IP not in nft_set(server)
    assert connects(client, BANNED_IP)

    # nft refuses the batch (a namespace that does not exist): the
    # rbldnsd zone is still written, the failure is reported, exit 1.
    proc = bans(str(site), state, "add", ALLOWED_IP, "--reason", "x", "--time", "1h",
                "--netns", server + "-missing", expect=1)
    assert "exporter nftables failed" in proc.stderr
    with open(os.path.join(state, "dnsbl.ip4set"), encoding="utf-8") as fh:
        assert ALLOWED_IP in fh.read()
