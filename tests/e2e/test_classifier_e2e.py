"""The classifier end to end: `milterguard learn` fills the database, the
daemon loads it, and real Postfix gets the band's answer: learned spam is
rejected with the band's id, learned ham is delivered."""

from __future__ import annotations

import smtplib
import subprocess
import sys
import time

from tests.classifier_mail import make_message, write_messages
from tests.e2e.postfix import milter_params

RCPT = "user@example.com"


def send(port: int, raw: bytes, sender: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("client.example.org")
        assert smtp.mail(sender)[0] == 250
        assert smtp.rcpt(RCPT)[0] == 250
        code, text = smtp.data(raw)
        return code, text.decode()


def test_learned_spam_rejected_and_ham_delivered(tmp_path, milterguard_factory,
                                                 postfix_factory):
    database = tmp_path / "learned.db"
    config = tmp_path / "mg.yaml"
    config.write_text(f"""\
database: {database}
envelope: {{reject_unknown_sender_domain: false, reject_null_mx: false}}
helo: {{reject_unknown: false}}
classifier: {{min_spam: 20, min_ham: 20, refresh_interval: 0.2}}
""")
    write_messages(tmp_path / "spam", "spam", 30)
    write_messages(tmp_path / "ham", "ham", 30)
    learned = subprocess.run(
        [sys.executable, "-m", "milterguard", "learn", "-c", str(config), "--state-dir",
         str(tmp_path / "cli-state"), "--spam", str(tmp_path / "spam"),
         "--ham", str(tmp_path / "ham")], capture_output=True, text=True, timeout=120)
    assert learned.returncode == 0, learned.stderr
    assert "learned 30 spam and 30 ham" in learned.stdout

    daemon = milterguard_factory(config_path=str(config))
    deadline = time.monotonic() + 30
    while not daemon.log_lines("event=classifier-ready") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemon.log_lines("event=classifier-ready"), daemon.log_text()
    mta = postfix_factory(milter_params([daemon.spec]))

    code, text = send(mta.port, make_message("spam", 700).replace(b"\r\n", b"\n"),
                      "promo700@example.net")
    assert code == 550, text
    assert "[bayes-spam-certain]" in text
    code, text = send(mta.port, make_message("ham", 700).replace(b"\r\n", b"\n"),
                      "colleague@example.org")
    assert code == 250, text
    assert mta.wait_discarded(1) == 1
    # One key=value line per message, the band's id among the rules.
    assert any("action=reject" in line for line in daemon.log_lines("bayes-spam-certain"))
    assert any("action=accept" in line for line in daemon.log_lines("bayes-ham-certain"))
