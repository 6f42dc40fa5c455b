"""Issue 12 findings 1 and 8 through a real Postfix: smtplib -> smtpd -> daemon.

Before the fix, GTUBE in a ``charset=punycode`` body and a Subject with a
``=?punycode?Q?...?=`` word followed by a spam phrase were both queued (250):
the codec's bare UnicodeError stopped the MIME walk, or became an internal
error that the default ``continue`` delivered. MIME nested past the limit
was delivered without a trace.
"""

from __future__ import annotations

import smtplib

import pytest

from tests.e2e.postfix import milter_params

# The shipped rule set: its gtube and pharmacy-subject rules are the ones
# the bypasses went past.
CONFIG = """\
rules: {shipped: true, site: [], reload_interval: 0}
allowlist: {networks: []}
envelope: {reject_unknown_sender_domain: false, reject_null_mx: false}
helo: {reject_unknown: false}
message:
  scan_actions: {structure: reject}
"""

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HEAD = ("From: Alice <alice@example.com>\r\nTo: bob@example.org\r\n"
        "Date: Tue, 04 Mar 2025 10:15:00 +0100\r\nMessage-ID: <scan-{n}@example.com>\r\n")


def send_raw(port: int, raw: str) -> tuple[int, str]:
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.net",
                          timeout=60) as smtp:
            smtp.ehlo()
            smtp.mail("alice@example.com")
            smtp.rcpt("bob@example.org")
            code, text = smtp.data(raw.encode("utf-8"))
            return code, text.decode()
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error.decode(errors="replace")


def nested(depth: int) -> str:
    body = "Content-Type: text/plain\r\n\r\nbelow the nesting limit\r\n"
    for level in range(depth):
        body = (f"Content-Type: multipart/mixed; boundary=l{level}\r\n\r\n--l{level}\r\n"
                + body + f"\r\n--l{level}--\r\n")
    return body


@pytest.fixture
def stack(milterguard_factory, postfix_factory):
    daemon = milterguard_factory(CONFIG, kind="unix")
    postfix = postfix_factory(milter_params([daemon.spec], default_action="tempfail"))
    return daemon, postfix


def test_charset_bypasses_are_closed_through_postfix(stack) -> None:
    daemon, postfix = stack

    def diag() -> str:
        return f"\n--- maillog:\n{postfix.log_text()[-2000:]}\n--- daemon:\n{daemon.log_text()[-2000:]}"

    code, text = send_raw(postfix.port, HEAD.format(n=1) + "Subject: test\r\nMIME-Version: 1.0\r\n"
                          "Content-Type: text/plain; charset=punycode\r\n\r\n" + GTUBE + "\r\n")
    assert code == 554 and "GTUBE" in text, text + diag()

    code, text = send_raw(postfix.port, HEAD.format(n=2)
                          + "Subject: =?punycode?Q?a_b?= Buy viagra online pharmacy\r\n\r\nhello\r\n")
    assert code == 550 and "pharmacy" in text, text + diag()

    # A decoding failure is a finding on the message's log line, also when
    # the message is delivered.
    code, text = send_raw(postfix.port, HEAD.format(n=4)
                          + "Subject: =?undefined?Q?minutes?= of the meeting\r\n\r\nhello\r\n")
    assert code == 250, text + diag()
    lines = daemon.log_lines("scan:decode")
    assert len(lines) == 2 and "action=reject" in lines[0] and "action=accept" in lines[1], diag()

    # MIME nested past max_depth: the configured action (reject here).
    code, text = send_raw(postfix.port, HEAD.format(n=3) + "Subject: deep\r\nMIME-Version: 1.0\r\n"
                          + nested(12))
    assert code == 550 and "could not be scanned" in text, text + diag()
    assert daemon.log_lines("scan:structure"), diag()
    assert postfix.wait_discarded(1) == 1, "a refused message was delivered"
