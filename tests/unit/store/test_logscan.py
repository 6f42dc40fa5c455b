"""logscan: Postfix and kernel log lines -> hits; incremental, rotation, truncation."""

from __future__ import annotations

import datetime
import os

from milterguard.store.logscan import LOGSCAN_SCHEMA, LogScanner, parse_line
from milterguard.store import db
from milterguard.store.hits import HITS_SCHEMA

NOW = datetime.datetime(2024, 3, 10, 12, 0, 0).timestamp()

LINES = {
    "dnsbl": "Mar 10 11:59:01 mx postfix/smtpd[4101]: NOQUEUE: reject: RCPT from unknown[192.0.2.11]: "
             "554 5.7.1 Service unavailable; Client host [192.0.2.11] blocked using zen.dnsbl.example; "
             "from=<a@example.net> to=<b@example.com> proto=ESMTP helo=<host.example.net>",
    "helo": "Mar 10 11:59:02 mx postfix/smtpd[4102]: NOQUEUE: reject: RCPT from unknown[192.0.2.12]: "
            "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname; "
            "from=<a@example.net> to=<b@example.com> proto=SMTP helo=<localhost>",
    "sender": "Mar 10 11:59:03 mx postfix/smtpd[4103]: NOQUEUE: reject: RCPT from x.example.org[198.51.100.13]: "
              "450 4.1.8 <c@nx.example>: Sender address rejected: Domain not found; "
              "from=<c@nx.example> to=<b@example.com> proto=ESMTP helo=<x.example.org>",
    "relay": "Mar 10 11:59:04 mx postfix/smtpd[4104]: NOQUEUE: reject: RCPT from unknown[203.0.113.14]: "
             "454 4.7.1 <v@example.org>: Relay access denied; from=<s@example.net> to=<v@example.org> "
             "proto=ESMTP helo=<ylmf-pc>",
    "sasl": "Mar 10 11:59:05 mx postfix/submission/smtpd[4105]: warning: unknown[192.0.2.15]: "
            "SASL LOGIN authentication failed: UGFzc3dvcmQ6",
    "pregreet": "Mar 10 11:59:06 mx postfix/postscreen[4106]: PREGREET 11 after 0.07 from "
                "[198.51.100.16]:41234: EHLO ylmf-pc\\r\\n",
    "psdnsbl": "Mar 10 11:59:07 mx postfix/postscreen[4106]: DNSBL rank 3 for [198.51.100.17]:52111",
    "hangup": "Mar 10 11:59:08 mx postfix/postscreen[4106]: HANGUP after 0.4 from [2001:db8::18]:40000 "
              "in tests after SMTP handshake",
    "probe": "Mar 10 11:59:09 mx kernel: [123456.789012] milterguard-probe: IN=eth0 OUT= "
             "MAC=00:00:5e:00:53:01 SRC=203.0.113.19 DST=192.0.2.25 LEN=44 TOS=0x00 PREC=0x00 "
             "TTL=243 ID=54321 PROTO=TCP SPT=51000 DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0",
    "iso": "2024-03-10T11:59:10.123456+00:00 mx postfix/smtpd[4107]: 4F2B81C0A1: reject: "
           "END-OF-MESSAGE from unknown[192.0.2.20]: 550 5.7.1 Client host rejected: go away; "
           "from=<a@example.net> to=<b@example.com> proto=ESMTP helo=<h.example>",
}
NOISE = [
    "Mar 10 11:59:11 mx postfix/smtpd[4108]: connect from unknown[192.0.2.30]",
    "Mar 10 11:59:12 mx postfix/postscreen[4106]: PASS NEW [192.0.2.31]:4444",
    "Mar 10 11:59:13 mx kernel: [1.0] some-other-prefix: SRC=192.0.2.32 DST=192.0.2.25",
    "Mar 10 11:59:14 mx dovecot: imap-login: Login: user=<u>",
    "garbage",
]


def test_each_kind_of_line():
    got = {k: parse_line(v, NOW) for k, v in LINES.items()}
    assert got["dnsbl"].rule_id == "postfix.dnsbl:zen.dnsbl.example"
    assert (got["dnsbl"].category, got["dnsbl"].client_addr, got["dnsbl"].stage) == ("dnsbl", "192.0.2.11", "rcpt")
    assert got["dnsbl"].sender == "a@example.net" and got["dnsbl"].recipients == ("b@example.com",)
    assert got["dnsbl"].helo == "host.example.net" and got["dnsbl"].action.value == "reject"
    assert (got["helo"].category, got["helo"].helo) == ("helo", "localhost")
    assert got["sender"].category == "sender" and got["sender"].action.value == "tempfail"
    assert got["relay"].category == "relay" and got["relay"].client_addr == "203.0.113.14"
    assert (got["sasl"].category, got["sasl"].client_addr) == ("sasl", "192.0.2.15")
    assert got["pregreet"].rule_id == "postscreen.pregreet"
    assert got["psdnsbl"].client_addr == "198.51.100.17"
    assert got["hangup"].client_addr == "2001:db8::18"
    assert (got["probe"].category, got["probe"].client_addr) == ("probe", "203.0.113.19")
    assert got["probe"].detail == "probe TCP port 23"
    assert got["iso"].queue_id == "4F2B81C0A1" and got["iso"].stage == "eom"
    assert got["dnsbl"].ts == datetime.datetime(2024, 3, 10, 11, 59, 1).timestamp()
    for line in NOISE:
        assert parse_line(line, NOW) is None, line


def test_december_lines_read_in_january_belong_to_last_year():
    jan = datetime.datetime(2025, 1, 1, 0, 5).timestamp()
    hit = parse_line(LINES["sasl"].replace("Mar 10", "Dec 31"), jan)
    assert datetime.datetime.fromtimestamp(hit.ts).year == 2024


def _count(conn) -> int:
    return conn.execute("SELECT COUNT(*) FROM hits WHERE source = 'logscan'").fetchone()[0]


def test_incremental_rotation_truncation(tmp_path, database):
    log = tmp_path / "mail.log"
    conn = db.open_database(database, [HITS_SCHEMA])
    scanner = LogScanner(conn, str(log), clock=lambda: NOW)
    lines = list(LINES.values())
    log.write_text("\n".join(lines[:3] + NOISE) + "\n" + lines[3][:40])  # last line half-written
    assert scanner.scan().hits == 3
    assert scanner.scan().hits == 0                         # nothing new: nothing twice
    with open(log, "a") as f:
        f.write(lines[3][40:] + "\n" + lines[4] + "\n")
    assert scanner.scan().hits == 2                         # the completed line counts once
    # Rotation: the old file gets one more line after the last scan, then moves.
    with open(log, "a") as f:
        f.write(lines[5] + "\n")
    os.rename(log, str(log) + ".1")
    log.write_text(lines[6] + "\n")
    result = scanner.scan()
    assert result.rotated and result.hits == 2
    # Truncation (copytruncate): the file shrinks under the same inode.
    with open(log, "w") as f:
        f.write(lines[7] + "\n")
    result = scanner.scan()
    assert result.truncated and result.hits == 1
    assert _count(conn) == 8
    conn.close()


def test_positions_are_kept_per_host(tmp_path, database):
    """Two MX hosts on one database each read their own /var/log/mail.log:
    the same path, different files, separate positions."""
    lines = list(LINES.values())
    conn = db.open_database(database, [HITS_SCHEMA])
    try:
        log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
        log_a.write_text("\n".join(lines[:3]) + "\n")
        log_b.write_text("\n".join(lines[:5]) + "\n")
        mx1 = LogScanner(conn, str(log_a), clock=lambda: NOW, host="mx1.example.net")
        assert mx1.scan().hits == 3
        # mx2's log lives at the same path on its own machine.
        mx2 = LogScanner(conn, str(log_a), clock=lambda: NOW, host="mx2.example.net")
        os.rename(log_a, tmp_path / "a.keep")
        os.rename(log_b, log_a)
        result = mx2.scan()
        assert result.hits == 5 and not result.rotated
        hosts = dict(conn.execute("SELECT host, COUNT(*) FROM hits GROUP BY host").fetchall())
        assert hosts == {"mx1.example.net": 3, "mx2.example.net": 5}
    finally:
        conn.close()


def test_position_saved_before_hosts_is_taken_over(tmp_path):
    """A database from before positions had hosts: the first host to scan
    continues where the old position left off."""
    path = str(tmp_path / "old.db")
    conn = db.connect(path)
    db.migrate(conn, [HITS_SCHEMA, db.Schema.of("logscan", LOGSCAN_SCHEMA.migrations[:2])])
    log = tmp_path / "mail.log"
    lines = list(LINES.values())
    log.write_text("\n".join(lines[:2]) + "\n")
    offset = os.path.getsize(log)
    conn.execute("INSERT INTO logscan_state (path, inode, file_offset, updated, head)"
                 " VALUES (?, ?, ?, 0, '')", (str(log), os.stat(log).st_ino, offset))
    with open(log, "a") as f:
        f.write(lines[2] + "\n")
    scanner = LogScanner(conn, str(log), clock=lambda: NOW, host="mx1.example.net")
    assert scanner.scan().hits == 1          # only the line after the old position
    rows = conn.execute("SELECT host FROM logscan_positions").fetchall()
    assert rows == [("mx1.example.net",)]
    conn.close()
def test_one_file_under_two_names_is_read_once(tmp_path, monkeypatch):
    """Issue 12, finding 9: `mail.log`, then its absolute path, read twice."""
    log = tmp_path / "mail.log"
    log.write_text(LINES["dnsbl"] + "\n" + LINES["helo"] + "\n")
    conn = db.open_database(str(tmp_path / "m.db"), [HITS_SCHEMA])
    monkeypatch.chdir(tmp_path)
    assert LogScanner(conn, "mail.log", clock=lambda: NOW).scan().hits == 2
    assert LogScanner(conn, str(log), clock=lambda: NOW).scan().hits == 0
    os.symlink(str(log), str(tmp_path / "maillog-link"))
    assert LogScanner(conn, str(tmp_path / "maillog-link"), clock=lambda: NOW).scan().hits == 0
    assert conn.execute("SELECT COUNT(*) FROM hits").fetchone()[0] == 2
    conn.close()


def test_postscreen_dnsbl_reject_is_one_hit():
    """Issue 12, finding 9: the DNSBL rank line and postscreen's own reject
    of the same client were two hits."""
    rank = ("Mar 10 11:59:07 mx postfix/postscreen[4106]: DNSBL rank 3 for "
            "[198.51.100.17]:52111")
    reject = ("Mar 10 11:59:08 mx postfix/postscreen[4106]: NOQUEUE: reject: RCPT from "
              "[198.51.100.17]:52111: 550 5.7.1 Service unavailable; client [198.51.100.17] "
              "blocked using zen.dnsbl.example; from=<a@example.net>, to=<b@example.com>, "
              "proto=ESMTP, helo=<host.example.net>")
    hits = [h for h in (parse_line(rank, NOW), parse_line(reject, NOW)) if h is not None]
    assert [(h.rule_id, h.client_addr) for h in hits] == [("postscreen.dnsbl", "198.51.100.17")]
    # smtpd's own DNSBL rejects are still hits.
    assert parse_line(LINES["dnsbl"], NOW).rule_id.startswith("postfix.dnsbl")
