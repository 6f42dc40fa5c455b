"""Export 100,000 bans: render each format, and load the nft batch into a
network namespace as one transaction.

Baseline measured in the same run: the same 100,000 addresses loaded one
`nft add element` call per address (the fail2ban way), on a sample of
addresses and extrapolated, so the run stays short.

    python3 bench/bench_export.py [N]
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from milterguard.store.exporters import (ExportEntry, render_bind, render_ipset,
                                   render_nftables, render_postfix_cidr, render_rbldnsd,
                                   write_atomic)


def make_entries(n: int) -> list[ExportEntry]:
    # Distinct documentation-range-shaped addresses; 10% IPv6 /64s.
    out = []
    base4 = int(ipaddress.IPv4Address("198.18.0.0"))
    for i in range(n):
        if i % 10 == 9:
            net = ipaddress.ip_network(f"2001:db8:{i >> 16:x}:{i & 0xffff:x}::/64")
        else:
            net = ipaddress.ip_network(ipaddress.IPv4Address(base4 + i))
        out.append(ExportEntry(net, 3600 + i % 7200, "5 helo hits (helo.fqdn x5)", "helo"))
    return out


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    entries = make_entries(n)
    now = time.time()
    print(f"bans: {n}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("nftables", lambda: render_nftables(entries, now)),
                         ("ipset", lambda: render_ipset(entries, now)),
                         ("rbldnsd4", lambda: render_rbldnsd(entries, now, 4)),
                         ("rbldnsd6", lambda: render_rbldnsd(entries, now, 6)),
                         ("bind", lambda: render_bind(entries, now, "dnsbl.example")),
                         ("postfix", lambda: render_postfix_cidr(entries, now))):
            seconds, text = timed(fn)
            wsec, _ = timed(write_atomic, os.path.join(tmp, name), text)
            print(f"render+write {name:<9} {seconds + wsec:7.3f} s  {len(text) / 1e6:6.1f} MB")

        ns = f"mgbench{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            path = os.path.join(tmp, "nftables")
            batch, proc = timed(subprocess.run, ["ip", "netns", "exec", ns, "nft", "-f", path])
            assert proc.returncode == 0
            count = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "set", "inet",
                                    "milterguard", "banned4"], capture_output=True, text=True
                                   ).stdout.count(" timeout ")
            print(f"nft -f one batch      {batch:7.3f} s  (banned4 elements listed: {count})")
            reload, _ = timed(subprocess.run, ["ip", "netns", "exec", ns, "nft", "-f", path])
            print(f"nft -f again (re-sync){reload:7.3f} s")
            sample = 20
            start = time.perf_counter()
            for e in entries[:sample]:
                if e.network.version == 4:
                    subprocess.run(["ip", "netns", "exec", ns, "nft", "add", "element", "inet",
                                    "milterguard", "banned4",
                                    f"{{ {e.network.network_address} timeout 3600s }}"],
                                   check=False, capture_output=True)
            per_call = (time.perf_counter() - start) / sample
            baseline = per_call * n
            print(f"baseline: one nft call per ban, {per_call * 1000:.1f} ms each -> "
                  f"{baseline:.0f} s for {n} (extrapolated from {sample})")
            print(f"ratio baseline / batch: {baseline / batch:.0f}x")
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
