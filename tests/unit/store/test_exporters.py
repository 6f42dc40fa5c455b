"""Exporters: file formats and atomic writes. The real tools reading the
files (nft, ipset, postmap): tests/e2e/test_exporters_tools.py."""

from __future__ import annotations

import ipaddress
import os

import pytest

from milterguard.store.exporters import (ExportEntry, entries_from_bans, render_bind, render_ipset,
                                   render_nftables, render_postfix_cidr, render_rbldnsd,
                                   run_exporters, write_atomic)
from milterguard.store.bans import Ban

NOW = 1_700_000_000.0


def entry(net: str, remaining: float = 120.5, reason: str = "5 helo hits") -> ExportEntry:
    return ExportEntry(ipaddress.ip_network(net), remaining, reason, "helo")


ENTRIES = [entry("192.0.2.7"), entry("198.51.100.0/24", 3600, 'bad "quoted" $ reason'),
           entry("2001:db8:1:2::/64", 30)]


def test_entries_drop_networks_inside_others_and_expired():
    bans = [Ban("198.51.100.0/24", "manual", "r", 0, 0, 0, NOW, NOW + 10),
            Ban("198.51.100.9", "helo", "r", 0, 0, 0, NOW, NOW + 50),
            Ban("192.0.2.1", "helo", "r", 0, 0, 0, NOW - 100, NOW - 1)]
    out = entries_from_bans(bans, NOW)
    assert [(str(e.network), e.remaining) for e in out] == [("198.51.100.0/24", 50)]


def test_nftables_batch_shape():
    text = render_nftables(ENTRIES, NOW)
    assert "delete table inet milterguard" in text
    assert "flags interval, timeout" in text
    assert "add element inet milterguard banned4 { 192.0.2.7 timeout 121s, 198.51.100.0/24 timeout 3600s }" in text
    assert "add element inet milterguard banned6 { 2001:db8:1:2::/64 timeout 30s }" in text


def test_nftables_drops_mail_ports_only_unless_all():
    default = render_nftables(ENTRIES, NOW)
    assert "ip saddr @banned4 tcp dport { 25, 465, 587 } counter drop" in default
    assert "ip6 saddr @banned6 tcp dport { 25, 465, 587 } counter drop" in default
    everything = render_nftables(ENTRIES, NOW, ports=None)
    assert "ip saddr @banned4 counter drop" in everything
    assert "dport" not in everything


def test_nftables_ports_setting(tmp_path):
    from milterguard.config import load_config
    from milterguard.errors import ConfigError
    from milterguard.store.exporters import ban_ports
    site = tmp_path / "site.yaml"
    assert ban_ports(load_config(None).section("bans")["nftables"]) == (25, 465, 587)
    site.write_text("bans:\n  nftables:\n    ports: all\n")
    assert ban_ports(load_config(str(site)).section("bans")["nftables"]) is None
    site.write_text("bans:\n  nftables:\n    ports: [25, smtp]\n")
    with pytest.raises(ConfigError) as info:
        ban_ports(load_config(str(site)).section("bans")["nftables"])
    assert f"{site}:3" in str(info.value) and "ports" in str(info.value)


def test_ipset_fills_a_new_set_and_swaps_it_in():
    lines = render_ipset(ENTRIES, NOW).splitlines()
    adds4 = [line for line in lines if line.startswith("add milterguard4-new ")]
    assert adds4 == ["add milterguard4-new 192.0.2.7/32 timeout 121 -exist",
                     "add milterguard4-new 198.51.100.0/24 timeout 3600 -exist"]
    # Filled while the old set still filters, then swapped: no moment without bans.
    assert lines.index("flush milterguard4-new") < lines.index(adds4[0])
    assert lines.index("swap milterguard4-new milterguard4") > lines.index(adds4[-1])
    assert "add milterguard6-new 2001:db8:1:2::/64 timeout 30 -exist" in lines


def test_postfix_cidr_lines():
    rows = [line.split("\t") for line in render_postfix_cidr(ENTRIES, NOW).splitlines()
            if not line.startswith("#")]
    assert [network for network, _ in rows] == ["192.0.2.7/32", "198.51.100.0/24",
                                               "2001:db8:1:2::/64"]
    assert rows[1][1] == "554 5.7.1 Listed by milterguard: bad 'quoted' $ reason"


def test_rbldnsd_files():
    v4 = render_rbldnsd(ENTRIES, NOW, 4)
    v6 = render_rbldnsd(ENTRIES, NOW, 6)
    assert "192.0.2.7 :127.0.0.2:milterguard: 5 helo hits; until" in v4
    assert "$" not in v4.split("Listed by milterguard", 1)[1]
    assert "2001:db8:1:2::/64 :127.0.0.2:" in v6 and "192.0.2.7" not in v6


def test_bind_zone_names():
    text = render_bind(ENTRIES, NOW, "dnsbl.example")
    assert "$ORIGIN dnsbl.example." in text
    assert "7.2.0.192\tIN\tA\t127.0.0.2" in text
    assert "*.100.51.198\tIN\tTXT" in text
    assert "*.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2\tIN\tA" in text
    assert '"milterguard: bad \'quoted\' $ reason' in text


def test_write_atomic_leaves_no_temp_files(tmp_path):
    path = str(tmp_path / "x" / "f")
    write_atomic(path, "one\n")
    write_atomic(path, "two\n")
    assert open(path).read() == "two\n"
    assert os.listdir(tmp_path / "x") == ["f"]


def test_run_exporters_no_firewall_does_not_call_nft(tmp_path):
    calls = []
    results = run_exporters(["nftables", "postfix"], ENTRIES, NOW, {}, str(tmp_path),
                            load_firewall=False, run=lambda *a, **k: calls.append(a))
    assert calls == [] and [r.loaded for r in results] == [False, False]
    assert os.path.exists(tmp_path / "bans.nft") and os.path.exists(tmp_path / "client_bans.cidr")
