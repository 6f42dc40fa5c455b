"""Real nftables in a network namespace: a banned client is dropped, then
let in again when the ban's kernel timeout runs out; a port not named in
``bans.nftables.ports`` stays open to it; an allowlisted client is never
in the set; a re-sync restores the set after a firewall reload.

Two namespaces joined by a veth pair, with RFC 5737 addresses only inside
them. Nothing touches the machine's own namespace.
"""

from __future__ import annotations

import os
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
BAN_SECONDS = 5

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


def sync(site: str, state: str, server_ns: str) -> None:
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "milterguard", "bans", "-c", site,
                           "--state-dir", state, "sync", "--netns", server_ns],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


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
  default: {{find_time: 10m, max_hits: 3, ban_time: {BAN_SECONDS}s}}
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
    started = time.monotonic()
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
    assert time.monotonic() - started < BAN_SECONDS, "machine too slow for the ban length"

    # The kernel expires the element by itself: no sync needed.
    time.sleep(max(0.0, BAN_SECONDS + 1.0 - (time.monotonic() - started)))
    assert BANNED_IP not in nft_set(server)
    assert connects(client, BANNED_IP)
