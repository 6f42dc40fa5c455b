"""Whether the database answers, and a deadline for the SMTP path's queries.

With a shared PostgreSQL the database is a network service that can go
away. Mail must keep flowing then: greylisting fails open (or as
configured), hits wait in memory (store/hits.py), and no SMTP stage waits
for the database longer than ``store.deadline``.

``DatabaseHealth`` is one per `database:` value in a process, shared by the
greylist and the hits writer: an outage is logged once when it starts and
once when it ends (with its length), counted, and exported as metrics.
While the database is down, callers skip it for ``retry_after`` seconds
after each failed attempt instead of every RCPT paying a connect timeout.

``Deadline`` runs a query on a small pool of worker threads and stops
waiting at the deadline; the query itself finishes (or fails) in the
background on its worker, bounded by libpq's connect and statement
timeouts. Behind a stuck database the first call that misses its deadline
marks the database down, and the calls after it skip it (``retry_after``)
instead of queueing for the workers.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable, TypeVar

from milterguard.store import engines

log = logging.getLogger("milterguard.store")

T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """The database did not answer in time, or is known to be down."""


class DatabaseHealth:
    """Up/down state of one database as this process sees it."""

    def __init__(self, database: str, retry_after: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = engines.describe(database)
        self.engine = engines.engine_name(database)
        self.retry_after = retry_after
        self.clock = clock
        self.up = True
        self.outages = 0
        self.down_since = 0.0
        self.last_error = ""
        self._next_try = 0.0
        self._lock = threading.Lock()

    def should_try(self) -> bool:
        """False while a recent failure says the database is still down."""
        return self.up or self.clock() >= self._next_try

    def succeeded(self) -> None:
        if self.up:
            return
        with self._lock:
            if self.up:
                return
            self.up = True
            log.warning("event=database_up database=%s engine=%s down_seconds=%.1f",
                        self.name, self.engine, self.clock() - self.down_since)

    def failed(self, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else engines.error_text(exc)
        with self._lock:
            self.last_error = text
            self._next_try = self.clock() + self.retry_after
            if not self.up:
                return
            self.up = False
            self.outages += 1
            self.down_since = self.clock()
        log.warning("event=database_down database=%s engine=%s error=%r",
                    self.name, self.engine, text)


_health: dict[str, DatabaseHealth] = {}
_health_lock = threading.Lock()


def health_of(database: str) -> DatabaseHealth:
    """The process's one DatabaseHealth for ``database``."""
    with _health_lock:
        if database not in _health:
            _health[database] = DatabaseHealth(database)
        return _health[database]


def all_health() -> list[DatabaseHealth]:
    with _health_lock:
        return list(_health.values())


class Deadline:
    """Run database calls with a deadline on at most ``workers`` threads."""

    def __init__(self, seconds: float, workers: int = 16) -> None:
        self.seconds = seconds
        self.workers = workers
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``'s result, or DatabaseUnavailable at the deadline.

        A call waiting for a free worker counts its wait against the
        deadline too, and is cancelled unstarted when that passes. An
        exception ``fn`` raises propagates unchanged.
        """
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.workers, thread_name_prefix="db-deadline")
            pool = self._pool
        future = pool.submit(fn, *args)
        try:
            return future.result(timeout=self.seconds)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DatabaseUnavailable(
                f"no answer within the deadline ({self.seconds:g}s)") from None

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
