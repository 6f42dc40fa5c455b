"""Postfix's and the kernel's messages from the systemd journal, as hits.

Debian 12 installs no syslog daemon: Postfix logs through /dev/log into
journald, the kernel's firewall lines go there too, and there is no
/var/log/mail.log or kern.log to read. This reads the same messages from
the journal and turns them into hits with logscan's parser.

Why ``journalctl --output=json`` and not the python3-systemd bindings:
journalctl is on every systemd machine, so nothing has to be compiled into
a virtual environment (pip's systemd-python needs libsystemd-dev and a
compiler) and the wheel stays pure Python; it reads the machine's journal
or a directory of journal files given by path (what the tests write with
systemd-journal-remote); and its cursor is a plain string, kept in the
database per source like a file's offset. Each run reads only the entries
after the saved cursor; the first run starts ``first_since`` ago, so a
first install does not record a whole journal's history.

Only the entries that can be evidence are asked for, by journal match:
the Postfix programs' SYSLOG_IDENTIFIERs (configurable, since a
``syslog_name`` in master.cf changes them) and the kernel transport.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from milterguard.errors import MilterguardError
from milterguard.store import db
from milterguard.store.hits import HITS_SCHEMA, insert_hits
from milterguard.store.logscan import LOGSCAN_SCHEMA, ScanResult, parse_message
from milterguard.verdict import Hit

#: smtpd (port 25, and submission/smtps under Debian's master.cf names)
#: and postscreen: the programs whose rejects logscan understands.
DEFAULT_IDENTIFIERS = ("postfix/smtpd", "postfix/postscreen",
                       "postfix/submission/smtpd", "postfix/smtps/smtpd")


class JournalError(MilterguardError):
    """journalctl could not be run or could not read the journal."""


@dataclass(frozen=True)
class JournalSource:
    """Which journal, and which of its entries, one scan reads."""

    identifiers: tuple[str, ...] = DEFAULT_IDENTIFIERS
    kernel: bool = True
    #: A directory of journal files (``journalctl --directory``); empty:
    #: the machine's own journal.
    directory: str = ""
    first_since: str = "-1d"
    command: tuple[str, ...] = ("journalctl",)

    @property
    def key(self) -> str:
        """The name its cursor is saved under, and the one errors show."""
        return f"journal:{self.directory}" if self.directory else "journal"

    def argv(self, cursor: str | None) -> list[str]:
        argv = [*self.command, "--output=json", "--quiet", "--no-pager"]
        if self.directory:
            argv.append(f"--directory={self.directory}")
        argv.append(f"--after-cursor={cursor}" if cursor else f"--since={self.first_since}")
        # Matches on one field are ORed; "+" ORs the kernel transport in.
        argv += [f"SYSLOG_IDENTIFIER={ident}" for ident in self.identifiers]
        if self.kernel:
            if self.identifiers:
                argv.append("+")
            argv.append("_TRANSPORT=kernel")
        return argv

    @classmethod
    def from_config(cls, section: Any) -> "JournalSource":
        """``logscan.journal`` (a line-aware dict); errors name file and line."""
        idents = section.get("identifiers", list(DEFAULT_IDENTIFIERS))
        if not isinstance(idents, list) or not all(isinstance(i, str) and i for i in idents):
            raise section.error("must be a list of SYSLOG_IDENTIFIER names", "identifiers")
        kernel = section.get("kernel", True)
        if not isinstance(kernel, bool):
            raise section.error("must be true or false", "kernel")
        if not idents and not kernel:
            raise section.error("reads nothing: name identifiers or set kernel: true",
                                "identifiers")
        directory = section.get("directory", "") or ""
        if not isinstance(directory, str):
            raise section.error("must be a directory path", "directory")
        since = section.get("first_since", "1d")
        if not isinstance(since, str) or not since:
            raise section.error("must be a duration such as 1d or 2h", "first_since")
        command = section.get("command", ["journalctl"])
        if not isinstance(command, list) or not command:
            raise section.error("must be a command as a list, e.g. [journalctl]", "command")
        return cls(tuple(idents), kernel, directory,
                   since if since.startswith(("-", "+")) or " " in since else f"-{since}",
                   tuple(str(c) for c in command))


@dataclass
class JournalScanner:
    """Incremental reader of the journal; the cursor lives in the database."""

    conn: Any
    source: JournalSource
    clock: Callable[[], float] = time.time
    batch: int = 1000
    popen: Callable[..., Any] = subprocess.Popen
    #: This machine's name (server.hostname): MX hosts sharing one
    #: database each read their own journal.
    host: str = ""

    def __post_init__(self) -> None:
        db.migrate(self.conn, [HITS_SCHEMA, LOGSCAN_SCHEMA])

    def _cursor(self) -> str | None:
        row = self.conn.execute("SELECT journal_cursor FROM logscan_journal"
                                " WHERE host = ? AND source = ?",
                                (self.host, self.source.key)).fetchone()
        return str(row[0]) if row else None

    def _save(self, cursor: str) -> None:
        with db.transaction(self.conn):
            self.conn.execute(
                "INSERT INTO logscan_journal (host, source, journal_cursor, updated)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (host, source) DO UPDATE SET"
                " journal_cursor = excluded.journal_cursor, updated = excluded.updated",
                (self.host, self.source.key, cursor, self.clock()))

    def scan(self) -> ScanResult:
        """Record hits from the entries after the saved cursor.

        The cursor saved is always that of the last entry whose hits were
        written, so a run that fails half-way goes on from there next time,
        neither losing nor repeating entries.
        """
        result = ScanResult()
        argv = self.source.argv(self._cursor())
        # stderr to a file: a pipe nobody reads while stdout is being read
        # could fill up and stall journalctl.
        errors = tempfile.TemporaryFile()
        try:
            proc = self.popen(argv, stdout=subprocess.PIPE, stderr=errors,
                              stdin=subprocess.DEVNULL)
        except OSError as exc:
            errors.close()
            raise JournalError(f"{self.source.key}: cannot run {argv[0]}: {exc.strerror}") from None
        last_cursor = ""
        pending: list[Hit] = []

        def flush() -> None:
            result.hits += insert_hits(self.conn, pending, source="logscan")
            pending.clear()
            if last_cursor:
                self._save(last_cursor)

        with proc:
            for raw in proc.stdout:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                result.lines += 1
                hit = entry_hit(entry)
                if hit is not None:
                    pending.append(hit)
                last_cursor = str(entry.get("__CURSOR") or last_cursor)
                if len(pending) >= self.batch:
                    flush()
            flush()
        with errors:
            errors.seek(0)
            err = errors.read().decode("utf-8", "replace").strip()
        if proc.returncode != 0:
            first = err.splitlines()[0] if err else f"exit status {proc.returncode}"
            raise JournalError(f"{self.source.key}: {argv[0]} failed: {first}")
        return result


def _text(value: Any) -> str:
    """A journal field: a string, or a list of byte values when not UTF-8."""
    if isinstance(value, list):
        try:
            return bytes(value).decode("utf-8", "replace")
        except (TypeError, ValueError):
            return ""
    return value if isinstance(value, str) else ""


def entry_hit(entry: dict[str, Any]) -> Hit | None:
    """One journal entry (journalctl's JSON) -> a Hit, or None."""
    message = _text(entry.get("MESSAGE"))
    if not message:
        return None
    if entry.get("_TRANSPORT") == "kernel":
        program = "kernel"
    else:
        program = _text(entry.get("SYSLOG_IDENTIFIER"))
    try:
        ts = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
    except (KeyError, TypeError, ValueError):
        ts = time.time()
    return parse_message(program, message, ts)


def journal_sources(section: Any, directories: Sequence[str] = ()) -> list[JournalSource]:
    """The journal sources of ``logscan.journal``, or one per given directory."""
    source = JournalSource.from_config(section)
    if not directories:
        return [source]
    return [JournalSource(source.identifiers, source.kernel, d, source.first_since,
                          source.command) for d in directories]
