"""`make soak`: the daemon under sustained load through real Postfix, then
killed and stopped under load (issue 12, "Done when").

Three phases against one private Postfix (tests/e2e/postfix.py, XCLIENT so
the milter sees each message's own client, HELO and envelope) and the real
daemon on a unix socket, shipped rules, no Internet DNS:

1. soak: SESSIONS concurrent SMTP sessions send corpus-shaped mail for
   MINUTES. Every message's verdict through Postfix must equal replay's
   for the same message (replayed once beforehand with Postfix's missing
   headers added); 0 milter errors (daemon internal errors, Postfix milter
   warnings, unexpected 4xx); the daemon's RSS at the end within 5 % of
   its RSS after warm-up; every 250 has the daemon's log line (nothing
   accepted unchecked).
2. kill -9 under load: while the daemon is dead Postfix answers 4xx
   (milter_default_action = tempfail) and accepts nothing unchecked; hits
   the daemon logged but had not written are lost, all of them logged
   within the writer's batch interval (0.5 s) before the kill.
3. SIGTERM under load: every hit the daemon logged is in the database.

Messages: every sample in samples/, plus up to --corpus-max files of
../shared/corpus when it is there (read in place, never copied). Prints the
figures and exits 1 if any check fails.

Usage: python3 bench/soak.py [--minutes 10] [--sessions 50] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import re
import signal
import smtplib
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from milterguard.replay.conversation import replay_message
from milterguard.replay.files import collect_files
from milterguard.replay.message import CONTINUATION_LINE_BREAK, parse_message
from tests.e2e.postfix import (MilterProcess, PostfixInstance, milter_params,
                               milterguard_argv)

CONFIG = """\
# make soak: shipped rules, no checks that need the Internet's DNS.
rules: {site: [], reload_interval: 0}
allowlist: {networks: []}
envelope: {reject_unknown_sender_domain: false, reject_null_mx: false,
           reject_unknown_recipient_domain: false}
helo: {reject_unknown: false}
dnsbl: {zones: []}
dns: {probe_names: []}
"""
#: The hits writer wakes this often (store/hits.py): the most kill -9 may lose.
WRITER_INTERVAL = 0.5
LOG_LINE = re.compile(r"^(\S+ \S+) INFO milterguard\.session (.*)$")
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@dataclass
class Sample:
    name: str
    smtp_bytes: bytes          # what the SMTP client sends (no X-Replay-* lines)
    client_addr: str
    client_name: str
    helo: str
    sender: str
    rcpts: list[str]
    expected: tuple[str, str, str, tuple[str, ...]] = ("", "", "", ())


@dataclass
class Send:
    sample: str
    started: float
    code: int = 0
    text: str = ""
    stage: str = ""
    queue_id: str = ""


@dataclass
class Phase:
    name: str
    sends: list[Send] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def load_samples(corpus: str | None, corpus_max: int) -> list[Sample]:
    files = collect_files([os.path.join(ROOT, "samples")])
    if corpus and os.path.isdir(corpus):
        # Real mail only: mime_edge holds parser fixtures (never-crash tests,
        # where replay and Postfix are known to differ: issue 12, finding 10).
        found = sorted(p for p in collect_files([corpus]) if "/mime_edge/" not in p)
        step = max(1, len(found) // max(1, corpus_max))
        files += found[::step][:corpus_max]
    out = []
    for path in files:
        with open(path, "rb") as fh:
            raw = fh.read()
        try:
            msg = parse_message(raw)
        except Exception:  # noqa: BLE001 - replay would fail on it the same way
            continue
        head = b"".join(name + b":" + value.replace(CONTINUATION_LINE_BREAK, b"\r\n") + b"\r\n"
                        for name, value in msg.headers)
        env = msg.envelope
        if not env.recipients or not all(_plain(a) for a in [env.sender or "", *env.recipients]):
            continue
        out.append(Sample(path, head + b"\r\n" + msg.body, env.client_addr, env.client_name,
                          env.helo, env.sender or "", list(env.recipients)))
    return out


def _plain(address: str) -> bool:
    """An address smtplib and Postfix take as is (no spaces, quotes, 8-bit)."""
    return all(33 <= ord(c) < 127 for c in address) and '"' not in address


def expected_verdicts(spec: str, samples: list[Sample]) -> None:
    for sample in samples:
        with open(sample.name, "rb") as fh:
            result = replay_message(spec, fh.read(), name=sample.name, timeout=60,
                                    add_missing_headers=True)
        sample.expected = (result.stage, result.action, " ".join(result.reply.split()),
                           tuple(sorted(set(result.hits))))


def send_one(port: int, sample: Sample, phase: Phase) -> None:
    send = Send(sample.name, time.time())
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            smtp.ehlo("soak-client.example.net")
            code, text = smtp.docmd("XCLIENT", f"ADDR={sample.client_addr} "
                                    f"NAME={sample.client_name or '[UNAVAILABLE]'} "
                                    f"HELO={sample.helo or '[UNAVAILABLE]'}")
            if code != 220:
                raise smtplib.SMTPResponseException(code, text)
            smtp.ehlo(sample.helo or "soak-client.example.net")
            for stage, command in (("mail", lambda: smtp.mail(sample.sender)),
                                   *[("rcpt", lambda r=r: smtp.rcpt(r)) for r in sample.rcpts]):
                code, text = command()
                if code >= 400:
                    send.code, send.text, send.stage = code, text.decode("utf-8", "replace"), stage
                    break
            else:
                code, text = smtp.data(sample.smtp_bytes)
                send.code, send.text, send.stage = code, text.decode("utf-8", "replace"), "eom"
                match = re.search(r"queued as (\w+)", send.text)
                if match:
                    send.queue_id = match.group(1)
    except smtplib.SMTPResponseException as exc:
        send.code, send.text = exc.smtp_code, exc.smtp_error.decode("utf-8", "replace")
        send.stage = send.stage or "data"
    except (OSError, smtplib.SMTPException) as exc:
        send.code, send.text, send.stage = -1, repr(exc), "connection"
    with phase.lock:
        phase.sends.append(send)


def load(port: int, samples: list[Sample], phase: Phase, sessions: int, stop: threading.Event,
         seed: int) -> list[threading.Thread]:
    def worker(n: int) -> None:
        rnd = random.Random(seed * 1000 + n)
        while not stop.is_set():
            send_one(port, rnd.choice(samples), phase)
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(sessions)]
    for thread in threads:
        thread.start()
    return threads


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def daemon_lines(daemon: MilterProcess) -> dict[str, list[dict[str, str]]]:
    """queue_id -> the daemon's lines for it (fields + their time). Postfix
    reuses short queue ids over 100,000 messages, so an id may have several."""
    out: dict[str, list[dict[str, str]]] = {}
    for line in daemon.log_text().splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        fields = {k: v.strip('"') for k, v in FIELD.findall(match.group(2))}
        stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        fields["_ts"] = str(stamp)
        if fields.get("queue_id", "-") != "-":
            out.setdefault(fields["queue_id"], []).append(fields)
    return out


def line_for(lines: dict[str, list[dict[str, str]]], send: Send,
             sender: str) -> dict[str, str] | None:
    """The daemon's line for this send: its queue id and sender, nearest in time."""
    found = [f for f in lines.get(send.queue_id, []) if f.get("from") == f"<{sender}>"]
    return min(found, key=lambda f: abs(float(f["_ts"]) - send.started)) if found else None


def hits_by_queue_id(database: str, since: float) -> Counter:
    """Hits per queue id recorded since ``since`` (this phase only: queue ids
    of earlier phases may come back)."""
    conn = sqlite3.connect(database)
    try:
        return Counter(dict(conn.execute("SELECT queue_id, COUNT(*) FROM hits WHERE ts >= ?"
                                         " GROUP BY queue_id", (since,))))
    finally:
        conn.close()


def delivery(action: str) -> str:
    """Replay says "accept" where the daemon logs "continue": both deliver."""
    return "deliver" if action in ("accept", "continue") else action


def rules_of(fields: dict[str, str]) -> tuple[str, ...]:
    """The rule ids of a log line; observe-mode ones are marked "(observe)"
    there and plain in replay's X-Milterguard header."""
    rules = fields.get("rules", "-")
    if rules in ("-", ""):
        return ()
    return tuple(sorted({r.removesuffix("(observe)") for r in rules.split(",")}))


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = tempfile.mkdtemp(prefix="mg-soak-")
        os.chmod(self.work, 0o755)
        self.config = os.path.join(self.work, "soak.yaml")
        with open(self.config, "w", encoding="utf-8") as fh:
            fh.write(CONFIG)
        self.spec = f"unix:{self.work}/mg.sock"
        self.state = os.path.join(self.work, "state")
        self.failures: list[str] = []
        self.daemons: list[MilterProcess] = []

    def start_daemon(self) -> MilterProcess:
        n = len(self.daemons)
        env = dict(os.environ, PYTHONPATH=ROOT)
        daemon = MilterProcess(milterguard_argv(self.config, self.spec, self.state), self.spec,
                               os.path.join(self.work, f"daemon{n}.log"), env=env, cwd=ROOT,
                               term_grace=40)
        self.daemons.append(daemon)
        return daemon.start(timeout=60)

    def check(self, ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            self.failures.append(what)

    # -- phase 1 -----------------------------------------------------------

    def soak(self, postfix: PostfixInstance, samples: list[Sample], daemon: MilterProcess) -> None:
        args = self.args
        phase, stop = Phase("soak"), threading.Event()
        by_name = {s.name: s for s in samples}
        print(f"== soak: {args.sessions} sessions for {args.minutes:g} min", flush=True)
        started = time.monotonic()
        threads = load(postfix.port, samples, phase, args.sessions, stop, 1)
        rss: list[tuple[float, int]] = []
        end = started + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            rss.append((time.monotonic() - started, rss_kb(daemon.proc.pid)))
        stop.set()
        for thread in threads:
            thread.join(180)
        elapsed = time.monotonic() - started
        warm = [kb for t, kb in rss if args.minutes * 60 * 0.15 <= t <= args.minutes * 60 * 0.3]
        tail = [kb for t, kb in rss if t >= args.minutes * 60 * 0.85]
        base = sum(warm) / len(warm) if warm else rss[0][1]
        last = sum(tail) / len(tail) if tail else rss[-1][1]
        growth = (last - base) / base * 100
        lines = daemon_lines(daemon)
        mismatches, unchecked, errors, by_postfix = [], 0, Counter(), Counter()
        for send in phase.sends:
            sample = by_name[send.sample]
            stage, action, reply, rules = sample.expected
            if send.code == 250:
                fields = line_for(lines, send, sample.sender)
                if fields is None:
                    unchecked += 1
                    continue
                got = (delivery(fields.get("action", "")), rules_of(fields))
                want = (delivery(action), rules)
                if got != want:
                    mismatches.append((send.sample, got, want))
            else:
                text = " ".join(f"{send.code} {send.text}".split())
                if send.code // 100 == 4 and "Service unavailable - try again later" in send.text:
                    errors["milter-tempfail"] += 1
                elif text == reply:
                    continue
                elif "[" not in text and reply.startswith(f"{send.code} "):
                    # Postfix refused it itself before asking the milter (its
                    # own address syntax check), with the code replay got from
                    # the daemon: the same refusal, Postfix's words.
                    by_postfix[send.sample] += 1
                else:
                    mismatches.append((send.sample, text, reply))
        internal = sum(1 for line in daemon.log_text().splitlines()
                       if "event=internal-error" in line or "Traceback" in line)
        pf_milter = len(postfix.log_lines(r"warning: milter|milter.*(error|timeout)"))
        count = len(phase.sends)
        codes = Counter(s.code for s in phase.sends)
        print(f"  messages {count} in {elapsed:.0f} s ({count / elapsed:.1f}/s), "
              f"distinct {len({s.sample for s in phase.sends})}, replies {dict(codes)}")
        print(f"  RSS after warm-up {base / 1024:.1f} MB, at the end {last / 1024:.1f} MB: "
              f"{growth:+.2f} %")
        if by_postfix:
            print("  refused by Postfix itself before the milter, same code as replay's: "
                  + ", ".join(f"{os.path.basename(n)} x{c}" for n, c in by_postfix.items()))
        self.check(not mismatches, f"every verdict equal to replay's ({len(mismatches)} differ)")
        seen = Counter(os.path.basename(m[0]) for m in mismatches)
        shown = set()
        for sample, got, want in mismatches:
            name = os.path.basename(sample)
            if name not in shown and len(shown) < 10:
                shown.add(name)
                print(f"       {name} x{seen[name]}: postfix {got!r} replay {want!r}")
        self.check(unchecked == 0, f"every 250 has the daemon's verdict ({unchecked} without)")
        self.check(internal == 0 and pf_milter == 0 and not errors,
                   f"0 milter errors (daemon {internal}, postfix {pf_milter}, tempfails {dict(errors)})")
        self.check(growth < 5.0, f"RSS growth {growth:+.2f} % < 5 %")

    # -- phases 2 and 3 ------------------------------------------------------

    def stop_under_load(self, postfix: PostfixInstance, samples: list[Sample], how: str) -> None:
        print(f"== {how} under load", flush=True)
        daemon = self.start_daemon()
        phase_started = time.time()
        phase, stop = Phase(how), threading.Event()
        threads = load(postfix.port, samples, phase, self.args.sessions, stop, 2)
        time.sleep(self.args.stop_after)
        killed_at = time.time()
        if how == "kill -9":
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait(30)
            time.sleep(10)          # Postfix keeps getting mail while the daemon is down
        else:
            daemon.proc.send_signal(signal.SIGTERM)
            daemon.proc.wait(60)
        stop.set()
        for thread in threads:
            thread.join(180)
        lines = daemon_lines(daemon)
        hits = hits_by_queue_id(os.path.join(self.state, "milterguard.db"), phase_started)
        by_name = {s.name: s for s in samples}
        unchecked = [s for s in phase.sends if s.code == 250
                     and line_for(lines, s, by_name[s.sample].sender) is None]
        after = [s for s in phase.sends if s.started > killed_at + 1.0]
        refused_after = sum(1 for s in after if s.code // 100 == 4 or s.code == -1)
        # Postfix's own 5xx (address syntax) need no milter; only a 250 would
        # be mail accepted unchecked.
        accepted_after = sum(1 for s in after if s.code == 250)
        logged_with_hits = {q: f[-1] for q, f in lines.items() if any(rules_of(x) for x in f)}
        lost = {q: f for q, f in logged_with_hits.items() if hits.get(q, 0) == 0}
        ages = [killed_at - float(f["_ts"]) for f in lost.values()]
        print(f"  messages {len(phase.sends)}, after the {how}: {len(after)} "
              f"({refused_after} answered 4xx or refused), replies "
              f"{dict(Counter(s.code for s in phase.sends))}")
        print(f"  hits logged {len(logged_with_hits)} messages, lost {len(lost)}"
              + (f" (logged {min(ages):.2f}-{max(ages):.2f} s before the kill)" if ages else ""))
        self.check(not unchecked, f"nothing accepted unchecked ({len(unchecked)} 250s without"
                                  " the daemon's verdict)")
        if how == "kill -9":
            self.check(accepted_after == 0, "Postfix tempfails while the daemon is dead: "
                       f"{refused_after} 4xx, {len(after) - refused_after - accepted_after} "
                       f"refused by Postfix itself, {accepted_after} accepted")
            self.check(all(a <= WRITER_INTERVAL + 0.1 for a in ages),
                       f"lost hits within the writer's batch interval ({WRITER_INTERVAL} s)")
        else:
            self.check(not lost, f"SIGTERM: 0 hits lost ({len(lost)})")
            self.check(bool(daemon.log_lines("event=stop")) if hasattr(daemon, "log_lines")
                       else "event=stop" in daemon.log_text(), "event=stop logged")

    def run(self) -> int:
        samples = load_samples(self.args.corpus, self.args.corpus_max)
        print(f"messages: {len(samples)} files (samples/"
              + (f" + {self.args.corpus}" if self.args.corpus and os.path.isdir(self.args.corpus)
                 else "") + ")", flush=True)
        daemon = self.start_daemon()
        postfix = PostfixInstance(milter_params([self.spec], default_action="tempfail",
                                                default_process_limit="200"),
                                  base_dir=os.path.join(self.work, "postfix"))
        try:
            postfix.start()
            expected_verdicts(self.spec, samples)
            print(f"expected verdicts (replay): {dict(Counter(s.expected[1] for s in samples))}")
            self.soak(postfix, samples, daemon)
            daemon.stop()
            self.stop_under_load(postfix, samples, "kill -9")
            self.stop_under_load(postfix, samples, "SIGTERM")
        finally:
            for d in self.daemons:
                d.stop()
            postfix.stop()
        print("soak: " + ("FAILED: " + "; ".join(self.failures) if self.failures else "all checks passed"))
        print(f"work dir (logs): {self.work}")
        return 1 if self.failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--corpus", default=os.path.join(os.path.dirname(ROOT), "shared", "corpus"))
    parser.add_argument("--corpus-max", type=int, default=400)
    parser.add_argument("--stop-after", type=float, default=20.0,
                        help="seconds of load before kill -9 / SIGTERM")
    return Soak(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
