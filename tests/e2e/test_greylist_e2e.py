"""Greylisting end to end through a real, private Postfix.

Twice: once with `milterguard run` as the milter (451 at RCPT), once with
`milterguard policyd` behind `check_policy_service` (450, Postfix's
DEFER_IF_PERMIT code). Each shows the first attempt refused and the retry
after the (shortened, 3 s) delay accepted and delivered. XCLIENT makes the
client 192.0.2.7, so neither the loopback allowlist nor mynetworks applies.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import pytest

from tests.e2e.postfix import (MilterProcess, PostfixInstance, free_port, milter_params,
                               milterguard_argv, xclient_transaction)

DELAY = 3
SENDER = "news@example.org"
RCPT = "alice@example.com"
MESSAGE = (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: minutes\r\n"
           "Message-ID: <minutes-1@example.org>\r\nDate: Tue, 02 Jan 2024 10:00:00 +0000\r\n"
           "\r\nHello Alice, the minutes of Tuesday's meeting follow next week.\r\n")


def write_config(base: str) -> str:
    path = os.path.join(base, "milterguard.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("greylist:\n"
                 "  enabled: true\n"
                 f"  delay: {DELAY}\n"
                 "  retry_window: 1h\n"
                 # The test client's DNS names do not resolve here (no
                 # network): keep the DNS-based gates out of this test.
                 "envelope:\n  exceptions:\n    networks: [192.0.2.0/24]\n"
                 "helo:\n  exceptions:\n    networks: [192.0.2.0/24]\n")
    return path


def attempt(port: int) -> tuple[int, str]:
    """One SMTP transaction from 192.0.2.7; the RCPT reply, and 250 if DATA went through."""
    return xclient_transaction(port, "192.0.2.7", SENDER, RCPT, MESSAGE.encode())


def greylist_then_accept(postfix: PostfixInstance, refused_code: int) -> None:
    started = time.monotonic()
    code, text = attempt(postfix.port)
    assert code == refused_code, text
    assert "4.7.1" in text and f"Greylisted, please retry in {DELAY} seconds" in text
    code, text = attempt(postfix.port)          # early retry
    if time.monotonic() - started < DELAY:
        # Only provably early on a loaded machine: both decisions fell
        # inside this interval.
        assert code == refused_code, text
    time.sleep(DELAY + 0.5)
    code, text = attempt(postfix.port)
    assert code == 250, text
    assert postfix.wait_discarded(1) == 1


@pytest.fixture
def base_dir():
    # smtpd runs as user postfix and must reach the milter socket below
    # here; pytest's tmp_path sits under a directory only root may enter.
    path = tempfile.mkdtemp(prefix="mg-greylist-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_policyd_behind_check_policy_service(base_dir):
    state = os.path.join(base_dir, "state")
    port = free_port()
    policyd = MilterProcess(
        [sys.executable, "-m", "milterguard", "policyd", "--listen", f"127.0.0.1:{port}",
         "-c", write_config(base_dir), "--state-dir", state],
        f"inet:127.0.0.1:{port}", os.path.join(base_dir, "policyd.log"))
    postfix = PostfixInstance({
        "smtpd_recipient_restrictions":
            f"check_policy_service inet:127.0.0.1:{port}, permit",
    })
    try:
        policyd.start()
        postfix.start()
        try:
            greylist_then_accept(postfix, 450)
        finally:
            print("--- maillog\n" + postfix.log_text()[-3000:])
            print("--- policyd\n" + policyd.log_text()[-3000:])
        log = policyd.log_text()
        assert "greylist=new net=192.0.2.0/24" in log
        assert "greylist=passed net=192.0.2.0/24" in log
    finally:
        postfix.cleanup()
        rc = policyd.stop()
    assert rc == 0, policyd.log_text()[-2000:]


def test_milter_greylists_at_rcpt(base_dir):
    state = os.path.join(base_dir, "state")
    os.makedirs(state, mode=0o755)
    spec = f"unix:{base_dir}/milterguard.sock"
    milter = MilterProcess(milterguard_argv(write_config(base_dir), spec, state),
                           spec, os.path.join(base_dir, "milter.log"))
    postfix = PostfixInstance(milter_params([spec]))
    try:
        milter.start()
        postfix.start()
        try:
            greylist_then_accept(postfix, 451)
        finally:
            print("--- maillog\n" + postfix.log_text()[-3000:])
            print("--- milter\n" + milter.log_text()[-3000:])
        assert postfix.log_lines(r"milter-reject: RCPT from .*451 4\.7\.1 Greylisted")
    finally:
        postfix.cleanup()
        milter.stop()
