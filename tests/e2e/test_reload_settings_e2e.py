"""Issue 12 finding 7 through a real Postfix: a reload applies changed gate
settings, and refuses (logged) what only a restart can apply.

Before, the daemon logged "event=reload" after a HELO setting changed and
went on with the old one until a restart.
"""

from __future__ import annotations

import os
import re
import smtplib
import time

from tests.e2e.postfix import milter_params

CONFIG = """\
rules: {{shipped: false, site: [], reload_interval: 0.2}}
allowlist: {{networks: []}}
envelope: {{reject_unknown_sender_domain: false, reject_null_mx: false}}
helo: {{reject_unknown: false, reject_non_fqdn: {non_fqdn}}}
"""


def transaction(port: int, helo: str) -> int:
    """One message from 192.0.2.7 with HELO ``helo``; the first refusal or DATA's code."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("relay.example.net")
        code, _ = smtp.docmd("XCLIENT", f"ADDR=192.0.2.7 NAME=mail.example.org HELO={helo}")
        assert code == 220
        smtp.ehlo(helo)
        for command in (lambda: smtp.mail("alice@example.com"),
                        lambda: smtp.rcpt("bob@example.org")):
            code, _ = command()
            if code != 250:
                return code
        code, _ = smtp.data(b"Subject: hi\r\nMessage-ID: <r@example.com>\r\n\r\nhello\r\n")
        return code


def edit(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    st = os.stat(path)   # a newer mtime even within the same clock tick
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def wait_line(daemon, pattern: str, count: int = 1, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for ln in daemon.log_text().splitlines() if re.search(pattern, ln)]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_reload_applies_helo_settings_and_refuses_restart_only_changes(
        e2e_dir, milterguard_factory, postfix_factory) -> None:
    path = os.path.join(e2e_dir, "mg.yaml")
    edit(path, CONFIG.format(non_fqdn="true"))
    daemon = milterguard_factory(config_path=path, kind="unix")
    postfix = postfix_factory(milter_params([daemon.spec], default_action="tempfail"))
    assert transaction(postfix.port, "localhost") == 504

    edit(path, CONFIG.format(non_fqdn="false"))
    lines = wait_line(daemon, r"event=reload .*applied=.*gates")
    assert lines, daemon.log_text()[-2000:]
    assert transaction(postfix.port, "localhost") == 250

    # A misspelt key and a restart-only change: refused, said so, nothing changes.
    edit(path, CONFIG.format(non_fqdn="true") + "greylist: {enabeld: true}\n")
    assert wait_line(daemon, r"event=reload-failed .*did you mean 'enabled'"), \
        daemon.log_text()[-2000:]
    edit(path, CONFIG.format(non_fqdn="true") + "store: {queue_size: 10}\n")
    assert wait_line(daemon, r"event=reload-failed .*store changed: restart"), \
        daemon.log_text()[-2000:]
    assert transaction(postfix.port, "localhost") == 250
    assert len(wait_line(daemon, r"event=reload ", timeout=0)) == 1
