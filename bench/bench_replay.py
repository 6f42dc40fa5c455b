"""Replay throughput: unix vs TCP socket, one vs several connections.

Starts the pymilter test milters of tests/e2e/testmilter.py (``full`` answers
every stage, ``lean`` negotiates replies away), replays the same small
message N times in alternating rounds (the machine is noisy) and prints
messages per second with ratios against the serial unix-socket baseline.

    python3 bench/bench_replay.py [N]
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from milterguard.replay.conversation import replay_message
from milterguard.socketspec import connect

MESSAGE = (b"X-Replay-Client: 192.0.2.7 mail.example.com\n"
           b"From: a@example.org\nTo: b@example.net\nSubject: bench\n"
           b"Message-ID: <1@example.org>\n\n" + b"line of body text\n" * 200)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(variant: str, spec: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "e2e", "testmilter.py"),
                             variant, spec], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            connect(spec, 1.0).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"milter did not start on {spec}")


def _rate(spec: str, count: int, jobs: int) -> float:
    from concurrent.futures import ThreadPoolExecutor
    started = time.perf_counter()
    if jobs == 1:
        results = [replay_message(spec, MESSAGE, timeout=10) for _ in range(count)]
    else:
        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(lambda _: replay_message(spec, MESSAGE, timeout=10),
                                    range(count)))
    elapsed = time.perf_counter() - started
    bad = [r for r in results if r.action != "accept"]
    if bad:
        raise SystemExit(f"unexpected result on {spec}: {bad[0]}")
    return count / elapsed


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    tmp = tempfile.mkdtemp(prefix="bench-replay-")
    specs = {"full/unix": f"unix:{tmp}/full.sock",
             "full/inet": f"inet:{_free_port()}@127.0.0.1",
             "lean/unix": f"unix:{tmp}/lean.sock",
             "lean/inet": f"inet:{_free_port()}@127.0.0.1"}
    procs = [_start(name.split("/")[0], spec) for name, spec in specs.items()]
    try:
        cases = [(name, jobs) for name in specs for jobs in (1, 4)]
        rates: dict[tuple[str, int], list[float]] = {c: [] for c in cases}
        for _ in range(3):                       # alternate rounds
            for name, jobs in cases:
                rates[(name, jobs)].append(_rate(specs[name], count, jobs))
        base = max(rates[("full/unix", 1)])
        print(f"{count} messages per run, best of 3 alternating rounds")
        for name, jobs in cases:
            best = max(rates[(name, jobs)])
            print(f"{name:10} -j{jobs}: {best:8.0f} msgs/s  ratio {best / base:5.2f}")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
