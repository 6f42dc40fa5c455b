"""Throughput of real Postfix with and without milters, via smtp-source.

Set-ups, each on its own private Postfix instance (tests/e2e/postfix.py):
  no-milter           Postfix alone: the ceiling
  floor/unix|inet     bench/floor_milter.py: what pymilter + libmilter cost
  milterguard/unix|inet  the daemon with the shipped rule set (or --config)

Each run sends a fixed number of messages with 10 parallel smtp-source
sessions to the discard transport. Runs alternate between set-ups for
several rounds (the machine is noisy), and each run must show every
message delivered in the maillog and smtp-source exiting 0, so a milter that
tempfails everything cannot look fast. Printed: msgs/s of each run, medians,
and the ratios milterguard/floor and milterguard/no-milter per socket kind.

A second, short part measures per-message latency with one session for the
floor milter, a "lazy" milter that negotiates callbacks away, and
milterguard, on both socket kinds: the TCP stall of HACKING.md, "What the code relies on", 1 (~40 ms a message
on TCP) shows up there if it applies.

Exits 1 if any run lost mail or a milter did not start.

Usage: python3 bench/bench_postfix.py [--messages N] [--rounds R]
           [--config MILTERGUARD.yaml] [--sockets unix,inet]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
if ROOT not in sys.path:
    sys.path.append(ROOT)

from postfix import (MilterProcess, PostfixInstance,
                     milter_params, milter_socket_spec, milterguard_argv)

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"

#: A clean, ordinary-looking message (multipart, QP, HTML): the daemon has
#: to decode and scan it, but no shipped rule should fire on it.
MESSAGE = """\
From: Alice Example <alice@example.com>
To: Bob Example <bob@example.org>
Subject: Minutes of the planning meeting
Date: Tue, 04 Mar 2025 10:15:00 +0100
Message-ID: <minutes-2025-03-04.1234@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1_example"

--b1_example
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Hello Bob,

here are the notes from this morning's meeting. We agreed to move the
review of the storage layout to next week, because the test machines are
not ready. Caf=C3=A9 on the third floor, 10:00, as usual.

1. Storage layout: draft by Friday.
2. Release notes: Carol collects the changes.
3. The build server gets a new disk on Thursday.

See https://www.example.com/wiki/planning for the full agenda.

Regards,
Alice

--b1_example
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><p>Hello Bob,</p>
<p>here are the notes from this morning's meeting. We agreed to move the
review of the storage layout to next week, because the test machines are
not ready. Caf=C3=A9 on the third floor, 10:00, as usual.</p>
<ol><li>Storage layout: draft by Friday.</li>
<li>Release notes: Carol collects the changes.</li>
<li>The build server gets a new disk on Thursday.</li></ol>
<p>See <a href=3D"https://www.example.com/wiki/planning">the agenda</a>.</p>
<p>Regards,<br>Alice</p></body></html>

--b1_example--
"""


def milterguard_available() -> bool:
    try:
        return importlib.util.find_spec("milterguard.cli.run") is not None
    except ImportError:
        return False


@dataclass
class Setup:
    name: str
    postfix: PostfixInstance
    milter: MilterProcess | None = None
    rates: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def start(self) -> None:
        if self.milter:
            self.milter.start()
        self.postfix.start()

    def stop(self) -> None:
        try:
            self.postfix.cleanup()
        finally:
            if self.milter:
                self.milter.stop()


def write_milterguard_config(workdir: str, extra: str | None) -> str:
    """The bench config: shipped defaults and rules, loopback NOT allowlisted.

    The defaults allowlist 127.0.0.0/8, which would skip every check for
    smtp-source's connections and measure nothing. The checks that need the
    Internet's DNS are off (as in samples/demo.yaml): the machine has none,
    and a timeout per message would measure the resolver. A --config file
    given on the command line is used as is.
    """
    if extra:
        return os.path.abspath(extra)
    path = os.path.join(workdir, "milterguard-bench.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("rules:\n  shipped: true\n  site: []\n  reload_interval: 0\n"
                 "allowlist:\n  networks: []\n"
                 "envelope:\n  reject_unknown_sender_domain: false\n"
                 "  reject_null_mx: false\n  reject_unknown_recipient_domain: false\n"
                 "helo:\n  reject_unknown: false\n"
                 "logging:\n  level: warning\n")
    return path


def make_setup(variant: str, kind: str, workdir: str, mg_config: str | None,
               tag: str = "") -> Setup:
    """A Postfix instance wired to one milter: floor, lean, lazy or milterguard."""
    name = f"{variant}/{kind}"
    key = f"{tag}{variant}-{kind}"
    spec = milter_socket_spec(kind, workdir, key)
    log = os.path.join(workdir, f"{key}.log")
    env = None
    if variant == "milterguard":
        state = os.path.join(workdir, f"state-{key}")
        os.makedirs(state, mode=0o755, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        argv = milterguard_argv(mg_config, spec, state)
    else:
        argv = [sys.executable, os.path.join(HERE, "floor_milter.py")]
        argv += ([f"--{variant}"] if variant in ("lazy", "lean") else []) + [spec]
    return Setup(name, PostfixInstance(milter_params([spec]),
                                       base_dir=os.path.join(workdir, f"pf-{key}")),
                 MilterProcess(argv, spec, log, env=env))


def build_setups(args: argparse.Namespace, workdir: str, mg_config: str | None) -> list[Setup]:
    setups = [Setup("no-milter", PostfixInstance(base_dir=os.path.join(workdir, "pf-none")))]
    for kind in args.sockets:
        setups.append(make_setup("floor", kind, workdir, mg_config))
        if args.milterguard:
            setups.append(make_setup("milterguard", kind, workdir, mg_config))
    return setups


def smtp_source(port: int, messages: int, sessions: int, msgfile: str,
                timeout: float) -> tuple[float, subprocess.CompletedProcess[str]]:
    argv = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-F", msgfile,
            "-M", "client.example.net", "-f", "alice@example.com",
            "-t", "bob@example.org", f"127.0.0.1:{port}"]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return time.monotonic() - start, proc


def one_run(setup: Setup, args: argparse.Namespace, msgfile: str) -> float | None:
    """Send ``args.messages``; return msgs/s, or None when mail was lost."""
    before = setup.postfix.count_discarded()
    if setup.milter and not setup.milter.alive():
        setup.failures.append("milter process died; its log ends:\n"
                              + setup.milter.log_text()[-1500:])
        return None
    elapsed, proc = smtp_source(setup.postfix.port, args.messages, args.sessions,
                                msgfile, timeout=600)
    # Wait for the queue to drain so the next run does not compete with it.
    delivered = setup.postfix.wait_discarded(before + args.messages, timeout=120) - before
    if proc.returncode != 0 or delivered != args.messages:
        setup.failures.append(f"smtp-source exit {proc.returncode} "
                              f"({(proc.stderr or proc.stdout).strip()[-200:]}), "
                              f"delivered {delivered}/{args.messages}")
        return None
    return args.messages / elapsed


def latency_part(args: argparse.Namespace, workdir: str, msgfile: str,
                 mg_config: str | None) -> bool:
    """Per-message latency with one session: shows pitfall 3 if it applies.

    "lazy" negotiates callbacks away and is expected to stall on TCP; floor
    and milterguard implement every callback and should not. Returns False
    when a run lost mail or a milter did not start.
    """
    print(f"\n== latency, 1 session, {args.latency_messages} messages ==")
    variants = ["floor", "lazy"] + (["milterguard"] if args.milterguard else [])
    rows: dict[str, float] = {}
    ok = True
    for variant in variants:
        for kind in args.sockets:
            setup = make_setup(variant, kind, workdir, mg_config, tag="lat-")
            try:
                setup.start()
                elapsed, proc = smtp_source(setup.postfix.port, args.latency_messages, 1,
                                            msgfile, timeout=300)
                delivered = setup.postfix.wait_discarded(args.latency_messages, timeout=60)
                if proc.returncode != 0 or delivered != args.latency_messages:
                    print(f"{setup.name:<18} FAILED: exit {proc.returncode}, "
                          f"delivered {delivered}/{args.latency_messages}")
                    ok = False
                    continue
                rows[setup.name] = 1000.0 * elapsed / args.latency_messages
                print(f"{setup.name:<18} {rows[setup.name]:7.2f} ms/msg", flush=True)
            except Exception as exc:  # noqa: BLE001 - one failed set-up must not hide the rest
                print(f"{setup.name:<18} FAILED: {str(exc)[-1000:]}")
                ok = False
            finally:
                setup.stop()
    for variant in variants:
        u, i = rows.get(f"{variant}/unix"), rows.get(f"{variant}/inet")
        if u and i:
            stall = i - u
            verdict = "STALL (pitfall 3)" if stall > 25 else "no stall"
            print(f"{variant}: inet - unix = {stall:+.2f} ms/msg -> {verdict}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--sockets", default="unix,inet",
                        type=lambda s: [k for k in s.split(",") if k])
    parser.add_argument("--config", help="milterguard config to bench with "
                        "(default: shipped rules, loopback not allowlisted)")
    parser.add_argument("--no-milterguard", dest="milterguard", action="store_false")
    parser.add_argument("--latency-messages", type=int, default=100,
                        help="messages for the 1-session latency part (0: skip)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.milterguard and not milterguard_available():
        print("note: milterguard.cli.run not found; benching without milterguard")
        args.milterguard = False

    workdir = tempfile.mkdtemp(prefix="mg-bench-")
    os.chmod(workdir, 0o755)
    msgfile = os.path.join(workdir, "message.eml")
    with open(msgfile, "w", encoding="utf-8") as fh:
        fh.write(MESSAGE)
    print(f"smtp-source: {args.sessions} sessions, {args.messages} msgs/run, "
          f"{args.rounds} rounds, message {len(MESSAGE)} bytes; work dir {workdir}")
    mg_config = write_milterguard_config(workdir, args.config) if args.milterguard else None
    setups = build_setups(args, workdir, mg_config)
    failed = False
    try:
        for setup in list(setups):
            try:
                setup.start()
            except Exception as exc:  # noqa: BLE001 - a broken daemon must not hide the rest
                print(f"{setup.name}: could not start: {str(exc)[-1500:]}")
                failed = True
                setup.stop()
                setups.remove(setup)
        for rnd in range(args.rounds):
            # Rotate the order so no set-up always runs first or last.
            order = setups[rnd % len(setups):] + setups[:rnd % len(setups)]
            for setup in order:
                rate = one_run(setup, args, msgfile)
                if rate:
                    setup.rates.append(rate)
                shown = f"{rate:8.1f} msgs/s" if rate else "  FAILED: " + setup.failures[-1]
                print(f"round {rnd + 1} {setup.name:<18} {shown}", flush=True)
        print("\n== medians ==")
        med: dict[str, float] = {}
        for setup in setups:
            rates = setup.rates
            if rates:
                med[setup.name] = statistics.median(rates)
                print(f"{setup.name:<18} {med[setup.name]:8.1f} msgs/s  "
                      f"(min {min(rates):.1f}, max {max(rates):.1f}, n={len(rates)})")
            if setup.failures:
                failed = True
                print(f"{setup.name:<18} {len(setup.failures)} FAILED runs: {setup.failures[0]}")
        print("\n== ratios (medians) ==")
        base = med.get("no-milter")
        for kind in args.sockets:
            floor = med.get(f"floor/{kind}")
            mg = med.get(f"milterguard/{kind}")
            if floor and base:
                print(f"{kind}: floor/no-milter        = {floor / base:.3f}")
            if mg and floor:
                print(f"{kind}: milterguard/floor      = {mg / floor:.3f}")
            if mg and base:
                print(f"{kind}: milterguard/no-milter  = {mg / base:.3f}")
        if med.get("floor/unix") and med.get("floor/inet"):
            print(f"floor inet/unix = {med['floor/inet'] / med['floor/unix']:.3f}")
    finally:
        for setup in setups:
            setup.stop()
    if args.latency_messages > 0 and not latency_part(args, workdir, msgfile, mg_config):
        failed = True
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
