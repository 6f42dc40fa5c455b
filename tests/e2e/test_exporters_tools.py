"""Exporters' files read by the real tools: nft and ipset in a network
namespace the test creates, Postfix's postmap on a private main.cf."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from milterguard.store.exporters import render_ipset, render_nftables, render_postfix_cidr, write_atomic
from tests.unit.store.test_exporters import ENTRIES, NOW


@pytest.fixture
def netns():
    name = f"mgx{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_nftables_batch_loads_twice_without_duplicating(netns, tmp_path):
    path = str(tmp_path / "bans.nft")
    write_atomic(path, render_nftables(ENTRIES, NOW))
    for _ in range(2):
        subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", path], check=True)
    listing = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet",
                              "milterguard"], check=True, capture_output=True, text=True).stdout
    assert listing.count("ip saddr @banned4") == 1
    assert "192.0.2.7 timeout 2m1s" in listing and "2001:db8:1:2::/64" in listing


def test_ipset_restore_swaps_in(netns, tmp_path):
    path = str(tmp_path / "bans.ipset")
    for entries in (ENTRIES, ENTRIES[:1]):   # second run replaces the first
        write_atomic(path, render_ipset(entries, NOW))
        subprocess.run(["ip", "netns", "exec", netns, "ipset", "restore", "-file", path],
                       check=True)
    out = subprocess.run(["ip", "netns", "exec", netns, "ipset", "list", "milterguard4"],
                         check=True, capture_output=True, text=True).stdout
    assert "192.0.2.7" in out and "198.51.100.0/24" not in out
    subprocess.run(["ip", "netns", "exec", netns, "ipset", "destroy"], check=False)


def test_postfix_cidr_table_is_read_by_postmap(tmp_path):
    path = str(tmp_path / "bans.cidr")
    write_atomic(path, render_postfix_cidr(ENTRIES, NOW))
    confdir = tmp_path / "postfix"        # postmap wants a main.cf; never /etc/postfix
    confdir.mkdir()
    (confdir / "main.cf").write_text("")

    def query(addr: str) -> str:
        proc = subprocess.run(["postmap", "-c", str(confdir), "-q", addr, f"cidr:{path}"],
                              capture_output=True, text=True)
        return proc.stdout.strip()

    assert query("192.0.2.7").startswith("554 5.7.1 Listed by milterguard: 5 helo hits")
    assert query("198.51.100.77").startswith("554 5.7.1")
    assert query("2001:db8:1:2::99").startswith("554 5.7.1")
    assert query("192.0.2.8") == ""
