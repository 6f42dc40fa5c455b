"""journalscan: journal entries -> hits; which journalctl command a source runs."""

from __future__ import annotations

import pytest

from milterguard.config import load_config
from milterguard.errors import ConfigError
from milterguard.store.journalscan import JournalSource, entry_hit


def test_entry_hit_reads_identifier_transport_time_and_byte_messages():
    reject = entry_hit({
        "SYSLOG_IDENTIFIER": "postfix/smtpd", "_TRANSPORT": "syslog",
        "__REALTIME_TIMESTAMP": "1700000000250000",
        "MESSAGE": "NOQUEUE: reject: RCPT from x.example[192.0.2.3]: 450 4.7.1 <h>: Helo command "
                   "rejected: Host not found; from=<a@example.org> to=<b@example.com> proto=SMTP "
                   "helo=<h>"})
    assert (reject.rule_id, reject.client_addr, reject.ts) == ("postfix.helo", "192.0.2.3",
                                                               1700000000.25)
    # journald stores a message that is not UTF-8 as a list of byte values.
    raw = "milterguard-probe: SRC=198.51.100.8 DST=192.0.2.1 PROTO=UDP DPT=161 \xff".encode("latin-1")
    probe = entry_hit({"_TRANSPORT": "kernel", "__REALTIME_TIMESTAMP": "1",
                       "MESSAGE": list(raw)})
    assert (probe.rule_id, probe.client_addr, probe.detail) == (
        "firewall.probe", "198.51.100.8", "probe UDP port 161")
    # A kernel-looking message from a user program is not the kernel.
    assert entry_hit({"SYSLOG_IDENTIFIER": "logger", "_TRANSPORT": "syslog",
                      "MESSAGE": raw.decode("latin-1")}) is None


def test_source_argv_matches_identifiers_or_kernel():
    source = JournalSource(("postfix/smtpd", "postfix/postscreen"), True, "/j", "-2h")
    assert source.argv(None) == [
        "journalctl", "--output=json", "--quiet", "--no-pager", "--directory=/j", "--since=-2h",
        "SYSLOG_IDENTIFIER=postfix/smtpd", "SYSLOG_IDENTIFIER=postfix/postscreen",
        "+", "_TRANSPORT=kernel"]
    assert "--after-cursor=s=1;i=2" in source.argv("s=1;i=2")
    assert JournalSource(("postfix/smtpd",), False).argv(None)[-1] == "SYSLOG_IDENTIFIER=postfix/smtpd"
    assert JournalSource(("postfix/smtpd",), False).key == "journal"
    assert source.key == "journal:/j"


def test_source_from_config_defaults_and_errors(tmp_path):
    default = JournalSource.from_config(load_config(None).section("logscan")["journal"])
    assert default.first_since == "-1d" and default.kernel and default.directory == ""
    assert "postfix/postscreen" in default.identifiers
    site = tmp_path / "site.yaml"
    site.write_text("logscan:\n  journal:\n    identifiers: []\n    kernel: false\n")
    with pytest.raises(ConfigError) as info:
        JournalSource.from_config(load_config(str(site)).section("logscan")["journal"])
    assert f"{site}:3" in str(info.value) and "reads nothing" in str(info.value)
