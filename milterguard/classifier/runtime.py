"""The classifier inside the daemon: counts kept in memory, refreshed in the
background, asked once per message at end of data.

Token lookups must cost microseconds, so the counts live in a dict. Loading
them (a million tokens take a second or two) runs on a thread of its own;
until the first load is done the classifier reports nothing, and the milter
never waits for it. After that the thread reads only the rows a learn run
changed (``serial``), every ``refresh_interval`` seconds.

Auto-learn (off by default) queues confident verdicts' tokens for the same
thread to write, so SMTP never waits for the database either.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

from milterguard.classifier.model import Counts, Score, classify
from milterguard.classifier.settings import ClassifierSettings
from milterguard.classifier.tokendb import (TokenWriter, load_counts, message_digest,
                                            open_tokendb)
from milterguard.classifier.tokens import tokenize
from milterguard.content.views import MessageViews
from milterguard.store.engines import ERRORS, error_text
from milterguard.verdict import Finding

log = logging.getLogger("milterguard.classifier")

#: What a database outage raises (either engine), or a vanished file or one
#: this user may not open: the daemon logs it and goes on, explain goes on
#: without the counts.
LOAD_ERRORS: tuple[type[BaseException], ...] = (*ERRORS, OSError)
#: Clues named in a finding's detail (the log line and the hit record).
DETAIL_CLUES = 5
#: Auto-learned messages waiting for the writer; beyond this they are dropped.
AUTOLEARN_QUEUE = 1000


def clue_text(score: Score, count: int = DETAIL_CLUES) -> str:
    parts = [f"p={score.probability:.4f}"]
    parts += [f"{token}={f:.2f}" for token, f in score.clues[:count]]
    return " ".join(parts)


class Classifier:
    """Learned counts for the daemon (or for explain: ``load()`` and ask)."""

    def __init__(self, database: str, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock
        self.counts: Counts | None = None
        self.serial = 0
        self.refresh_interval = 5.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._learn_queue: queue.Queue[tuple[str, set[str], str]] = queue.Queue(AUTOLEARN_QUEUE)
        self.autolearn_dropped = 0

    # -- loading -----------------------------------------------------------

    def load(self, conn: Any = None) -> None:
        """Read new counts now (all of them the first time)."""
        own = conn is None
        conn = conn or open_tokendb(self.database)
        try:
            counts, serial = load_counts(conn, self.counts, self.serial)
        finally:
            if own:
                conn.close()
        if self.counts is None or serial != self.serial:
            log.debug("event=classifier-load serial=%d tokens=%d spam=%d ham=%d",
                      serial, len(counts.tokens), counts.spam, counts.ham)
        self.counts, self.serial = counts, serial

    def start(self, refresh_interval: float) -> None:
        self.refresh_interval = refresh_interval
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="milterguard-classifier",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = open_tokendb(self.database)
                self._write_autolearned(conn)
                first = self.counts is None
                started = time.monotonic()
                self.load(conn)
                counts = self.counts
                if first and counts is not None:
                    log.info("event=classifier-ready tokens=%d spam=%d ham=%d seconds=%.2f",
                             len(counts.tokens), counts.spam, counts.ham,
                             time.monotonic() - started)
            except LOAD_ERRORS as exc:   # an outage must not end the thread
                log.error("event=classifier-load-failed error=%r", error_text(exc))
                if conn is not None:
                    conn.close()
                    conn = None
            self._stop.wait(self.refresh_interval)
        if conn is not None:
            try:
                self._write_autolearned(conn)
            except Exception as exc:  # noqa: BLE001 - logged; the refresh thread goes on
                log.error("event=autolearn-failed error=%r", error_text(exc))
            conn.close()

    # -- asking ------------------------------------------------------------

    def ready(self, settings: ClassifierSettings) -> bool:
        counts = self.counts
        return (settings.enabled and counts is not None
                and counts.spam >= settings.min_spam and counts.ham >= settings.min_ham)

    def score(self, settings: ClassifierSettings, views: MessageViews) -> Score | None:
        """The message's score, or None while the classifier may not act."""
        counts = self.counts
        if counts is None or not self.ready(settings):
            return None
        return classify(tokenize(views), counts, settings.tuning)

    def findings(self, settings: ClassifierSettings, views: MessageViews) -> list[Finding]:
        if not settings.bands:
            return []
        score = self.score(settings, views)
        if score is None or not score.clues:
            return []   # not ready, or no token it knows: no evidence either way
        self.autolearn(settings, views, score.probability)
        band = settings.band(score.probability)
        if band is None:
            return []
        return [band.finding(clue_text(score))]

    # -- auto-learn --------------------------------------------------------

    def autolearn(self, settings: ClassifierSettings, views: MessageViews,
                  probability: float) -> None:
        """Queue a confidently classified message for learning (if enabled)."""
        if not settings.autolearn:
            return
        if probability >= settings.autolearn_spam:
            label = "spam"
        elif probability <= settings.autolearn_ham:
            label = "ham"
        else:
            return
        raw = b"".join(f"{n}: {v}\n".encode("utf-8", "replace") for n, v in views.headers)
        digest = message_digest(raw + b"\n" + views.body)
        try:
            self._learn_queue.put_nowait((digest, tokenize(views), label))
        except queue.Full:
            self.autolearn_dropped += 1

    def _write_autolearned(self, conn: Any) -> None:
        writer = TokenWriter(conn, self.clock)
        while True:
            try:
                digest, tokens, label = self._learn_queue.get_nowait()
            except queue.Empty:
                break
            writer.learn(digest, tokens, label)
        if writer.pending():
            log.info("event=autolearn messages=%d", writer.pending())
            writer.commit()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
