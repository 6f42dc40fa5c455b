"""DNS blocklists (DNSBL) and allowlists queried at connect.

Each configured zone is asked in parallel under one deadline per stage. Only
an answer inside a zone's configured return codes counts as a listing: the
well-known disaster is Spamhaus answering 127.255.255.254 ("query through a
public resolver") and sites then rejecting all mail. Everything else
(unexpected codes, SERVFAIL, timeouts) is "unknown": logged and counted per
zone, never acted on. Zones are self-tested the RFC 5782 way (127.0.0.2 is
listed, 127.0.0.1 is not) at start and periodically; a failing zone is
suspended until it passes again.

Two ways to decide: ``immediate`` (a listing acts with its code's action)
or ``weighted`` (postscreen-style: weights of listings add up, allowlist
zones bring negative weights, and the sum against a threshold decides).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from milterguard.clientaddr import parse_client_ip
from milterguard.gates.dns import NODATA, NXDOMAIN, OK, DnsQuery, DnsResult
from milterguard.verdict import STRENGTH, Action, Finding, Reply, clean_reply_text
from milterguard.yamlsrc import LDict, LList

log = logging.getLogger("milterguard.dnsbl")

LISTED = "listed"
CLEAN = "clean"
UNKNOWN = "unknown"
SUSPENDED = "suspended"

#: Answers that are never a listing whatever a filter says: Spamhaus's error
#: range (127.255.255.0/24: 252 typo in zone, 254 public resolver, 255
#: excessive queries) and 127.0.0.1 (RFC 5782 reserves it).
ERROR_NETWORKS = (ipaddress.ip_network("127.255.255.0/24"),
                  ipaddress.ip_network("127.0.0.1/32"))
LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")

DEFAULT_REPLY = "554 5.7.1 Service unavailable; Client host [{addr}] blocked using {zone}{txt}"
_REPLY_RE = re.compile(r"^([45]\d\d) ([45]\.\d{1,3}\.\d{1,3}) (.+)$", re.S)
_ZONE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ACTIONS = {"reject": Action.REJECT, "tempfail": Action.TEMPFAIL, "accept": Action.ACCEPT}


def parse_reply(section: LDict, key: str, text: Any, rule: str | None = None) -> Reply:
    """``"554 5.7.1 text"`` from config into a Reply, or a ConfigError."""
    match = _REPLY_RE.match(text) if isinstance(text, str) else None
    if not match or match.group(1)[0] != match.group(2)[0]:
        raise section.error('must look like "554 5.7.1 text" (code and enhanced '
                            'code of the same class)', key, rule)
    return Reply(match.group(1), match.group(2), match.group(3))


def parse_action(section: LDict, key: str, value: Any, rule: str | None = None,
                 allowed: tuple[str, ...] = ("reject", "tempfail")) -> Action:
    if value not in allowed:
        raise section.error(f"must be one of {', '.join(allowed)}", key, rule)
    return _ACTIONS[value]


@dataclass(frozen=True)
class CodeFilter:
    """Which answers count as a listing, and what such a listing means.

    Forms: ``127.0.0.2`` (one code), ``127.0.0.2-127.0.0.11`` (a range),
    ``&0x04`` (bitmask over the last octet of a 127.0.0.0/24 answer, for
    zones that OR several lists into one answer).
    """

    text: str
    low: int = 0
    high: int = 0
    mask: int = 0
    category: str = "dnsbl"
    action: Action = Action.REJECT
    weight: float = 1.0

    def matches(self, answer: ipaddress.IPv4Address) -> bool:
        if self.mask:
            value = int(answer)
            return (value >> 8) == 0x7F0000 and bool(value & self.mask)
        return self.low <= int(answer) <= self.high


def parse_code(section: Any, key: Any, text: Any, rule: str) -> tuple[int, int, int]:
    """(low, high, mask) of a code filter text, or a ConfigError."""
    if isinstance(text, str):
        text = text.strip()
        try:
            if text.startswith("&"):
                mask = int(text[1:], 0)
                if 0 < mask <= 0xFF:
                    return 0, 0, mask
            elif "-" in text:
                first, last = (ipaddress.IPv4Address(p.strip()) for p in text.split("-", 1))
                if first <= last and first in LOOPBACK_NET and last in LOOPBACK_NET:
                    return int(first), int(last), 0
            else:
                one = ipaddress.IPv4Address(text)
                if one in LOOPBACK_NET:
                    return int(one), int(one), 0
        except ValueError:
            pass
    raise section.error("must be 127.0.0.N, a range 127.0.0.2-127.0.0.11 or a bitmask "
                        "&0xNN", key, rule)


@dataclass
class DnsblZone:
    """One configured zone: where to ask and which answers mean what."""

    name: str
    zone: str
    filters: tuple[CodeFilter, ...]
    ipv4: bool = True
    ipv6: bool = False
    reply: Reply = field(default_factory=lambda: parse_reply(LDict(), "reply", DEFAULT_REPLY))
    reply_name: str = ""     # what the reply calls the zone; hides a secret zone
    txt: bool = True         # fetch the TXT record for the reply text

    def query_name(self, addr: str) -> str | None:
        """``7.2.0.192.zone`` / 32 nibbles for IPv6; None if not asked."""
        ip = parse_client_ip(addr)
        if ip is None:
            return None
        if ip.version == 4:
            if not self.ipv4:
                return None
            return ".".join(reversed(str(ip).split("."))) + "." + self.zone
        if not self.ipv6:
            return None
        return ".".join(reversed(ip.exploded.replace(":", ""))) + "." + self.zone

    def classify(self, records: tuple[str, ...]) -> tuple[list[CodeFilter], list[str]]:
        """The filters that the answer hits, and the answers nothing explains."""
        hit: list[CodeFilter] = []
        strange: list[str] = []
        for text in records:
            try:
                answer = ipaddress.IPv4Address(text)
            except ValueError:
                strange.append(text)
                continue
            if any(answer in net for net in ERROR_NETWORKS):
                strange.append(text)
                continue
            matched = [f for f in self.filters if f.matches(answer)]
            if not matched:
                strange.append(text)
            for flt in matched:
                if flt not in hit:
                    hit.append(flt)
        return hit, strange

    def shown_name(self) -> str:
        return self.reply_name or self.zone

    def reply_for(self, addr: str, txt: str) -> Reply:
        shown = self.shown_name()
        if txt and self.reply_name:
            # A TXT record may echo the query name, secret key and all.
            txt = re.sub(re.escape(self.zone), shown, txt, flags=re.I)
        text = self.reply.text
        for key, value in (("{addr}", addr), ("{zone}", shown),
                           ("{txt}", "; " + txt if txt else "")):
            text = text.replace(key, value)
        if self.reply_name:
            text = re.sub(re.escape(self.zone), shown, text, flags=re.I)
        return Reply(self.reply.code, self.reply.xcode, clean_reply_text(text))


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
        weighted_action = parse_action(section, "weighted_action",
                                       section.get("weighted_action", "reject"))
        deadline = section.number("deadline", 2.0, 0.01, 60.0)
        self_test = section.flag("self_test", True)
        interval = section.number("self_test_interval", 900.0, 0.0, 7 * 86400.0)
        default_reply = section.get("reply", DEFAULT_REPLY)
        parse_reply(section, "reply", default_reply)
        zones_cfg = section.get("zones", [])
        if zones_cfg is None:
            zones_cfg = []
        if not isinstance(zones_cfg, list):
            raise section.error("must be a list of zones", "zones")
        zones: list[DnsblZone] = []
        seen: set[str] = set()
        for index, item in enumerate(zones_cfg):
            if not isinstance(item, dict):
                where = LDict()
                where.file = section.file
                where.line = zones_cfg.line_of(index) if isinstance(zones_cfg, LList) else 0
                raise where.error("each zone must be a mapping", f"zones[{index}]")
            zone = _parse_zone(item, default_reply)
            if zone.name in seen:
                raise item.error(f"duplicate zone name {zone.name!r}", "name", zone.name)
            seen.add(zone.name)
            zones.append(zone)
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
        return (_nibbles("::ffff:7f00:2", zone.zone), _nibbles("::ffff:7f00:1", zone.zone))

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
            elif not any(_is_listing_code(r) for r in positive.records):
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


def _is_listing_code(text: str) -> bool:
    try:
        answer = ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return answer in LOOPBACK_NET and not any(answer in n for n in ERROR_NETWORKS)


def _nibbles(addr: str, zone: str) -> str:
    ip = ipaddress.IPv6Address(addr)
    return ".".join(reversed(ip.exploded.replace(":", ""))) + "." + zone


def _parse_zone(item: LDict, default_reply: str) -> DnsblZone:
    """One zone; both modes read the same filters (the mode picks action or weight)."""
    name = item.get("name")
    if not isinstance(name, str) or not _ZONE_NAME_RE.match(name):
        raise item.error("must be a short name (letters, digits, - . _)", "name")
    zone = item.get("zone")
    if not isinstance(zone, str) or not zone.strip(".") or " " in zone:
        raise item.error("must be a DNS zone such as dnsbl.example", "zone", name)
    zone = zone.strip(".").lower()
    known = {"name", "zone", "codes", "category", "action", "weight", "ipv4", "ipv6",
             "reply", "reply_name", "txt"}
    for key in item:
        if key not in known:
            raise item.error(f"unknown key (known: {', '.join(sorted(known))})", key, name)
    flags = {}
    for key, default in (("ipv4", True), ("ipv6", False), ("txt", True)):
        value = item.get(key, default)
        if not isinstance(value, bool):
            raise item.error("must be true or false", key, name)
        flags[key] = value
    if not flags["ipv4"] and not flags["ipv6"]:
        raise item.error("a zone must list IPv4 or IPv6 addresses", "ipv4", name)
    category = item.get("category", "dnsbl")
    if not isinstance(category, str) or not category:
        raise item.error("must be a non-empty string", "category", name)
    action = parse_action(item, "action", item.get("action", "reject"), name,
                          ("reject", "tempfail", "accept"))
    weight = item.number("weight", 1.0, -1e9, 1e9, rule=name)
    reply_name = item.get("reply_name", "")
    if not isinstance(reply_name, str):
        raise item.error("must be a string", "reply_name", name)
    reply = parse_reply(item, "reply", item.get("reply", default_reply), name)
    codes = item.get("codes", ["127.0.0.2-127.0.0.254"])
    if not isinstance(codes, list) or not codes:
        raise item.error("must be a non-empty list of codes", "codes", name)
    filters: list[CodeFilter] = []
    for index, code in enumerate(codes):
        where: Any = item
        key: Any = "codes"
        entry = {"match": code} if not isinstance(code, dict) else code
        if isinstance(code, dict):
            where, key = code, "match"
            for k in code:
                if k not in ("match", "category", "action", "weight"):
                    raise code.error("unknown key (known: match, category, action, weight)",
                                     k, name)
        low, high, mask = parse_code(where, key, entry.get("match"), name)
        f_category = entry.get("category", category)
        if not isinstance(f_category, str) or not f_category:
            raise where.error("must be a non-empty string", "category", name)
        f_action = action
        if "action" in entry:
            f_action = parse_action(where, "action", entry["action"], name,
                                    ("reject", "tempfail", "accept"))
        f_weight = weight
        if "weight" in entry:
            f_weight = where.number("weight", weight, -1e9, 1e9, rule=name)
        filters.append(CodeFilter(str(entry.get("match")), low, high, mask,
                                  f_category, f_action, f_weight))
    return DnsblZone(name, zone, tuple(filters), flags["ipv4"], flags["ipv6"],
                     reply, reply_name, flags["txt"])
