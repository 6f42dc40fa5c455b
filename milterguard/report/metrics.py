"""Prometheus metrics of the daemon (``prometheus_client``), optional.

Off unless ``metrics.listen`` is set (default ""): an HTTP listener then
serves the text format at ``/metrics`` on that address, 127.0.0.1 when
only a port is given, so nothing is exposed beyond the host unless the
admin says so.

What is counted, and where:

- ``milterguard_messages_total{action}``: one per message the session
  logs (accept, tag, reject, tempfail, discard, quarantine, abort, close),
  and connections refused before any message; ``Session`` calls
  ``message(action)``. A recipient refused on its own at RCPT
  (greylisting, recipient checks) is not a message: the greylist and hits
  counters show those.
- ``milterguard_hits_total{category,rule,observe}``: every hit recorded,
  counted where the engine hands hits to the store (``attach`` wraps
  ``Engine.record``).
- ``milterguard_stage_duration_seconds{stage}``: a histogram per milter
  callback, timed by the adapter (``stage_latency``).
- ``milterguard_dnsbl_results_total{zone,result}`` (listed, clean, unknown,
  suspended) and ``milterguard_dnsbl_timeouts_total{zone}``: counted from
  the results of each DNSBL check (``attach`` wraps the checker's
  ``check``; the DNSBL module may also call ``dnsbl_result`` itself).
- ``milterguard_uribl_results_total{zone,result}`` (listed, clean,
  unknown): every URI blocklist answer about a link (``attach`` hands
  ``uribl_result`` to the checker's ``on_result``).
- ``milterguard_greylist_total{outcome}``: new, early, passed, known,
  allowlisted, auto-allowlisted, error (``attach`` hands ``greylist`` to
  the greylist's ``on_outcome``, so the daemon's own greylist counts).
- ``milterguard_active_bans``, ``milterguard_rule_reloads_total`` and
  ``milterguard_rule_reload_failures_total``: read at scrape time from the
  bans table and the engine's own counters, so nothing on the SMTP path
  pays for them.
- ``milterguard_database_up{engine}`` (0 during an outage),
  ``milterguard_database_outages_total{engine}``, ``milterguard_hits_queued``
  (recorded, not yet written: grows while the database is away) and
  ``milterguard_hits_dropped_total`` (lost to a full queue): read at scrape
  time from store/health.py and the hits store.
- ``milterguard_resolver_denies_existence`` (1 while the resolver answers
  NXDOMAIN for a ``dns.probe_names`` name) and
  ``milterguard_dns_rejects_downgraded_total`` (refusals answered 4xx
  meanwhile): read at scrape time from the gates' resolver health.

Instrumentation is cheap: label children are cached per label tuple, and
without a listener nothing is attached at all.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from milterguard.errors import MilterguardError
from milterguard.store.engines import ERRORS, connect, is_url
from milterguard.store.health import all_health

log = logging.getLogger("milterguard.metrics")

#: Milter callbacks are mostly sub-millisecond; DNS and big bodies take longer.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0)
TIMEOUT_ERRORS = ("timeout", "deadline")


def _read_connection(database: str) -> Any:
    """A short-lived connection for a scrape; SQLite read-only, so a scrape
    never creates the file or takes its write lock."""
    if is_url(database):
        return connect(database, timeout=2.0, statement_timeout=2.0)
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1.0)


class _EngineCollector:
    """Values read at scrape time: reloads, active bans."""

    def __init__(self, engine: Any, database: str | None, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.database = database
        self.clock = clock

    def _active_bans(self) -> int:
        if not self.database:
            return 0
        try:
            conn = _read_connection(self.database)
        except ERRORS:
            return 0
        try:
            row = conn.execute("SELECT COUNT(*) FROM bans WHERE expires > ?",
                               (self.clock(),)).fetchone()
            return int(row[0])
        except ERRORS:   # no bans table yet: nothing banned
            return 0
        finally:
            conn.close()

    def collect(self) -> Iterable[Any]:
        if self.engine is not None:
            yield CounterMetricFamily("milterguard_rule_reloads",
                                      "Successful rule/config reloads",
                                      value=getattr(self.engine, "reloads", 0))
            yield CounterMetricFamily("milterguard_rule_reload_failures",
                                      "Reloads refused (broken edit, old rules kept)",
                                      value=getattr(self.engine, "reload_failures", 0))
        yield GaugeMetricFamily("milterguard_active_bans", "Bans in force now",
                                value=self._active_bans())
        up = GaugeMetricFamily("milterguard_database_up",
                               "1 while the database answers, 0 during an outage",
                               labels=["engine"])
        outages = CounterMetricFamily("milterguard_database_outages",
                                      "Outages of the database seen by this daemon",
                                      labels=["engine"])
        for health in all_health():
            up.add_metric([health.engine], 1 if health.up else 0)
            outages.add_metric([health.engine], health.outages)
        yield up
        yield outages
        store = getattr(self.engine, "store", None)
        if store is not None and hasattr(store, "backlog"):
            yield GaugeMetricFamily("milterguard_hits_queued",
                                    "Hits recorded and not yet in the database",
                                    value=store.backlog)
            yield CounterMetricFamily("milterguard_hits_dropped",
                                      "Hits lost because the in-memory queue was full",
                                      value=getattr(store, "dropped", 0))
        resolver = getattr(getattr(self.engine, "gates", None), "health", None)
        if resolver is not None:
            counters = resolver.counters()
            yield GaugeMetricFamily("milterguard_resolver_denies_existence",
                                    "1 while the resolver answers NXDOMAIN for a probe name",
                                    value=counters["denies_existence"])
            yield CounterMetricFamily("milterguard_dns_rejects_downgraded",
                                      "HELO/envelope refusals answered 4xx because the "
                                      "resolver denies names that must exist",
                                      value=counters["downgraded"])


class Metrics:
    """The daemon's metrics; one registry per instance (tests make several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self._messages = Counter("milterguard_messages", "Messages by final action",
                                 ["action"], registry=r)
        self._hits = Counter("milterguard_hits", "Hits recorded, by category and rule",
                             ["category", "rule", "observe"], registry=r)
        self._latency = Histogram("milterguard_stage_duration_seconds",
                                  "Time spent in each milter callback", ["stage"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self._dnsbl = Counter("milterguard_dnsbl_results", "DNSBL answers per zone",
                              ["zone", "result"], registry=r)
        self._dnsbl_timeouts = Counter("milterguard_dnsbl_timeouts",
                                       "DNSBL lookups that timed out (also counted unknown)",
                                       ["zone"], registry=r)
        self._uribl = Counter("milterguard_uribl_results",
                              "URI blocklist answers about links, per zone",
                              ["zone", "result"], registry=r)
        self._greylist = Counter("milterguard_greylist", "Greylisting outcomes per recipient",
                                 ["outcome"], registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()
        self._collector: _EngineCollector | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- instrumentation points (called on the SMTP path) ----------------

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = metric.labels(*labels)
        return child

    def message(self, action: str) -> None:
        self._child(self._messages, action).inc()

    def hit(self, category: str, rule: str, observe: bool = False) -> None:
        self._child(self._hits, category or "-", rule or "-", "1" if observe else "0").inc()

    def hits(self, hits: Iterable[Any]) -> None:
        for h in hits:
            self.hit(h.category, h.rule_id, bool(h.observe))

    def stage_latency(self, stage: str, seconds: float) -> None:
        self._child(self._latency, stage).observe(seconds)

    def dnsbl_result(self, zone: str, status: str, error: str = "") -> None:
        self._child(self._dnsbl, zone, status).inc()
        if error in TIMEOUT_ERRORS:
            self._child(self._dnsbl_timeouts, zone).inc()

    def uribl_result(self, zone: str, status: str) -> None:
        self._child(self._uribl, zone, status).inc()

    def greylist(self, outcome: str) -> None:
        self._child(self._greylist, outcome or "-").inc()

    # -- wiring ----------------------------------------------------------

    def attach(self, engine: Any, database: str | None = None,
               clock: Callable[[], float] = time.time) -> None:
        """Instrument an Engine without touching the checks' modules.

        Sets ``engine.metrics`` (read by the session and the adapter) and
        wraps the engine's hit recording and the DNSBL checker, and listens
        to the greylist's outcomes, so their results are counted as they pass.
        """
        engine.metrics = self
        record = engine.record

        def counted_record(hits: list[Any]) -> None:
            self.hits(hits)
            record(hits)
        engine.record = counted_record

        dnsbl = getattr(getattr(engine, "gates", None), "dnsbl", None)
        if dnsbl is not None and hasattr(dnsbl, "check"):
            check = dnsbl.check

            def counted_check(addr: str, deadline: float | None = None) -> Any:
                results = check(addr, deadline)
                for res in results:
                    self.dnsbl_result(res.zone.name, res.status, res.error)
                return results
            dnsbl.check = counted_check

        uribl = getattr(getattr(engine, "gates", None), "uribl", None)
        if uribl is not None:
            uribl.on_result = self.uribl_result

        greylist = getattr(engine, "greylist", None)
        if greylist is not None:
            greylist.on_outcome = self.greylist

        if self._collector is None:
            self._collector = _EngineCollector(engine, database, clock)
            self.registry.register(self._collector)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP listener; returns the bound port (0 picks one).

        Our own small WSGI server around prometheus_client's app, not its
        ``start_http_server``: that returns the server (needed for the bound
        port and for close) only from 0.17 on, and Debian 12 ships 0.16.
        """
        import socket
        import socketserver
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        from prometheus_client import make_wsgi_app

        class Server(socketserver.ThreadingMixIn, WSGIServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # one access line per scrape would drown the daemon's log

        try:
            self._server = make_server(host, port, make_wsgi_app(self.registry),
                                       Server, handler_class=QuietHandler)
        except OSError as exc:
            raise MilterguardError(f"metrics: cannot listen on {host}:{port}: {exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="metrics-http", daemon=True)
        self._thread.start()
        bound = int(self._server.server_address[1])
        log.info("event=metrics-listen addr=%s port=%d", host, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start_from_config(config: Any, engine: Any) -> Metrics | None:
    """Attach metrics to the engine and listen, if ``metrics.listen`` is set."""
    listen = config.section("metrics").listen_address("listen")
    if listen is None:
        return None
    metrics = Metrics()
    metrics.attach(engine, config.database)
    metrics.serve(*listen)
    return metrics
