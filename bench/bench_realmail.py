"""milterguard against rspamd and the floors, on real-shaped mail (issue 13).

Each message of bench/mail/ (a plain-text ham, an HTML newsletter, a 20 KB+
HTML phishing mail with an attachment) goes through real Postfix with
``smtp-source -F`` (10 sessions), on a unix and a TCP milter socket, in
alternating runs of:

  no-milter          Postfix alone
  lean/KIND          bench/floor_milter.py --lean: receives everything,
                     answers only end of message (the Python floor)
  floor/KIND         the answer-every-callback floor
  rspamd/KIND        Debian's rspamd milter, private config (bench/rspamd_peer.py;
                     installed with apt-get when missing)
  milterguard/KIND   the daemon, shipped rules and gates (reject score out of
                     reach so every message is delivered: the scan is the same)

Printed per message and socket kind: the median msgs/s of each and the
ratios milterguard/rspamd and milterguard/lean. Then the milter CPU per
message (the milter processes' own user+system time from /proc; rspamd's
proxy and workers together) over a sample of a corpus (default
../shared/corpus, every Nth file), replayed one at a time over unix sockets.

Exits 1 when a run lost mail or a set-up did not start.

Usage: python3 bench/bench_realmail.py [--messages N] [--rounds R]
           [--sockets unix,inet] [--corpus DIR] [--sample N] [--no-rspamd]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, HERE)
if ROOT not in sys.path:
    sys.path.append(ROOT)

import bench_postfix
import rspamd_peer
from bench_milter_cpu import process_cpu_seconds
from bench_postfix import Setup, make_setup, one_run
from postfix import PostfixInstance, milter_params, milter_socket_spec

from milterguard.replay.conversation import replay_message

#: The bench config's one change to the shipped defaults besides DNS and
#: loopback (bench_postfix.write_milterguard_config): the phishing message
#: would be rejected, and every run must deliver every message.
EXTRA_CONFIG = "message:\n  reject_score: 1000\n"


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its direct children (rspamd's workers)."""
    total = process_cpu_seconds(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            children = [int(c) for c in handle.read().split()]
    except OSError:
        children = []
    for child in children:
        try:
            total += process_cpu_seconds(child)
        except OSError:
            pass
    return total


def build(args: argparse.Namespace, workdir: str, mg_config: str) -> list[Setup]:
    setups = [Setup("no-milter", PostfixInstance(base_dir=os.path.join(workdir, "pf-none")))]
    for kind in args.sockets:
        for variant in ("lean", "floor"):
            setups.append(make_setup(variant, kind, workdir, mg_config))
        if args.rspamd:
            spec = milter_socket_spec(kind, workdir, f"rspamd-{kind}")
            setups.append(Setup(f"rspamd/{kind}", PostfixInstance(
                milter_params([spec]), base_dir=os.path.join(workdir, f"pf-rspamd-{kind}")),
                rspamd_peer.RspamdMilter(spec, workdir)))
        setups.append(make_setup("milterguard", kind, workdir, mg_config))
    return setups


def throughput(args: argparse.Namespace, setups: list[Setup], mails: list[str]) -> bool:
    ok = True
    for mail in mails:
        name = os.path.basename(mail)
        print(f"\n== {name} ({os.path.getsize(mail)} bytes), {args.messages} msgs/run ==")
        for setup in setups:
            setup.rates = []
        for rnd in range(args.rounds):
            order = setups[rnd % len(setups):] + setups[:rnd % len(setups)]
            for setup in order:
                rate = one_run(setup, args, mail)
                if rate:
                    setup.rates.append(rate)
                else:
                    ok = False
                shown = f"{rate:8.1f} msgs/s" if rate else "  FAILED: " + setup.failures[-1]
                print(f"round {rnd + 1} {setup.name:<18} {shown}", flush=True)
        med = {s.name: statistics.median(s.rates) for s in setups if s.rates}
        print("medians: " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()))
        for kind in args.sockets:
            mg, lean, rsp = (med.get(f"{v}/{kind}") for v in ("milterguard", "lean", "rspamd"))
            parts = []
            if mg and rsp:
                parts.append(f"milterguard/rspamd = {mg / rsp:.2f}")
            if mg and lean:
                parts.append(f"milterguard/lean = {mg / lean:.2f}")
            print(f"{name} {kind}: " + ", ".join(parts), flush=True)
    return ok


def cpu_part(args: argparse.Namespace, setups: list[Setup]) -> None:
    files = sorted(glob.glob(os.path.join(args.corpus, "**", "*.eml"), recursive=True))
    sample = files[::max(1, len(files) // args.sample)][:args.sample] if files else []
    if not sample:
        print(f"\nno corpus at {args.corpus}: CPU part skipped")
        return
    mails = []
    for path in sample:
        with open(path, "rb") as handle:
            mails.append(handle.read())
    print(f"\n== milter CPU per message, {len(mails)} corpus messages one at a time (unix) ==")
    daemons = [s for s in setups if s.milter and s.milter.alive() and s.name.endswith("/unix")]
    for daemon in daemons:       # warm caches and lazy compiles
        for raw in mails[:20]:
            replay_message(daemon.milter.spec, raw)
    cost: dict[str, list[float]] = {d.name: [] for d in daemons}
    for _ in range(args.cpu_rounds):
        for daemon in daemons:
            assert daemon.milter is not None and daemon.milter.proc is not None
            pid = daemon.milter.proc.pid
            before = tree_cpu_seconds(pid)
            for raw in mails:
                replay_message(daemon.milter.spec, raw)
            cost[daemon.name].append((tree_cpu_seconds(pid) - before) / len(mails))
    best = {name: min(v) for name, v in cost.items() if v}
    for name, value in best.items():
        print(f"{name:<18} {value * 1e6:7.0f} us/msg (best of {args.cpu_rounds})")
    if best.get("milterguard/unix") and best.get("lean/unix"):
        print(f"milterguard / lean CPU = {best['milterguard/unix'] / best['lean/unix']:.2f}x")
    if best.get("milterguard/unix") and best.get("rspamd/unix"):
        print(f"milterguard / rspamd CPU = {best['milterguard/unix'] / best['rspamd/unix']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=600, help="messages per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--sockets", default="unix,inet",
                        type=lambda s: [k for k in s.split(",") if k])
    parser.add_argument("--mail", nargs="*", default=sorted(glob.glob(os.path.join(HERE, "mail", "*.eml"))))
    parser.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus"))
    parser.add_argument("--sample", type=int, default=400, help="corpus messages for the CPU part")
    parser.add_argument("--cpu-rounds", type=int, default=2)
    parser.add_argument("--no-rspamd", dest="rspamd", action="store_false")
    args = parser.parse_args(argv)
    if args.rspamd:
        why = rspamd_peer.ensure_installed()
        if why:
            print(f"rspamd left out: {why}")
            args.rspamd = False
    workdir = tempfile.mkdtemp(prefix="mg-bench-real-")
    os.chmod(workdir, 0o755)
    mg_config = bench_postfix.write_milterguard_config(workdir, None)
    with open(mg_config, "a", encoding="utf-8") as handle:
        handle.write(EXTRA_CONFIG)
    setups = build(args, workdir, mg_config)
    ok = True
    try:
        for setup in list(setups):
            try:
                setup.start()
            except Exception as exc:  # noqa: BLE001 - one broken set-up must not hide the rest
                print(f"{setup.name}: could not start: {str(exc)[-1500:]}")
                ok = False
                setup.stop()
                setups.remove(setup)
        ok = throughput(args, setups, args.mail) and ok
        cpu_part(args, setups)
    finally:
        for setup in setups:
            setup.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
