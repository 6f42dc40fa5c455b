"""Milter-process CPU per message: milterguard against the do-nothing floor milter.

    python3 bench/bench_milter_cpu.py [--messages N] [--rounds R] [floor] [mg]

Replays bench_postfix.py's message over a unix socket with the replay
harness (one conversation at a time, no Postfix) and reads each daemon's
own CPU time from /proc, so the figure is what the milter process spends
per message, without Postfix's share or the machine's noise in throughput.
Both daemons run side by side and take turns, a round of N messages each,
R times; the best round of each counts, and the last line is milterguard's
CPU as a multiple of the floor's (single runs on a busy machine swing too
much to compare across runs). Compare with bench_session.py (the Session
alone, no libmilter).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

import bench_postfix

from milterguard.replay.conversation import replay_message
from tests.e2e.postfix import MilterProcess, milterguard_argv

#: The shipped rules, nothing that needs DNS, quiet logs: the daemon's CPU is content checking.
CONFIG = """\
rules: {shipped: true, site: [], reload_interval: 0}
allowlist: {networks: []}
envelope: {reject_unknown_sender_domain: false, reject_null_mx: false,
           reject_unknown_recipient_domain: false}
helo: {reject_unknown: false}
logging: {level: warning}
"""
WARM_UP = 50
START_TIMEOUT = 30.0


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        # Fields after the command name, which may itself contain ") ".
        fields = handle.read().rsplit(")", 1)[1].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / os.sysconf("SC_CLK_TCK")


def start_daemon(name: str, workdir: str) -> MilterProcess:
    """The floor milter or milterguard, listening on a unix socket in ``workdir``."""
    spec = f"unix:{os.path.join(workdir, name + '.sock')}"
    if name == "floor":
        argv = [sys.executable, os.path.join(REPO, "bench", "floor_milter.py"), spec]
    else:
        config = os.path.join(workdir, "milterguard.yaml")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(CONFIG)
        argv = milterguard_argv(config, spec, os.path.join(workdir, "state"))
    daemon = MilterProcess(argv, spec, os.path.join(workdir, f"{name}.log"), cwd=REPO)
    return daemon.start(timeout=START_TIMEOUT)


def cpu_per_message(daemon: MilterProcess, message: bytes, count: int) -> tuple[float, str]:
    """The daemon's CPU seconds per message over ``count`` replays, and the last action."""
    assert daemon.proc is not None
    before = process_cpu_seconds(daemon.proc.pid)
    action = ""
    for _ in range(count):
        action = replay_message(daemon.spec, message).action
    return (process_cpu_seconds(daemon.proc.pid) - before) / count, action


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="floor|mg",
                        help="which daemons to measure (default: both)")
    parser.add_argument("--messages", type=int, default=500, help="messages per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per daemon, alternating")
    args = parser.parse_args()
    unknown = set(args.names) - {"floor", "mg"}
    if unknown:
        parser.error(f"unknown daemon {sorted(unknown)[0]!r}: floor or mg")
    message = bench_postfix.MESSAGE.encode()
    workdir = tempfile.mkdtemp(prefix="mg-bench-cpu-")
    daemons: dict[str, MilterProcess] = {}
    try:
        for name in dict.fromkeys(args.names or ["floor", "mg"]):
            daemons[name] = start_daemon(name, workdir)
            for _ in range(WARM_UP):          # lazy compiles and caches
                replay_message(daemons[name].spec, message)
        best = {name: float("inf") for name in daemons}
        actions = {}
        for _ in range(args.rounds):
            for name, daemon in daemons.items():
                cost, actions[name] = cpu_per_message(daemon, message, args.messages)
                best[name] = min(best[name], cost)
        for name in daemons:
            print(f"{name}: {actions[name]}, daemon cpu {best[name] * 1e6:.0f} us/msg "
                  f"(best of {args.rounds} rounds of {args.messages})")
        if {"floor", "mg"} <= set(daemons) and best["floor"] > 0:
            print(f"milterguard / floor: {best['mg'] / best['floor']:.2f}x daemon CPU per message")
    finally:
        for daemon in daemons.values():
            daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
