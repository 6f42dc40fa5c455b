"""Learned token counts in the project database.

Tables (component "classifier", versioned like every other component):

- ``bayes_tokens``: token text, spam and ham message counts, and the
  ``serial`` of the learn run that last changed it. The daemon loads the
  whole table once, then only rows with a higher serial: a learn run of a
  hundred messages costs it a few thousand rows, not the whole table.
- ``bayes_messages``: the digest of every learned message and its label,
  so learning the same message again changes nothing, and learning it
  with the other label moves it.
- ``bayes_serial``: one row, the last serial handed out.

The SQL is the project's portable dialect (store/engines.py runs it on
SQLite and PostgreSQL): ``ON CONFLICT ... DO UPDATE`` for upserts, CASE
instead of MAX/GREATEST.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from milterguard.classifier.model import Counts
from milterguard.store import db

CLASSIFIER = db.Schema.of("classifier", [
    [
        "CREATE TABLE bayes_tokens ("
        " token TEXT PRIMARY KEY,"
        " spam INTEGER NOT NULL,"
        " ham INTEGER NOT NULL,"
        " serial INTEGER NOT NULL)",
        "CREATE INDEX bayes_tokens_serial ON bayes_tokens (serial)",
        "CREATE TABLE bayes_messages ("
        " digest TEXT PRIMARY KEY,"
        " label TEXT NOT NULL,"
        " learned_at REAL NOT NULL)",
        "CREATE TABLE bayes_serial (id INTEGER PRIMARY KEY, serial INTEGER NOT NULL)",
        "INSERT INTO bayes_serial (id, serial) VALUES (1, 0)",
    ],
])

LABELS = ("spam", "ham")

_UPSERT = (
    "INSERT INTO bayes_tokens (token, spam, ham, serial) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (token) DO UPDATE SET"
    " spam = CASE WHEN bayes_tokens.spam + excluded.spam > 0"
    "        THEN bayes_tokens.spam + excluded.spam ELSE 0 END,"
    " ham = CASE WHEN bayes_tokens.ham + excluded.ham > 0"
    "       THEN bayes_tokens.ham + excluded.ham ELSE 0 END,"
    " serial = excluded.serial")


def message_digest(raw: bytes) -> str:
    """What identifies a message across learn runs: its bytes with line
    endings and trailing white space normalised (an mbox copy and a Maildir
    copy of one message are the same message) and without an mbox "From "
    line or a delivery's Return-Path/Delivered-To, which differ per copy."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[0].startswith(b"From "):
        lines = lines[1:]
    kept = [line.rstrip() for line in lines
            if not line.lower().startswith((b"return-path:", b"delivered-to:"))]
    while kept and not kept[-1]:
        kept.pop()
    return hashlib.sha256(b"\n".join(kept)).hexdigest()


@dataclass
class LearnOutcome:
    """What one learn call did with one message."""

    learned: bool = False      # counts changed
    relabelled: bool = False   # was learned with the other label before
    forgotten: bool = False


def open_tokendb(database: str, timeout: float = 30.0) -> Any:
    """A connection to the database (SQLite path or PostgreSQL URL), migrated."""
    return db.open_database(database, [CLASSIFIER], timeout=timeout)


class TokenWriter:
    """Learns and forgets messages in batches: one transaction per batch."""

    def __init__(self, conn: Any, clock: Callable[[], float] = time.time) -> None:
        self.conn = conn
        self.clock = clock
        self._deltas: dict[str, list[int]] = {}
        self._messages: dict[str, str | None] = {}   # digest -> label (None: forget)

    def _known_label(self, digest: str) -> str | None:
        if digest in self._messages:
            return self._messages[digest]
        row = self.conn.execute("SELECT label FROM bayes_messages WHERE digest = ?",
                                (digest,)).fetchone()
        return row[0] if row else None

    def _count(self, tokens: Iterable[str], label: str, sign: int) -> None:
        column = 0 if label == "spam" else 1
        deltas = self._deltas
        for token in tokens:
            entry = deltas.get(token)
            if entry is None:
                entry = deltas[token] = [0, 0]
            entry[column] += sign

    def learn(self, digest: str, tokens: set[str], label: str) -> LearnOutcome:
        if label not in LABELS:
            raise ValueError(f"label must be spam or ham, not {label!r}")
        known = self._known_label(digest)
        if known == label:
            return LearnOutcome()
        if known is not None:
            self._count(tokens, known, -1)
        self._count(tokens, label, 1)
        self._messages[digest] = label
        return LearnOutcome(learned=True, relabelled=known is not None)

    def forget(self, digest: str, tokens: set[str]) -> LearnOutcome:
        known = self._known_label(digest)
        if known is None:
            return LearnOutcome()
        self._count(tokens, known, -1)
        self._messages[digest] = None
        return LearnOutcome(forgotten=True)

    def pending(self) -> int:
        return len(self._messages)

    def commit(self) -> None:
        """Write what was learned since the last commit, in one transaction."""
        if not self._messages:
            return
        conn = self.conn
        now = self.clock()
        with db.transaction(conn):
            serial = conn.execute("SELECT serial FROM bayes_serial WHERE id = 1").fetchone()[0] + 1
            conn.execute("UPDATE bayes_serial SET serial = ? WHERE id = 1", (serial,))
            conn.executemany(_UPSERT, [(token, d[0], d[1], serial)
                                       for token, d in self._deltas.items() if d[0] or d[1]])
            # Forgetting a token the table never had inserts a negative count.
            conn.execute("UPDATE bayes_tokens SET spam = 0 WHERE spam < 0 AND serial = ?", (serial,))
            conn.execute("UPDATE bayes_tokens SET ham = 0 WHERE ham < 0 AND serial = ?", (serial,))
            for digest, label in self._messages.items():
                conn.execute("DELETE FROM bayes_messages WHERE digest = ?", (digest,))
                if label is not None:
                    conn.execute("INSERT INTO bayes_messages (digest, label, learned_at)"
                                 " VALUES (?, ?, ?)", (digest, label, now))
        self._deltas.clear()
        self._messages.clear()


def load_counts(conn: Any, counts: Counts | None = None,
                since: int = 0, batch: int = 2000) -> tuple[Counts, int]:
    """Counts (new, or ``counts`` brought up to date) and the serial they reach.

    One read transaction, so tokens and totals are of the same moment even
    while a learn run writes. Rows come in small batches with a pause of
    nothing between them: the daemon loads on a thread of its own, and the
    pause hands the GIL to the milter's threads, which would otherwise wait
    for a whole batch to be turned into dict entries.
    """
    counts = counts if counts is not None else Counts()
    conn.execute("BEGIN")
    try:
        serial = conn.execute("SELECT serial FROM bayes_serial WHERE id = 1").fetchone()[0]
        if serial != since:
            cursor = conn.execute("SELECT token, spam, ham FROM bayes_tokens WHERE serial > ?",
                                  (since,))
            table = counts.tokens
            while True:
                rows = cursor.fetchmany(batch)
                if not rows:
                    break
                for token, spam, ham in rows:
                    if spam > 0 or ham > 0:
                        table[token] = (spam << 32) | ham
                    else:
                        table.pop(token, None)
                time.sleep(0)
            totals = dict(conn.execute("SELECT label, COUNT(*) FROM bayes_messages"
                                       " GROUP BY label").fetchall())
            counts.spam = int(totals.get("spam", 0))
            counts.ham = int(totals.get("ham", 0))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise
    return counts, serial


def current_serial(conn: Any) -> int:
    return int(conn.execute("SELECT serial FROM bayes_serial WHERE id = 1").fetchone()[0])
