"""Per-connection cost of DNSBL gates: six zones against one, with a local rbldnsd.

The zones are queried in parallel under one deadline (all queries on one
UDP socket), so six zones should cost little more than one (target: at
most 1.3 times). The cache is off, so every connection really asks. Rounds
alternate A and B on the same (noisy, shared) machine and the median of
per-round ratios is reported.

Two set-ups: rbldnsd asked directly (round trip of some microseconds, so
the per-query CPU dominates and the ratio measures overhead), and rbldnsd
behind a relay that holds each answer --rtt milliseconds, as a real
resolver does on a cache miss (the ratio then measures parallelism). Also
measured in the same run: a serial baseline (the six zones one after the
other through dnspython's full resolver), a thread-pool variant (one
dnspython lookup per zone in a pool, the first design) and dnspython's
asyncio resolver, which is why the single-socket batch was chosen.

A third set-up measures what an admin pays: whole SMTP conversations
replayed through two running daemons (one zone / six zones, rbldnsd asked
directly, cache off, each conversation from another client address), so
the DNSBL cost is weighed against everything else a connection costs.
Last, unless --no-postfix, bench_postfix.py runs with the six zones on, for
the milterguard/floor throughput ratio with the gates active.

    python3 bench/bench_gates.py [--rounds N] [--connections N] [--no-postfix]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import os
import select
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import subprocess

import dns.asyncresolver

from dnsfixtures import Rbldnsd, load_test_config
from milterguard.gates.gateset import Gates
from milterguard.smtpinfo import ClientInfo

ZONE_NAMES = [f"bl{i}.test" for i in range(6)]


def zone_files() -> dict[str, str]:
    out = {}
    for zone in ZONE_NAMES:
        # Every zone lists the same few addresses, so A and B do the same
        # work per connection (a listed client costs a TXT round trip more).
        listed = "\n".join(f"203.0.113.{n}" for n in range(0, 256, 16))
        out[f"{zone}:ip4set"] = f":127.0.0.2:Listed by {zone}\n{listed}\n127.0.0.2\n"
    return out


class DelayRelay:
    """A UDP relay that holds every answer for ``rtt`` seconds.

    Emulates a resolver at some distance without costing CPU per packet
    (one thread, select and a timer heap), so the set-up measures the
    milter's parallelism rather than the relay's overhead. No netem here.
    """

    def __init__(self, upstream_port: int, rtt: float) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.rtt = rtt
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.clients: dict[int, tuple[str, int]] = {}
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        timers: list[tuple[float, int, bytes, tuple[str, int]]] = []
        seq = 0
        while not self.stop_flag.is_set():
            wait_for = 0.05
            if timers:
                wait_for = max(0.0, min(wait_for, timers[0][0] - time.monotonic()))
            ready, _, _ = select.select([self.front, self.back], [], [], wait_for)
            for sock in ready:
                data, peer = sock.recvfrom(4096)
                qid = int.from_bytes(data[:2], "big")
                if sock is self.front:
                    self.clients[qid] = peer
                    self.back.sendto(data, self.upstream)
                elif qid in self.clients:
                    seq += 1
                    heapq.heappush(timers, (time.monotonic() + self.rtt, seq, data,
                                            self.clients.pop(qid)))
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                _, _, data, client = heapq.heappop(timers)
                self.front.sendto(data, client)

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=5)
        self.front.close()
        self.back.close()


def make_gates(port: int, zones: list[str], workdir: str) -> Gates:
    entries = "\n".join(f"    - {{name: z{i}, zone: {z}}}" for i, z in enumerate(zones))
    config = load_test_config(f"""
dns: {{nameservers: [127.0.0.1], port: {port}, timeout: 2.0, cache: false}}
dnsbl:
  self_test: false
  deadline: 2.0
  zones:
{entries}
""", workdir)
    return Gates.from_config(config)


def addresses(count: int, offset: int) -> list[str]:
    return [f"203.0.113.{(offset + n) % 256}" for n in range(count)]


def run_gates(gates: Gates, addrs: list[str]) -> float:
    start = time.perf_counter()
    for addr in addrs:
        gates.on_connect(ClientInfo(addr=addr))
    return (time.perf_counter() - start) / len(addrs)


def run_serial(gates: Gates, addrs: list[str]) -> float:
    """The six lookups one after the other through dnspython's resolver."""
    start = time.perf_counter()
    for addr in addrs:
        for zone in gates.dnsbl.zones:
            qname = zone.query_name(addr)
            assert qname
            gates.query.lookup(qname, "A", timeout=2.0)
    return (time.perf_counter() - start) / len(addrs)


def run_pool(gates: Gates, pool: ThreadPoolExecutor, addrs: list[str]) -> float:
    """One dnspython lookup per zone in a thread pool (the first design)."""
    start = time.perf_counter()
    for addr in addrs:
        futures = [pool.submit(gates.query.lookup, zone.query_name(addr) or "", "A", 2.0)
                   for zone in gates.dnsbl.zones]
        wait(futures, timeout=2.0)
    return (time.perf_counter() - start) / len(addrs)


def run_asyncio(port: int, addrs: list[str]) -> float:
    """dnspython's async resolver, one event loop per connection (as a
    milter callback thread would have to run it)."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port

    async def one(addr: str) -> None:
        rev = ".".join(reversed(addr.split(".")))
        await asyncio.gather(*(resolver.resolve(f"{rev}.{z}", "A", lifetime=2.0,
                                                raise_on_no_answer=False)
                               for z in ZONE_NAMES), return_exceptions=True)

    start = time.perf_counter()
    for addr in addrs:
        asyncio.run(one(addr))
    return (time.perf_counter() - start) / len(addrs)


def measure(port: int, rounds: int, connections: int, alternatives: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in ("one", "six", "serial", "pool", "asyncio")}
    with tempfile.TemporaryDirectory() as one_dir, tempfile.TemporaryDirectory() as six_dir, \
            ThreadPoolExecutor(max_workers=16) as pool:
        one = make_gates(port, ZONE_NAMES[:1], one_dir)
        six = make_gates(port, ZONE_NAMES, six_dir)
        try:
            run_gates(one, addresses(10, 0))   # warm up
            run_gates(six, addresses(10, 0))
            for round_no in range(rounds):
                addrs = addresses(connections, round_no * 7)
                times["one"].append(run_gates(one, addrs))
                times["six"].append(run_gates(six, addrs))
                if alternatives:
                    times["serial"].append(run_serial(six, addrs))
                    times["pool"].append(run_pool(six, pool, addrs))
                    times["asyncio"].append(run_asyncio(port, addrs))
        finally:
            one.close()
            six.close()
    return times


def report(title: str, times: dict[str, list[float]]) -> None:
    base = times["one"]
    print(f"-- {title}")
    labels = {"one": "one zone (baseline)", "six": "six zones, milterguard",
              "serial": "six zones, serial dnspython", "pool": "six zones, thread pool",
              "asyncio": "six zones, asyncio per conn."}
    for key, label in labels.items():
        values = times.get(key)
        if not values:
            continue
        ratio = statistics.median(v / b for v, b in zip(values, base))
        print(f"   {label:30s} {statistics.median(values) * 1000:8.3f} ms/connection"
              f"   ratio to one zone {ratio:5.2f}")


GATES_CONFIG = """\
dns: {{nameservers: [127.0.0.1], port: {port}, timeout: 2.0, cache: false}}
dnsbl:
  self_test: true
  zones:
{zones}
rules: {{shipped: true, site: [], reload_interval: 0}}
allowlist: {{networks: []}}
envelope: {{reject_unknown_sender_domain: false, reject_null_mx: false}}
helo: {{reject_unknown: false}}
logging: {{level: warning}}
"""


def gates_config(path: str, port: int, zones: list[str]) -> str:
    entries = "\n".join(f"    - {{name: z{i}, zone: {z}, codes: [127.0.0.2]}}"
                         for i, z in enumerate(zones))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(GATES_CONFIG.format(port=port, zones=entries))
    return path


def start_daemon(config: str, workdir: str) -> tuple[subprocess.Popen, str]:
    spec = f"unix:{workdir}/mg.sock"
    proc = subprocess.Popen([sys.executable, "-m", "milterguard", "run", "-c", config,
                             "--state-dir", workdir, "--socket", spec],
                            cwd=os.path.dirname(HERE), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not os.path.exists(f"{workdir}/mg.sock"):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("milterguard did not start")
        time.sleep(0.1)
    return proc, spec


MESSAGE = (b"X-Replay-Client: %s\r\nX-Replay-Helo: mail.example.net\r\n"
           b"From: a@example.net\r\nTo: b@example.org\r\nSubject: hello\r\n"
           b"Message-ID: <1@example.net>\r\nDate: Thu, 26 Nov 2026 09:00:00 +0000\r\n\r\n"
           b"A short note.\r\n")


def measure_daemons(port: int, rounds: int, connections: int) -> dict[str, list[float]]:
    from milterguard.replay.conversation import replay_message
    times: dict[str, list[float]] = {"one": [], "six": []}
    with tempfile.TemporaryDirectory() as one_dir, tempfile.TemporaryDirectory() as six_dir:
        daemons = {"one": start_daemon(gates_config(f"{one_dir}/c.yaml", port, ZONE_NAMES[:1]), one_dir),
                   "six": start_daemon(gates_config(f"{six_dir}/c.yaml", port, ZONE_NAMES), six_dir)}
        try:
            for _, spec in daemons.values():   # warm up
                for addr in addresses(5, 200):
                    replay_message(spec, MESSAGE % addr.encode())
            for round_no in range(rounds):
                # Unlisted addresses: every conversation runs to the end.
                addrs = [f"198.51.100.{(round_no * 37 + n) % 250 + 1}" for n in range(connections)]
                for key, (_, spec) in daemons.items():
                    start = time.perf_counter()
                    for addr in addrs:
                        result = replay_message(spec, MESSAGE % addr.encode())
                        if result.action != "accept":
                            raise RuntimeError(f"unexpected {result.action}: {result.reply}")
                    times[key].append((time.perf_counter() - start) / len(addrs))
        finally:
            for proc, _ in daemons.values():
                proc.terminate()
            for proc, _ in daemons.values():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return times


def postfix_with_gates(port: int) -> int:
    with tempfile.TemporaryDirectory() as workdir:
        config = gates_config(f"{workdir}/gates.yaml", port, ZONE_NAMES)
        print("-- Postfix throughput with six DNSBL zones on (bench_postfix.py --config)", flush=True)
        return subprocess.call([sys.executable, os.path.join(HERE, "bench_postfix.py"),
                                "--config", config])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--connections", type=int, default=60)
    parser.add_argument("--rtt", type=float, default=5.0,
                        help="emulated resolver round trip in ms (second set-up)")
    parser.add_argument("--no-postfix", action="store_true",
                        help="skip the Postfix throughput run with the gates on")
    args = parser.parse_args()

    server = Rbldnsd(zone_files()).start()
    forwarder = None
    try:
        direct = measure(server.port, args.rounds, args.connections, alternatives=True)
        forwarder = DelayRelay(server.port, args.rtt / 1000)
        slow = measure(forwarder.port, args.rounds, max(10, args.connections // 3),
                       alternatives=True)
        whole = measure_daemons(server.port, args.rounds, args.connections)
        print(f"rounds={args.rounds} cache=off, A/B alternating, medians; target six/one <= 1.30")
        report("rbldnsd asked directly (microsecond round trip: CPU-bound)", direct)
        report(f"rbldnsd behind a resolver with {args.rtt:g} ms round trip", slow)
        report("whole SMTP conversations through the running daemon, rbldnsd direct", whole)
        status = 0 if args.no_postfix else postfix_with_gates(server.port)
    finally:
        if forwarder is not None:
            forwarder.close()
        server.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
