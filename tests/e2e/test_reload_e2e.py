"""Hot reload under load, through a real Postfix.

Mail flows all the time from two clients (a new connection per message,
and one long connection that sends message after message). Meanwhile:

1. a rule file gains a phrase: mail with the new phrase gets the 5xx soon
   after, and no message on any connection gets a 4xx or a dropped
   connection (Postfix would say 4xx if the milter went away, since
   milter_default_action = tempfail);
2. the rule file is broken: the daemon logs the file and line, the previous
   rules stay active (old and new phrase still refused, clean mail still
   accepted) and `milterguard check` exits 1 naming the same place.

The reload latency is printed (run with -s to see it); the watcher polls
every second, so it should stay under two.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from tests.e2e.postfix import PostfixInstance, milter_params

OLD = "quantum yield bonanza"
NEW = "sapphire windfall scheme"
SENDER = "alice@example.com"
RCPT = "bob@example.org"
HELO = "client.example.net"
MAX_MESSAGES = 1500          # per sender thread: the load is bounded
MAX_SECONDS = 150.0

RULES_V1 = f"""\
rules:
  - id: reload-body
    target: body
    phrases: ["{OLD}"]
    action: reject
    reply: "550 5.7.1 Refused by reload test rule"
"""
RULES_V2 = RULES_V1.replace(f'["{OLD}"]', f'["{OLD}", "{NEW}"]')
# Line 4 holds the error: an invalid regular expression.
RULES_BROKEN = RULES_V2.replace("    phrases:", "    regex: ['(unclosed']\n    phrases:", 1)
BROKEN_LINE = 4

CONFIG = """\
rules:
  shipped: false
  site: [{rules_dir}]
  reload_interval: 1.0
allowlist:
  networks: []
envelope:
  reject_unknown_sender_domain: false
  reject_null_mx: false
  reject_unknown_recipient_domain: false
helo:
  reject_unknown: false
"""


@dataclass
class Sent:
    kind: str            # clean, old, new
    started: float
    ended: float
    code: int
    text: str
    conn: str            # "fresh" or "long"


def message(kind: str, n: int) -> bytes:
    phrase = {"clean": "the quarterly figures", "old": OLD, "new": NEW}[kind]
    return (f"From: Alice <{SENDER}>\r\nTo: Bob <{RCPT}>\r\nSubject: note {n}\r\n"
            f"Date: Tue, 04 Mar 2025 10:15:00 +0100\r\nMessage-ID: <reload-{n}@example.com>\r\n"
            f"\r\nHello Bob,\r\nabout {phrase}: see you on Monday.\r\n").encode()


def transaction(smtp: smtplib.SMTP, kind: str, n: int) -> tuple[int, str]:
    code, text = smtp.mail(SENDER)
    if code < 400:
        code, text = smtp.rcpt(RCPT)
    if code < 400:
        code, text = smtp.data(message(kind, n))
    else:
        smtp.rset()
    return code, text.decode(errors="replace")


class Load:
    """Two sender threads; every transaction's outcome is kept."""

    KINDS = ("clean", "old", "new")

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[Sent] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._fresh, daemon=True),
                        threading.Thread(target=self._long, daemon=True)]

    def _add(self, sent: Sent) -> None:
        with self.lock:
            self.results.append(sent)

    def _connect(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP("127.0.0.1", self.port, local_hostname=HELO, timeout=60)
        smtp.ehlo()
        return smtp

    def _fresh(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        for n in range(MAX_MESSAGES):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            kind = self.KINDS[n % 3]
            start = time.monotonic()
            try:
                with self._connect() as smtp:
                    code, text = transaction(smtp, kind, n)
            except (smtplib.SMTPException, OSError) as exc:
                code, text = -1, f"{type(exc).__name__}: {exc}"
            self._add(Sent(kind, start, time.monotonic(), code, text, "fresh"))
            time.sleep(0.02)

    def _long(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        try:
            smtp = self._connect()
        except (smtplib.SMTPException, OSError) as exc:
            self._add(Sent("clean", time.monotonic(), time.monotonic(), -1, repr(exc), "long"))
            return
        try:
            for n in range(MAX_MESSAGES):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                kind = self.KINDS[(n + 1) % 3]
                start = time.monotonic()
                try:
                    code, text = transaction(smtp, kind, 100000 + n)
                except (smtplib.SMTPException, OSError) as exc:
                    self._add(Sent(kind, start, time.monotonic(), -1,
                                   f"{type(exc).__name__}: {exc}", "long"))
                    return
                self._add(Sent(kind, start, time.monotonic(), code, text, "long"))
                time.sleep(0.05)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)

    def snapshot(self) -> list[Sent]:
        with self.lock:
            return list(self.results)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.snapshot()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.snapshot()) >= count, f"mail stopped flowing: {self.snapshot()[-5:]}"


def write_atomically(path: str, text: str) -> None:
    """As editors do: a new file renamed over the old one, never half-written."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def expected(sent: Sent, new_active: bool) -> bool:
    if sent.kind == "clean":
        return sent.code == 250
    if sent.kind == "old" or new_active:
        return sent.code == 550 and "Refused by reload test rule" in sent.text
    return sent.code == 250


def test_reload_under_load_through_postfix(e2e_dir, milterguard_factory, postfix_factory) -> None:
    rules_dir = os.path.join(e2e_dir, "rules.d")
    os.makedirs(rules_dir)
    rule_file = os.path.join(rules_dir, "site.yaml")
    write_atomically(rule_file, RULES_V1)
    daemon = milterguard_factory(CONFIG.format(rules_dir=rules_dir), kind="unix")
    postfix: PostfixInstance = postfix_factory(milter_params([daemon.spec], default_action="tempfail"))

    def diag() -> str:
        return (f"\n--- maillog:\n{postfix.log_text()[-2000:]}"
                f"\n--- daemon:\n{daemon.log_text()[-2000:]}")

    with Load(postfix.port) as load:
        load.wait_for(12)
        before = load.snapshot()
        assert all(expected(s, new_active=False) for s in before), [s for s in before
                                                                   if not expected(s, False)]

        # 1. add a phrase
        edited = time.monotonic()
        write_atomically(rule_file, RULES_V2)
        deadline = edited + 30
        first_refusal = None
        while first_refusal is None and time.monotonic() < deadline:
            for s in load.snapshot():
                if s.kind == "new" and s.code == 550 and s.started >= edited:
                    first_refusal = s
                    break
            time.sleep(0.05)
        assert first_refusal is not None, "the new phrase never took effect" + diag()
        latency = first_refusal.ended - edited
        print(f"\nreload: new phrase refused {latency:.2f} s after the edit "
              f"(watcher polls every 1.0 s)")
        assert daemon.log_lines("event=reload "), diag()
        # From the refusal on, every new-phrase message is refused, on both connections.
        n_after_edit = len(load.snapshot())
        load.wait_for(n_after_edit + 12)
        later = [s for s in load.snapshot() if s.started > first_refusal.ended]
        assert {s.conn for s in later} == {"fresh", "long"}
        assert all(expected(s, new_active=True) for s in later), [s for s in later
                                                                  if not expected(s, True)]

        # 2. break the file: logged with file and line, previous rules kept
        broken_at = time.monotonic()
        write_atomically(rule_file, RULES_BROKEN)
        wanted = f"{rule_file}:{BROKEN_LINE}"
        deadline = broken_at + 30
        while not daemon.log_lines("event=reload-failed") and time.monotonic() < deadline:
            time.sleep(0.1)
        failed = daemon.log_lines("event=reload-failed")
        assert any(wanted in line and "reload-body" in line for line in failed), failed
        n_broken = len(load.snapshot())
        load.wait_for(n_broken + 15)
        after_break = [s for s in load.snapshot() if s.started > broken_at]
        assert {"clean", "old", "new"} <= {s.kind for s in after_break}
        assert all(expected(s, new_active=True) for s in after_break), \
            [s for s in after_break if not expected(s, True)]

    results = load.snapshot()
    # No transaction on any connection was dropped or tempfailed, ever.
    bad = [s for s in results if s.code < 0 or 400 <= s.code < 500]
    assert bad == [], bad[:5] + [diag()]
    assert daemon.alive()
    assert sum(1 for s in results if s.conn == "long") >= 10

    check = subprocess.run([sys.executable, "-m", "milterguard", "check", "-c", daemon.config],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(
                               os.path.dirname(os.path.abspath(__file__))))})
    assert check.returncode == 1, check.stdout + check.stderr
    assert wanted in check.stdout and "reload-body" in check.stdout
