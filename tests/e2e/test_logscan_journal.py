"""logscan reads the systemd journal: real journal files, real journalctl.

The test writes journal files with systemd-journal-remote (systemd's own
journal writer, fed entries in the journal export format: Postfix rejects
under their SYSLOG_IDENTIFIER, kernel firewall lines on the kernel
transport, and noise that must not count), then runs `milterguard logscan
--journal-directory` and checks the hits; a second batch appended to the
journal is read on the next run, and only it. A missing log file next to
the journal is an error for that file alone.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from tests import REPO_ROOT as REPO
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT_ID = "0123456789abcdef0123456789abcdef"

FIRST = [
    ("syslog", "postfix/smtpd",
     "NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 554 5.7.1 <u@example.com>: Relay access "
     "denied; from=<a@example.org> to=<u@example.com> proto=ESMTP helo=<h.example.net>"),
    ("kernel", "kernel",
     "milterguard-probe: IN=eth0 OUT= MAC= SRC=198.51.100.4 DST=192.0.2.1 LEN=60 PROTO=TCP "
     "SPT=40000 DPT=23 WINDOW=64240 SYN"),
    # Not evidence: another program, a harmless Postfix line, kernel noise.
    ("syslog", "sshd", "NOQUEUE: reject: RCPT from unknown[203.0.113.1]: 554 5.7.1 fake"),
    ("syslog", "postfix/smtpd", "connect from unknown[192.0.2.50]"),
    ("kernel", "kernel", "e1000: eth0 NIC Link is Up 1000 Mbps Full Duplex"),
]
SECOND = [
    ("syslog", "postfix/postscreen", "PREGREET 11 after 0.1 from [203.0.113.66]:4711: EHLO x\\r\\n"),
    ("syslog", "postfix/smtpd", "warning: unknown[192.0.2.77]: SASL LOGIN authentication failed: "
     "UGFzc3dvcmQ6"),
]


def write_journal(directory: str, entries: list[tuple[str, str, str]], start_us: int) -> None:
    """Append ``entries`` to DIR/remote.journal through systemd-journal-remote."""
    blocks = []
    for i, (transport, ident, message) in enumerate(entries):
        blocks.append("".join(f"{k}={v}\n" for k, v in (
            ("__REALTIME_TIMESTAMP", start_us + i), ("__MONOTONIC_TIMESTAMP", start_us + i),
            ("_BOOT_ID", BOOT_ID), ("_TRANSPORT", transport), ("SYSLOG_IDENTIFIER", ident),
            ("_HOSTNAME", "mx.example.net"), ("PRIORITY", "6"), ("MESSAGE", message))))
    proc = subprocess.run([JOURNAL_REMOTE, f"--output={directory}/remote.journal", "-"],
                          input="\n".join(blocks) + "\n", text=True, capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def logscan(state: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "milterguard", "logscan", "--state-dir", state,
                           *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def hits(state: str) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(os.path.join(state, "milterguard.db"))
    try:
        return conn.execute("SELECT rule_id, category, client_addr FROM hits"
                            " WHERE source = 'logscan' ORDER BY ts").fetchall()
    finally:
        conn.close()


@pytest.fixture
def journal_dir(tmp_path) -> str:
    if not os.path.exists(JOURNAL_REMOTE):
        pytest.fail(f"{JOURNAL_REMOTE} missing: install systemd-journal-remote "
                    "(scripts/install-deps.sh test)")
    path = tmp_path / "journal"
    path.mkdir()
    return str(path)


def test_journal_rejects_and_probes_become_hits_incrementally(journal_dir, tmp_path):
    state = str(tmp_path / "state")
    now_us = int(time.time() * 1e6)
    write_journal(journal_dir, FIRST, now_us - 60_000_000)

    first = logscan(state, "--journal-directory", journal_dir)
    assert first.returncode == 0, first.stderr
    assert f"log=journal:{journal_dir} entries=" in first.stdout
    assert hits(state) == [("postfix.relay", "relay", "192.0.2.9"),
                           ("firewall.probe", "probe", "198.51.100.4")]

    write_journal(journal_dir, SECOND, now_us)
    second = logscan(state, "--journal-directory", journal_dir)
    assert second.returncode == 0, second.stderr
    assert f"log=journal:{journal_dir} entries=2 hits=2" in second.stdout
    assert hits(state)[2:] == [("postscreen.pregreet", "postscreen", "203.0.113.66"),
                               ("postfix.sasl_failed", "sasl", "192.0.2.77")]

    # Nothing new: nothing read, nothing recorded twice.
    third = logscan(state, "--journal-directory", journal_dir)
    assert "entries=0 hits=0" in third.stdout and len(hits(state)) == 4


def test_missing_log_file_fails_alone(journal_dir, tmp_path):
    """The journal next to a log file that does not exist is still read."""
    state = str(tmp_path / "state")
    write_journal(journal_dir, FIRST, int(time.time() * 1e6))
    site = tmp_path / "site.yaml"
    missing = tmp_path / "mail.log"
    site.write_text(f"logscan:\n  files: [{missing}]\n  journal:\n    directory: {journal_dir}\n")
    proc = logscan(state, "-c", str(site))
    assert proc.returncode == 1
    assert f"logscan: {missing}: cannot read: No such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(hits(state)) == 2


def test_unreadable_journal_is_an_error_for_that_source(tmp_path):
    state = str(tmp_path / "state")
    log = tmp_path / "mail.log"
    log.write_text("Jan  5 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from "
                   "unknown[192.0.2.9]: 554 5.7.1 <u@example.com>: Relay access denied; "
                   "from=<a@example.org> to=<u@example.com> proto=ESMTP helo=<h.example>\n")
    proc = logscan(state, "--log", str(log), "--journal-directory", str(tmp_path / "absent"))
    assert proc.returncode == 1
    assert f"logscan: journal:{tmp_path}/absent: journalctl failed:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert hits(state) == [("postfix.relay", "relay", "192.0.2.9")]
