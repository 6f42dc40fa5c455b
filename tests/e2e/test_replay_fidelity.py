"""Issue 12 finding 10: replay gives the daemon what real Postfix gives it.

The same messages go to one milterguard daemon twice: through a private
Postfix (XCLIENT sets the client and HELO the sample names), and through
``replay``. The daemon's own log line for each (action and rule ids) must
agree. Before the fix, a NUL byte in a header aborted the whole replay
batch with a ValueError, a header over 64 KB ended in "Broken pipe" (Postfix
passes it, cut), and samples/spam/08-no-headers-replica.eml was judged
without the Message-Id, Date and From that Postfix's cleanup adds.
"""

from __future__ import annotations

import os
import re
import smtplib

from milterguard.replay.conversation import ReplayResult
from milterguard.replay.files import replay_files
from milterguard.replay.message import parse_message
from tests.e2e.postfix import milter_params

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NO_HEADERS = os.path.join(REPO, "samples", "spam", "08-no-headers-replica.eml")

ENVELOPE = (b"X-Replay-Client: 203.0.113.44 unknown\n"
            b"X-Replay-Helo: mail.example.net\n"
            b"X-Replay-Mail-From: alice@example.com\n"
            b"X-Replay-Rcpt-To: bob@example.org\n")
HEAD = b"From: alice@example.com\nTo: bob@example.org\nDate: Tue, 04 Mar 2025 10:15:00 +0100\n"

#: Name -> message file content. The pharmacy phrase after the NUL is cut
#: off by Postfix; the one in the long header lies past 60000 bytes.
MESSAGES = {
    "nul-subject.eml": ENVELOPE + HEAD + b"Message-ID: <n1@example.com>\n"
                       b"Subject: hello\0 buy viagra online pharmacy\n\nplain words\n",
    "nul-body.eml": ENVELOPE + HEAD + b"Message-ID: <n2@example.com>\n"
                    b"Subject: note\n\nnul \0 in the body\n",
    "long-header.eml": ENVELOPE + HEAD + b"Message-ID: <n3@example.com>\n"
                       b"Subject: long\nX-Long: " + b"a" * 100000 + b" viagra\n\nwords\n",
    "long-folded.eml": ENVELOPE + HEAD + b"Message-ID: <n4@example.com>\n"
                       b"Subject: folded\nX-Fold: " + b"\n ".join([b"b" * 900] * 100)
                       + b"\n viagra online pharmacy\n\nwords\n",
}

DEMO_CONFIG = os.path.join(REPO, "samples", "demo.yaml")


def through_postfix(port: int, raw: bytes) -> str:
    """Send a replay file's message through Postfix with its envelope; the queue id."""
    msg = parse_message(raw)
    env = msg.envelope
    data = b"".join(name + b":" + value.replace(b"\n", b"\r\n") + b"\r\n"
                    for name, value in msg.headers) + b"\r\n" + msg.body
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("relay.example.net")
        name = "[UNAVAILABLE]" if env.client_name == "unknown" else env.client_name
        code, text = smtp.docmd("XCLIENT", f"ADDR={env.client_addr} NAME={name} HELO={env.helo}")
        assert code == 220, (code, text)
        smtp.ehlo(env.helo)
        smtp.mail(env.sender or "")
        for rcpt in env.recipients:
            smtp.rcpt(rcpt)
        try:
            code, text = smtp.data(data)
        except smtplib.SMTPResponseException as exc:
            code, text = exc.smtp_code, exc.smtp_error
    text = text.decode(errors="replace")
    match = re.search(r"queued as ([0-9A-F]+)", text)
    return match.group(1) if match else ""


def verdict_line(daemon, queue_id: str) -> tuple[str, list[str]]:
    """(action, sorted rule ids) from the daemon's log line of a message."""
    lines = daemon.log_lines(f"queue_id={queue_id} ")
    assert len(lines) == 1, (queue_id, daemon.log_text()[-3000:])
    action = re.search(r" action=(\S+)", lines[0]).group(1)
    rules = re.search(r' rules=("[^"]*"|\S+)', lines[0]).group(1).strip('"')
    return action, sorted(r for r in rules.split(",") if r != "-")


def test_replay_verdicts_equal_postfix_verdicts(e2e_dir, milterguard_factory,
                                                postfix_factory) -> None:
    daemon = milterguard_factory(config_path=DEMO_CONFIG, kind="unix")
    postfix = postfix_factory(milter_params([daemon.spec], default_action="tempfail"))
    files = []
    for name, raw in MESSAGES.items():
        path = os.path.join(e2e_dir, name)
        with open(path, "wb") as fh:
            fh.write(raw)
        files.append(path)
    files.append(NO_HEADERS)

    # The messages with all their headers: cleanup adds nothing, the
    # option changes nothing.
    plain: list[ReplayResult] = list(replay_files(daemon.spec, files[:-1]))
    results: list[ReplayResult] = list(replay_files(daemon.spec, files, add_missing_headers=True))
    assert [r.action for r in results + plain if r.action == "error"] == [], \
        [(r.file, r.reply) for r in results + plain]
    for with_option, without in zip(results, plain):
        assert verdict_line(daemon, with_option.queue_id) == verdict_line(daemon, without.queue_id)
    for path, result in zip(files, results):
        with open(path, "rb") as fh:
            raw = fh.read()
        rejects = len(postfix.log_lines("milter-reject"))
        queue_id = through_postfix(postfix.port, raw)
        if not queue_id:   # refused: the queue id is in Postfix's reject line
            line = postfix.wait_log("milter-reject", count=rejects + 1)[rejects]
            queue_id = re.search(r": ([0-9A-F]+): milter-reject", line).group(1)
        by_postfix = verdict_line(daemon, queue_id)
        by_replay = verdict_line(daemon, result.queue_id)
        assert by_replay == by_postfix, (os.path.basename(path), by_replay, by_postfix)
