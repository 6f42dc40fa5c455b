"""DNS blocklists (DNSBL) and allowlists queried at connect.

Each configured zone is asked in parallel under one deadline per stage. Only
an answer inside a zone's configured return codes counts as a listing: the
well-known disaster is Spamhaus answering 127.255.255.254 ("query through a
public resolver") and sites then rejecting all mail. Everything else
(unexpected codes, SERVFAIL, timeouts) is "unknown": logged and counted per
zone, never acted on (which answers count is the zone configuration's
business: dnsbl_zones.py). Zones are self-tested the RFC 5782 way
(127.0.0.2 is listed, 127.0.0.1 is not) at start and periodically; a
failing zone is suspended until it passes again.

Two ways to decide: ``immediate`` (a listing acts with its code's action)
or ``weighted`` (postscreen-style: weights of listings add up, allowlist
zones bring negative weights, and the sum against a threshold decides).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from milterguard.gates.dns import NODATA, NXDOMAIN, OK, DnsQuery, DnsResult
from milterguard.gates.dnsbl_zones import (DEFAULT_REPLY, CodeFilter, DnsblZone, is_listing_code,
                                           nibble_name, parse_zones, read_action, read_reply)
from milterguard.verdict import STRENGTH, Action, Finding

log = logging.getLogger("milterguard.dnsbl")

LISTED = "listed"
CLEAN = "clean"
UNKNOWN = "unknown"
SUSPENDED = "suspended"


@dataclass
class ZoneResult:
    """What one zone said about one client."""

    zone: DnsblZone
    status: str
    filters: tuple[CodeFilter, ...] = ()
    codes: tuple[str, ...] = ()
    txt: str = ""
    error: str = ""


@dataclass
class ZoneCounters:
    queries: int = 0
    listed: int = 0
    clean: int = 0
    unknown: int = 0
    suspended: int = 0
    self_test_failures: int = 0


class DnsblChecker:
    """Queries the zones in parallel, self-tests them, and turns results into findings."""

    def __init__(self, zones: list[DnsblZone], query: DnsQuery, *,
                 mode: str = "immediate", threshold: float = 1.0,
                 weighted_action: Action = Action.REJECT,
                 deadline: float = 2.0, self_test: bool = True,
                 self_test_interval: float = 900.0, self_test_poll: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.zones = zones
        self.query = query
        self.mode = mode
        self.threshold = threshold
        self.weighted_action = weighted_action
        self.deadline = deadline
        self.self_test_enabled = self_test
        self.self_test_interval = self_test_interval
        self.self_test_poll = self_test_poll
        self.clock = clock
        self.counters = {z.name: ZoneCounters() for z in zones}
        self.suspended: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- configuration -------------------------------------------------------

    @classmethod
    def from_config(cls, config: Any, query: DnsQuery,
                    clock: Callable[[], float] = time.time) -> "DnsblChecker":
        section = config.section("dnsbl")
        mode = section.get("mode", "immediate")
        if mode not in ("immediate", "weighted"):
            raise section.error("must be immediate or weighted", "mode")
        threshold = section.number("threshold", 1.0, -1e9, 1e9)
        weighted_action = read_action(section, "weighted_action",
                                       section.get("weighted_action", "reject"))
        deadline = section.number("deadline", 2.0, 0.01, 60.0)
        self_test = section.flag("self_test", True)
        interval = section.number("self_test_interval", 900.0, 0.0, 7 * 86400.0)
        default_reply = section.get("reply", DEFAULT_REPLY)
        read_reply(section, "reply", default_reply)
        zones = parse_zones(section, default_reply)
        return cls(zones, query, mode=mode, threshold=threshold,
                   weighted_action=weighted_action, deadline=deadline,
                   self_test=self_test, self_test_interval=interval,
                   clock=clock)

    # -- querying ------------------------------------------------------------

    def check(self, addr: str, deadline: float | None = None) -> list[ZoneResult]:
        """Ask every active zone about ``addr``, all within one deadline.

        All A queries leave at once (one socket, see DnsQuery.lookup_many);
        the TXT records of the zones that list the client follow, in a
        second batch, within what is left of the deadline.
        """
        budget = self.deadline if deadline is None else deadline
        end = time.monotonic() + budget
        results: list[ZoneResult] = []
        asked: list[tuple[DnsblZone, str]] = []
        for zone in self.zones:
            qname = zone.query_name(addr)
            if qname is None:
                continue
            if zone.name in self.suspended:
                self._count(zone.name, SUSPENDED)
                results.append(ZoneResult(zone, SUSPENDED))
                continue
            asked.append((zone, qname))
        if not asked:
            return results
        answers = self.query.lookup_many([q for _, q in asked], "A", budget)
        decided: list[ZoneResult] = []
        want_txt: list[tuple[int, str]] = []
        for (zone, qname), answer in zip(asked, answers):
            result = self._classify(zone, answer)
            if result.status == LISTED and zone.txt:
                want_txt.append((len(decided), qname))
            decided.append(result)
        if want_txt:
            remaining = end - time.monotonic()
            txts = self.query.lookup_many([q for _, q in want_txt], "TXT", remaining)
            for (index, _), txt in zip(want_txt, txts):
                if txt.status == OK and txt.records:
                    decided[index].txt = txt.records[0]
        for result in decided:
            self._count(result.zone.name, result.status)
            if result.status == UNKNOWN:
                log.info("event=dnsbl-unknown zone=%s client=%s error=%s codes=%s",
                         result.zone.name, addr, result.error,
                         ",".join(result.codes) or "-")
        return results + decided

    def _classify(self, zone: DnsblZone, answer: DnsResult) -> ZoneResult:
        if answer.status in (NXDOMAIN, NODATA):
            return ZoneResult(zone, CLEAN)
        if answer.status != OK:
            return ZoneResult(zone, UNKNOWN, error=answer.error)
        hit, strange = zone.classify(answer.records)
        if not hit:
            return ZoneResult(zone, UNKNOWN, codes=answer.records, error="unexpected-code")
        if strange:
            log.info("event=dnsbl-strange-code zone=%s codes=%s", zone.name, ",".join(strange))
        return ZoneResult(zone, LISTED, tuple(hit), answer.records)

    def _count(self, name: str, status: str) -> None:
        with self._lock:
            counters = self.counters[name]
            if status != SUSPENDED:
                counters.queries += 1
            setattr(counters, status, getattr(counters, status) + 1)

    # -- deciding ------------------------------------------------------------

    def findings(self, addr: str, results: list[ZoneResult]) -> list[Finding]:
        listed = [r for r in results if r.status == LISTED]
        if not listed:
            return []
        if self.mode == "weighted":
            return self._weighted(addr, listed)
        if any(f.action == Action.ACCEPT for r in listed for f in r.filters):
            names = ",".join(r.zone.name for r in listed)
            log.info("event=dnsbl-allowlisted client=%s zones=%s", addr, names)
            return []
        out = []
        for result in listed:
            strongest = max(result.filters, key=lambda f: STRENGTH[f.action])
            out.append(Finding(
                rule_id=f"dnsbl:{result.zone.name}", category=strongest.category,
                action=strongest.action, reply=result.zone.reply_for(addr, result.txt),
                detail=f"zone={result.zone.name} codes={','.join(result.codes)}"))
        return out

    def _weighted(self, addr: str, listed: list[ZoneResult]) -> list[Finding]:
        parts: list[tuple[ZoneResult, float]] = []
        for result in listed:
            parts.append((result, sum(f.weight for f in result.filters)))
        total = sum(w for _, w in parts)
        detail = "score=%g zones=%s" % (
            total, ",".join(f"{r.zone.name}:{w:g}" for r, w in parts))
        if total < self.threshold:
            log.info("event=dnsbl-below-threshold client=%s %s threshold=%g",
                     addr, detail, self.threshold)
            return []
        top, _ = max(parts, key=lambda p: p[1])
        category = max(top.filters, key=lambda f: f.weight).category
        return [Finding(rule_id=f"dnsbl:{top.zone.name}", category=category,
                        action=self.weighted_action, reply=top.zone.reply_for(addr, top.txt),
                        score=total, detail=detail)]

    # -- self-test -----------------------------------------------------------

    def _test_points(self, zone: DnsblZone) -> tuple[str, str]:
        """RFC 5782 test points: 127.0.0.2 must be listed, 127.0.0.1 must not."""
        if zone.ipv4:
            return (f"2.0.0.127.{zone.zone}", f"1.0.0.127.{zone.zone}")
        # IPv6-only zones: ::FFFF:7F00:2 and ::FFFF:7F00:1, as nibbles
        # (query_name would turn these IPv4-mapped addresses into IPv4).
        return (nibble_name("::ffff:7f00:2", zone.zone), nibble_name("::ffff:7f00:1", zone.zone))

    def self_test(self) -> dict[str, tuple[bool, str]]:
        """Test every zone once, all test points in one batch; no cache."""
        points = [self._test_points(z) for z in self.zones]
        names = [p[0] for p in points] + [p[1] for p in points]
        answers = self.query.lookup_many(names, "A", self.deadline, use_cache=False)
        count = len(self.zones)
        out: dict[str, tuple[bool, str]] = {}
        for index, zone in enumerate(self.zones):
            positive, negative = answers[index], answers[count + index]
            if positive.status != OK:
                out[zone.name] = (False, f"test-point-127.0.0.2={positive.status}")
            elif not any(is_listing_code(r) for r in positive.records):
                out[zone.name] = (False, "test-point-127.0.0.2-codes="
                                  + ",".join(positive.records))
            elif negative.status not in (NXDOMAIN, NODATA):
                out[zone.name] = (False, f"test-point-127.0.0.1={negative.status}")
            else:
                out[zone.name] = (True, "ok")
        return out

    def run_self_tests(self) -> dict[str, bool]:
        """Test every zone once; suspend a failing zone, resume a passing one."""
        if not self.zones:
            return {}
        outcome = self.self_test()
        with self._lock:
            for name, (ok, why) in outcome.items():
                was = name in self.suspended
                if ok and was:
                    self.suspended.discard(name)
                    log.warning("event=dnsbl-resumed zone=%s", name)
                elif not ok:
                    self.counters[name].self_test_failures += 1
                    if not was:
                        self.suspended.add(name)
                        log.warning("event=dnsbl-suspended zone=%s reason=%s", name, why)
        return {name: ok for name, (ok, _) in outcome.items()}

    def start(self) -> None:
        """Self-test now and then every interval, in a background thread."""
        if not self.self_test_enabled or not self.zones or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._self_test_loop,
                                        name="dnsbl-selftest", daemon=True)
        self._thread.start()

    def _self_test_loop(self) -> None:
        next_due = self.clock()
        poll = self.self_test_poll
        if self.self_test_interval > 0:
            poll = min(poll, self.self_test_interval)
        while not self._stop.is_set():
            if self.clock() >= next_due:
                try:
                    self.run_self_tests()
                except Exception:
                    log.exception("event=dnsbl-self-test-error")
                if self.self_test_interval <= 0:
                    return
                next_due = self.clock() + self.self_test_interval
            self._stop.wait(poll)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.deadline * 2 + 5)
            self._thread = None

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: vars(c).copy() for name, c in self.counters.items()}
