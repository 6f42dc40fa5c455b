"""Read the mail log incrementally and record what Postfix (or the kernel
firewall) refused on its own, as hits. (The same messages from the systemd
journal: journalscan.py.)

Postfix's own restrictions and postscreen turn many attackers away before
the milter sees them; their evidence is only in the log. The scanner keeps
the file's inode and byte offset in the database (table
``logscan_positions``, per host: MX hosts sharing a PostgreSQL each read
their own log), so each run reads only new lines. A changed inode means
the log was rotated: the rest of the old file is read from its rotated name (``.1``)
if it is still there, then the new file from the start. A file shorter
than the saved offset was truncated and is read from the start.

Kernel lines: an nftables rule ``log prefix "milterguard-probe: "`` on
closed ports (see packaging/nftables-probe.nft) produces lines such as
``kernel: [..] milterguard-probe: IN=eth0 ... SRC=192.0.2.9 ... DPT=23``,
recorded as category ``probe``.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from milterguard.store import db
from milterguard.store.hits import HITS_SCHEMA, insert_hits
from milterguard.verdict import Action, Hit

PROBE_PREFIX = "milterguard-probe: "

#: Where each log file was read up to (the scanner also writes hits).
LOGSCAN_SCHEMA = db.Schema.of("logscan", [
    [
        "CREATE TABLE logscan_state ("
        " path VARCHAR(1024) PRIMARY KEY,"
        " inode INTEGER NOT NULL,"
        " file_offset INTEGER NOT NULL,"
        " updated REAL NOT NULL)",
    ],
    [
        # A digest of the file's first bytes: a log truncated and refilled
        # past the old offset before the next scan keeps its inode and size.
        "ALTER TABLE logscan_state ADD COLUMN head VARCHAR(64) NOT NULL DEFAULT ''",
    ],
    [
        # Positions per host: MX hosts sharing one PostgreSQL each read
        # their own /var/log/mail.log. Rows from before carry host '' and
        # are taken over by the first host that scans that path.
        "CREATE TABLE logscan_positions ("
        " host VARCHAR(255) NOT NULL,"
        " path VARCHAR(1024) NOT NULL,"
        " inode INTEGER NOT NULL,"
        " file_offset INTEGER NOT NULL,"
        " updated REAL NOT NULL,"
        " head VARCHAR(64) NOT NULL DEFAULT '',"
        " PRIMARY KEY (host, path))",
        "INSERT INTO logscan_positions (host, path, inode, file_offset, updated, head)"
        " SELECT '', path, inode, file_offset, updated, head FROM logscan_state",
        "DROP TABLE logscan_state",
    ],
    [
        # The systemd journal's position per host and journal source
        # (journalscan.py): each MX host reads its own journal.
        "CREATE TABLE logscan_journal ("
        " host VARCHAR(255) NOT NULL,"
        " source VARCHAR(1024) NOT NULL,"
        " journal_cursor VARCHAR(1024) NOT NULL,"
        " updated REAL NOT NULL,"
        " PRIMARY KEY (host, source))",
    ],
])

HEAD_BYTES = 256


def _head(path: str, limit: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(min(limit, HEAD_BYTES))).hexdigest()

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}

# "Jan  5 10:00:00 host prog[pid]: msg"  or  "2024-01-05T10:00:00.123+00:00 host prog[pid]: msg"
_SYSLOG = re.compile(r"^(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d)"
                     r" (?P<host>\S+) (?P<prog>[^:\[\s]+)(?:\[\d+\])?: (?P<msg>.*)$")
_ISO = re.compile(r"^(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
                  r" (?P<host>\S+) (?P<prog>[^:\[\s]+)(?:\[\d+\])?: (?P<msg>.*)$")

# smtpd and postscreen: "NOQUEUE: reject: RCPT from name[addr]: 554 5.7.1 text; from=<..> ..."
_REJECT = re.compile(r"^(?P<qid>NOQUEUE|[0-9A-Za-z]+): reject: (?P<cmd>[A-Z-]+) from "
                     r"(?P<name>[^\s\[]*)\[(?P<addr>[^\]]+)\](?::\d+)?: "
                     r"(?P<code>[45]\d\d) (?:(?P<xcode>[45]\.\d{1,3}\.\d{1,3}) )?(?P<text>.*)$")
_FIELD = {k: re.compile(k + r"=<([^>]*)>") for k in ("from", "to", "helo")}
_SASL = re.compile(r"^warning: (?P<name>[^\s\[]*)\[(?P<addr>[^\]]+)\]: SASL (?P<mech>[\w-]+)"
                   r" authentication failed")
_PS_ADDR = r"\[(?P<addr>[^\]]+)\]:\d+"
_POSTSCREEN = [
    (re.compile(r"^PREGREET \d+ after [\d.]+ from " + _PS_ADDR), "postscreen.pregreet"),
    (re.compile(r"^DNSBL rank (?P<rank>\d+) for " + _PS_ADDR), "postscreen.dnsbl"),
    (re.compile(r"^HANGUP after [\d.]+ from " + _PS_ADDR), "postscreen.hangup"),
    (re.compile(r"^COMMAND PIPELINING from " + _PS_ADDR), "postscreen.pipelining"),
    (re.compile(r"^NON-SMTP COMMAND from " + _PS_ADDR), "postscreen.non_smtp"),
    (re.compile(r"^BARE NEWLINE from " + _PS_ADDR), "postscreen.bare_newline"),
]
_KERNEL_FIELD = re.compile(r"\b(SRC|DST|PROTO|DPT)=(\S+)")

#: (pattern in the reject text, rule id, category); first match wins.
_REJECT_KINDS = [
    (re.compile(r"blocked using (\S+?);?(?:\s|$)"), "postfix.dnsbl", "dnsbl"),
    (re.compile(r"Helo command rejected"), "postfix.helo", "helo"),
    (re.compile(r"Sender address rejected: Domain not found"), "postfix.sender_domain", "sender"),
    (re.compile(r"Sender address rejected: need fully-qualified"), "postfix.sender_fqdn", "sender"),
    (re.compile(r"Sender address rejected"), "postfix.sender", "sender"),
    (re.compile(r"Relay access denied"), "postfix.relay", "relay"),
    (re.compile(r"Recipient address rejected: User unknown"), "postfix.unknown_user", "recipient"),
    (re.compile(r"Recipient address rejected: Domain not found"), "postfix.rcpt_domain", "recipient"),
    (re.compile(r"Client host rejected: cannot find your"), "postfix.rdns", "client"),
    (re.compile(r"Client host rejected"), "postfix.client", "client"),
    (re.compile(r"Recipient address rejected"), "postfix.recipient", "recipient"),
]

_STAGES = {"CONNECT": "connect", "HELO": "helo", "EHLO": "helo", "MAIL": "mail",
           "RCPT": "rcpt", "DATA": "data", "END-OF-MESSAGE": "eom"}


def _parse_time(m: re.Match[str], now: float) -> float:
    if "iso" in m.groupdict() and m.group("iso"):
        text = m.group("iso").replace("Z", "+00:00")
        try:
            stamp = datetime.datetime.fromisoformat(text)
        except ValueError:
            return now
        if stamp.tzinfo is None:
            return stamp.timestamp()
        return stamp.timestamp()
    # Classic syslog has no year: take this year, or last year if that
    # would put the line more than a day in the future (December logs
    # read in January).
    year = datetime.datetime.fromtimestamp(now).year
    month = _MONTHS.get(m.group("mon").lower(), 1)
    hour, minute, second = (int(x) for x in m.group("hms").split(":"))
    try:
        stamp = datetime.datetime(year, month, int(m.group("day")), hour, minute, second)
    except ValueError:
        return now
    ts = stamp.timestamp()
    if ts > now + 86400:
        ts = stamp.replace(year=year - 1).timestamp()
    return ts


def parse_line(line: str, now: float | None = None) -> Hit | None:
    """One log line -> a Hit, or None if the line is not evidence."""
    now = time.time() if now is None else now
    line = line.rstrip("\r\n")
    m = _SYSLOG.match(line) or _ISO.match(line)
    if not m:
        return None
    return parse_message(m.group("prog"), m.group("msg"), _parse_time(m, now))


def parse_message(prog: str, msg: str, ts: float) -> Hit | None:
    """One message of program ``prog`` (``postfix/smtpd``, ``kernel``) -> a Hit.

    The part shared by log files and the journal, which carries program,
    message and time as separate fields.
    """
    if prog == "kernel":
        return _kernel_hit(msg, ts)
    if not prog.startswith("postfix"):
        return None
    daemon = prog.rsplit("/", 1)[-1]
    rej = _REJECT.match(msg)
    if rej:
        if daemon == "postscreen":
            # postscreen's own reject follows the line that said which test
            # the client failed (DNSBL rank, PREGREET, ...), already a hit:
            # one event, one hit (issue 12, finding 9).
            return None
        return _reject_hit(rej, ts, daemon)
    sasl = _SASL.match(msg)
    if sasl:
        return Hit(rule_id="postfix.sasl_failed", category="sasl", stage="auth",
                   action=Action.REJECT, client_addr=sasl.group("addr"), ts=ts,
                   detail=f"SASL {sasl.group('mech')} authentication failed")
    if daemon == "postscreen":
        for pattern, rule_id in _POSTSCREEN:
            pm = pattern.match(msg)
            if pm:
                return Hit(rule_id=rule_id, category="postscreen", stage="connect",
                           action=Action.REJECT, client_addr=pm.group("addr"), ts=ts,
                           detail=msg[:200])
    return None


def _reject_hit(m: re.Match[str], ts: float, daemon: str) -> Hit | None:
    text = m.group("text")
    rule_id, category = "postfix.reject", "postfix"
    for pattern, rid, cat in _REJECT_KINDS:
        km = pattern.search(text)
        if km:
            rule_id, category = rid, cat
            if rid == "postfix.dnsbl":
                rule_id = f"postfix.dnsbl:{km.group(1)}"
            break
    fields = {k: (found.group(1) if (found := p.search(text)) else "") for k, p in _FIELD.items()}
    reason = text.split("; from=<", 1)[0].split(", from=<", 1)[0]
    code = m.group("code")
    return Hit(rule_id=rule_id, category=category,
               stage=_STAGES.get(m.group("cmd"), m.group("cmd").lower()),
               action=Action.TEMPFAIL if code.startswith("4") else Action.REJECT,
               client_addr=m.group("addr"), helo=fields["helo"], sender=fields["from"],
               recipients=(fields["to"],) if fields["to"] else (),
               queue_id="" if m.group("qid") == "NOQUEUE" else m.group("qid"),
               detail=f"{daemon}: {code} {reason}"[:300], ts=ts)


def _kernel_hit(msg: str, ts: float) -> Hit | None:
    at = msg.find(PROBE_PREFIX)
    if at < 0:
        return None
    fields = dict(_KERNEL_FIELD.findall(msg[at:]))
    src = fields.get("SRC")
    if not src:
        return None
    detail = f"probe {fields.get('PROTO', '?')} port {fields.get('DPT', '?')}"
    return Hit(rule_id="firewall.probe", category="probe", stage="connect",
               action=Action.REJECT, client_addr=src, detail=detail, ts=ts)


@dataclass
class ScanResult:
    lines: int = 0
    hits: int = 0
    rotated: bool = False
    truncated: bool = False


class LogScanner:
    """Incremental reader of one log file; state lives in the database."""

    def __init__(self, conn: Any, path: str,
                 clock: Callable[[], float] = time.time, batch: int = 1000,
                 host: str = "") -> None:
        self.conn = conn
        self.path = path
        # Positions are keyed on the resolved absolute path: `mail.log`,
        # `./mail.log` and `/var/log/mail.log` are one file, read once
        # (issue 12, finding 9). A position saved under the path as typed
        # (before this) is still found.
        self.key = os.path.realpath(path)
        self.clock = clock
        self.batch = batch
        self.host = host
        db.migrate(conn, [HITS_SCHEMA, LOGSCAN_SCHEMA])

    def _state(self) -> tuple[int, int, str] | None:
        # This host's position; else one saved before positions had hosts;
        # under the resolved path, else under the path as typed (before
        # positions were keyed on the resolved path).
        for key in dict.fromkeys((self.key, self.path)):
            rows = self.conn.execute("SELECT host, inode, file_offset, head FROM logscan_positions"
                                     " WHERE path = ? AND host IN (?, '')",
                                     (key, self.host)).fetchall()
            rows.sort(key=lambda r: r[0] != self.host)
            if rows:
                return int(rows[0][1]), int(rows[0][2]), str(rows[0][3])
        return None

    def _save(self, inode: int, offset: int) -> None:
        head = _head(self.path, offset)
        with db.transaction(self.conn):
            self.conn.execute(
                "INSERT INTO logscan_positions (host, path, inode, file_offset, updated, head)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host, path) DO UPDATE SET"
                " inode = excluded.inode, file_offset = excluded.file_offset,"
                " updated = excluded.updated, head = excluded.head",
                (self.host, self.key, inode, offset, self.clock(), head))
            if self.host:
                self.conn.execute("DELETE FROM logscan_positions WHERE host = '' AND path = ?",
                                  (self.key,))

    def _read_from(self, path: str, offset: int, result: ScanResult) -> int:
        """Record hits from ``path`` starting at ``offset``; returns the new offset.

        Only whole lines are consumed: a line still being written stays for
        the next run.
        """
        with open(path, "rb") as handle:
            handle.seek(offset)
            pending: list[Hit] = []
            now = self.clock()
            for raw in _whole_lines(handle):
                offset += len(raw)
                result.lines += 1
                hit = parse_line(raw.decode("utf-8", "replace"), now)
                if hit is not None:
                    pending.append(hit)
                if len(pending) >= self.batch:
                    result.hits += insert_hits(self.conn, pending, source="logscan",
                                               host=self.host)
                    pending = []
            result.hits += insert_hits(self.conn, pending, source="logscan", host=self.host)
        return offset

    def scan(self) -> ScanResult:
        result = ScanResult()
        st = os.stat(self.path)
        state = self._state()
        offset = 0
        if state is not None:
            inode, saved, head = state
            if inode == st.st_ino:
                if st.st_size < saved or (head and _head(self.path, saved) != head):
                    result.truncated = True
                else:
                    offset = saved
            else:
                result.rotated = True
                old = self._rotated_file(inode)
                if old is not None:
                    self._read_from(old, saved, result)
        offset = self._read_from(self.path, offset, result)
        self._save(st.st_ino, offset)
        return result

    def _rotated_file(self, inode: int) -> str | None:
        for suffix in (".1", ".0", "-old"):
            candidate = self.path + suffix
            try:
                if os.stat(candidate).st_ino == inode:
                    return candidate
            except OSError:
                continue
        return None


def _whole_lines(handle: Iterable[bytes]) -> Iterator[bytes]:
    for raw in handle:
        if not raw.endswith(b"\n"):
            return
        yield raw
