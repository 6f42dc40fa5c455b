"""The documented Postfix wiring works with a chrooted smtpd (Debian's
master.cf default) and with a non-chrooted one, over unix and inet.

The main.cf settings come from packaging/postfix-main.cf.snippet as they
are written there (the README shows the same file), and the daemon listens
at its built-in default socket, moved from /var/spool/postfix into the
private instance's queue directory. Verdicts must come back (250 for clean
mail, the rule's 550 for spam), never Postfix's 451 for an unreachable
milter.
"""

from __future__ import annotations

import os
import re
import smtplib
from email.message import EmailMessage

import pytest

from tests import REPO_ROOT as REPO
from tests.e2e.postfix import PostfixInstance, free_port, postfix_milter_spec
from tests.e2e.test_postfix_e2e import CONFIG_TEMPLATE

SNIPPET = os.path.join(REPO, "packaging", "postfix-main.cf.snippet")
SYSTEM_QUEUE_DIR = "/var/spool/postfix"

RULES = """\
rules:
  - id: chroot-test-subject
    target: header:Subject
    phrases: ["cheap watches"]
    action: reject
    reply: "550 5.7.1 Refused by chroot test rule"
"""


def snippet_settings() -> dict[str, str]:
    """The snippet's active (uncommented) main.cf lines."""
    settings = {}
    with open(SNIPPET, encoding="utf-8") as fh:
        for line in fh:
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                settings[key.strip()] = value.strip()
    return settings


def commented_inet_milter() -> str:
    with open(SNIPPET, encoding="utf-8") as fh:
        found = re.findall(r"^#smtpd_milters = (inet:\S+)$", fh.read(), re.M)
    assert len(found) == 1, "the snippet should show one TCP alternative"
    return found[0]


def default_socket() -> str:
    from milterguard.config import load_config
    return load_config(None, "/nonexistent-state").socket


def send(port: int, subject: str) -> tuple[int, str]:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = "<chroot.1@example.com>"
    msg["Date"] = "Tue, 04 Mar 2025 10:15:00 +0100"
    msg.set_content("Hello.")
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.net",
                          timeout=60) as smtp:
            smtp.ehlo()
            for code, text in (smtp.mail("alice@example.com"), smtp.rcpt("bob@example.org")):
                if code >= 400:
                    return code, text.decode()
            code, text = smtp.data(msg.as_bytes())
            return code, text.decode()
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error.decode(errors="replace")


def session_smtpd_pids(instance: PostfixInstance) -> set[int]:
    """smtpd processes that served a session and still run (an smtpd waits
    for the next one). Only those: a freshly forked smtpd has not yet
    entered its chroot."""
    logged = {int(pid) for pid in re.findall(r"/smtpd\[(\d+)\]: connect from", instance.log_text())}
    return logged & set(instance.own_pids())


@pytest.mark.parametrize("chroot,kind", [(True, "unix"), (False, "unix"), (True, "inet")],
                         ids=["chrooted-unix", "plain-unix", "chrooted-inet"])
def test_documented_wiring_gets_verdicts(chroot, kind, e2e_dir, milterguard_factory):
    rules = os.path.join(e2e_dir, "rules.d")
    os.makedirs(rules)
    with open(os.path.join(rules, "t.yaml"), "w", encoding="utf-8") as fh:
        fh.write(RULES)
    params = snippet_settings()
    instance = PostfixInstance(None, base_dir=os.path.join(e2e_dir, "pf"), chroot_smtpd=chroot)
    if kind == "unix":
        # The built-in default socket, in this instance's queue directory.
        spec = default_socket()
        assert spec.startswith(f"unix:{SYSTEM_QUEUE_DIR}/"), spec
        spec = spec.replace(SYSTEM_QUEUE_DIR, instance.queue_dir, 1)
    else:
        # The snippet's TCP line, on a free port.
        spec = f"inet:{free_port()}@127.0.0.1"
        assert commented_inet_milter().startswith("inet:127.0.0.1:")
        params["smtpd_milters"] = postfix_milter_spec(spec)
    instance.params.update(params)
    instance.configure()
    daemon = milterguard_factory(CONFIG_TEMPLATE.format(rules_dir=rules), spec=spec)
    try:
        instance.start()
        ok = send(instance.port, "Meeting notes")
        refused = send(instance.port, "Cheap watches for you")
        diag = (f"\n--- maillog:\n{instance.log_text()[-2500:]}"
                f"\n--- daemon:\n{daemon.log_text()[-1500:]}")
        assert ok[0] == 250, f"{ok}{diag}"
        assert refused[0] == 550, f"{refused}{diag}"
        assert refused[1].startswith("5.7.1 Refused by chroot test rule"), f"{refused}{diag}"
        assert not instance.log_lines(r"connect to Milter service|milter .* unavailable"), diag
        # The smtpd that answered (it stays for the next session) really
        # runs chrooted in the queue directory, or really does not.
        pids = session_smtpd_pids(instance)
        assert pids, diag
        roots = {os.readlink(f"/proc/{pid}/root") for pid in pids}
        assert roots == ({instance.queue_dir} if chroot else {"/"}), roots
    finally:
        instance.stop()
    assert "queue_id=" in daemon.log_text()


def test_chrooted_smtpd_cannot_reach_a_socket_outside_the_chroot(e2e_dir, milterguard_factory):
    """Why the socket lives below the queue directory: the old wiring
    (an absolute path elsewhere) gets Postfix's 451 for every message."""
    rules = os.path.join(e2e_dir, "rules.d")
    os.makedirs(rules)
    with open(os.path.join(rules, "t.yaml"), "w", encoding="utf-8") as fh:
        fh.write(RULES)
    spec = f"unix:{e2e_dir}/outside/milterguard.sock"
    params = snippet_settings()
    params["smtpd_milters"] = spec
    instance = PostfixInstance(params, base_dir=os.path.join(e2e_dir, "pf"), chroot_smtpd=True)
    instance.configure()
    milterguard_factory(CONFIG_TEMPLATE.format(rules_dir=rules), spec=spec)
    try:
        instance.start()
        code, text = send(instance.port, "Meeting notes")
        assert (code, text[:5]) == (451, "4.7.1"), (code, text)
        assert instance.wait_log(r"connect to Milter service unix:.*No such file or directory")
    finally:
        instance.stop()
