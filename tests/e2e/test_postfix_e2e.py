"""End to end through a real Postfix: smtplib -> smtpd -> milterguard daemon.

What the admin sees: the SMTP reply codes for clean mail, a refused Subject
and a refused body phrase, Postfix's 4xx when the daemon is down
(milter_default_action = tempfail), and one key=value log line per message.
Both socket kinds, since they behave differently (HACKING.md, "What the code relies on", 1).
"""

from __future__ import annotations

import os
import re
import smtplib
from email.message import EmailMessage

import pytest

from tests.e2e.postfix import PostfixInstance, milter_params

SITE_RULES = """\
rules:
  - id: test-subject
    target: header:Subject
    phrases: ["limited time offer"]
    action: reject
    reply: "550 5.7.1 Subject refused by test rule"
    category: header-phrase
  - id: test-body
    target: body
    phrases: ["wire the funds"]
    action: reject
    reply: "554 5.7.1 Body refused by test rule"
    category: body-phrase
"""

#: Usable from 127.0.0.1 without DNS: loopback is not allowlisted (the
#: defaults skip all checks for it) and the DNS-asking gates are off.
CONFIG_TEMPLATE = """\
rules:
  shipped: false
  site: [{rules_dir}]
  reload_interval: 0
allowlist:
  networks: []
envelope:
  reject_unknown_sender_domain: false
  reject_null_mx: false
  reject_unknown_recipient_domain: false
helo:
  reject_unknown: false
"""

SENDER = "alice@example.com"
RCPT = "bob@example.org"
HELO = "client.example.net"


def make_message(subject: str, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Alice <{SENDER}>"
    msg["To"] = f"Bob <{RCPT}>"
    msg["Subject"] = subject
    msg["Date"] = "Tue, 04 Mar 2025 10:15:00 +0100"
    msg["Message-ID"] = "<e2e-test.1@example.com>"
    msg.set_content(body)
    return msg.as_bytes()


def send(port: int, subject: str, body: str) -> tuple[int, str]:
    """Send one message; the final SMTP code and text, whatever stage said it."""
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname=HELO, timeout=60) as smtp:
            smtp.ehlo()
            code, text = smtp.mail(SENDER)
            if code >= 400:
                return code, text.decode()
            code, text = smtp.rcpt(RCPT)
            if code >= 400:
                return code, text.decode()
            code, text = smtp.data(make_message(subject, body))
            return code, text.decode()
    except smtplib.SMTPResponseException as exc:  # e.g. 421 at connect
        return exc.smtp_code, exc.smtp_error.decode(errors="replace")


def queue_id_from_reply(text: str) -> str:
    match = re.search(r"queued as ([0-9A-Za-z]+)", text)
    assert match, f"no queue id in {text!r}"
    return match.group(1)


def rejected_queue_id(postfix: PostfixInstance, needle: str) -> str:
    lines = postfix.wait_log(re.escape(needle))
    assert lines, f"no milter-reject with {needle!r} in maillog:\n{postfix.log_text()[-2000:]}"
    match = re.search(r": ([0-9A-F]+): milter-reject:", lines[-1])
    assert match, lines[-1]
    return match.group(1)


def one_log_line(daemon, queue_id: str) -> str:
    lines = daemon.log_lines(f"queue_id={queue_id} ")
    assert len(lines) == 1, (f"expected one log line for {queue_id}, got {lines}\n"
                             f"{daemon.log_text()[-2000:]}")
    # key=value throughout: every field after the logger prefix parses.
    fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', lines[0]))
    for key in ("queue_id", "client", "from", "rcpt", "action"):
        assert key in fields, f"{key}= missing in {lines[0]}"
    return lines[0]


def write_site_config(e2e_dir: str) -> str:
    """The site rules in ``e2e_dir``, and the config text that loads them
    (also the daemon trust tests' configuration)."""
    rules_dir = os.path.join(e2e_dir, "rules.d")
    os.makedirs(rules_dir)
    with open(os.path.join(rules_dir, "test.yaml"), "w", encoding="utf-8") as fh:
        fh.write(SITE_RULES)
    return CONFIG_TEMPLATE.format(rules_dir=rules_dir)


@pytest.fixture
def site_config(e2e_dir: str) -> str:
    return write_site_config(e2e_dir)


def test_private_postfix_delivers_to_discard(postfix: PostfixInstance) -> None:
    code, text = send(postfix.port, "Hello", "Just a note.")
    assert code == 250, text
    assert postfix.wait_discarded(1) == 1
    # It runs from its own config directory, never /etc/postfix.
    assert postfix.log_lines(r"daemon started .* configuration "
                             + re.escape(postfix.config_dir) + "$")
    assert postfix.master_pid() in postfix.own_pids()
    postfix.stop()
    assert postfix.own_pids() == []


@pytest.mark.parametrize("kind", ["unix", "inet"])
def test_milterguard_through_real_postfix(kind, site_config, milterguard_factory,
                                          postfix_factory) -> None:
    daemon = milterguard_factory(site_config, kind=kind)
    postfix = postfix_factory(milter_params([daemon.spec], default_action="tempfail"))

    def diag() -> str:
        return (f"\n--- maillog:\n{postfix.log_text()[-2500:]}"
                f"\n--- daemon:\n{daemon.log_text()[-2500:]}")

    # Clean mail is accepted, and the daemon logs it once.
    code, text = send(postfix.port, "Minutes of the planning meeting",
                      "Notes from this morning are attached below.")
    assert code == 250, text + diag()
    line = one_log_line(daemon, queue_id_from_reply(text))
    assert "action=accept" in line
    assert postfix.wait_discarded(1) == 1

    # A phrase in the Subject: the rule's own reply.
    code, text = send(postfix.port, "A Limited Time Offer for you", "Nothing special here.")
    assert code == 550, text + diag()
    assert "Subject refused by test rule" in text
    line = one_log_line(daemon, rejected_queue_id(postfix, "Subject refused by test rule"))
    assert "test-subject" in line and "action=reject" in line

    # A phrase in the body.
    code, text = send(postfix.port, "Business proposal",
                      "Dear friend,\nplease wire the funds to the account below.\n")
    assert code == 554, text + diag()
    assert "Body refused by test rule" in text
    line = one_log_line(daemon, rejected_queue_id(postfix, "Body refused by test rule"))
    assert "test-body" in line and "action=reject" in line

    assert postfix.count_discarded() == 1, "a refused message was delivered"

    # The daemon is down: Postfix tempfails (milter_default_action).
    daemon.stop()
    code, text = send(postfix.port, "Minutes of the planning meeting", "Clean again.")
    assert 400 <= code < 500, (code, text)
    assert postfix.count_discarded() == 1


def test_socket_written_as_in_main_cf(site_config, milterguard_factory,
                                      postfix_factory) -> None:
    """`run --socket` takes the smtpd_milters value as it is (Postfix's
    inet:HOST:PORT) and hands libmilter its own syntax."""
    daemon = milterguard_factory(site_config, kind="postfix-inet")
    assert daemon.spec.startswith("inet:127.0.0.1:")
    postfix = postfix_factory({"smtpd_milters": daemon.spec, "milter_default_action": "tempfail",
                               "milter_protocol": "6"})
    code, text = send(postfix.port, "Minutes of the planning meeting", "Notes attached.")
    assert code == 250, text + f"\n--- daemon:\n{daemon.log_text()[-2000:]}"
    assert "action=accept" in one_log_line(daemon, queue_id_from_reply(text))
    port = daemon.spec.rsplit(":", 1)[1]
    assert daemon.log_lines(f"event=start socket=inet:{port}@127.0.0.1 ")


@pytest.mark.parametrize("kind", ["unix", "inet", "postfix-inet"])
def test_no_reply_stages_only_on_unix_sockets(kind, site_config,
                                              milterguard_factory) -> None:
    """DATA, header and body (and connect and HELO, whose rejects wait for
    the first RCPT) are negotiated as no-reply on a unix socket (a round trip
    less per header) and answered on TCP (pitfall 3)."""
    from milterguard.milter import protocol as mp
    from milterguard.replay.client import MilterClient
    from milterguard.socketspec import connect

    daemon = milterguard_factory(site_config, kind=kind)
    sock = connect(daemon.spec, 5.0)
    try:
        neg = MilterClient(sock).negotiate()
    finally:
        sock.close()
    quiet = [stage for stage in ("connect", "helo", "mail", "rcpt", "data", "header",
                                 "eoh", "body") if not neg.expects_reply(stage)]
    assert quiet == (["connect", "helo", "data", "header", "body"] if kind == "unix" else [])
    assert not neg.protocol & (mp.P_NOHDRS | mp.P_NOBODY | mp.P_NODATA)
