"""URI blocklists (DBL/SURBL/URIBL style): the domains a message links to.

Spam changes its sending addresses by the minute but must link to a site
it controls, so lists of the registered domains (and bare IP addresses)
that spam links to catch what connect-time DNSBLs miss. At end of message
the hosts of the body's links (decoded views, HTML as rendered: the same
URLs rules read) are cut to their registered domain with the Public Suffix
List (content/suffixes.py), IP literals reversed, and every zone asked
about every name at once, under one deadline, as the connect DNSBLs are.

The answers go through the DNSBL code filters (single codes, ranges,
bitmasks); an error answer (127.255.255.x, 127.0.0.1, anything outside the
zone's codes, SERVFAIL, a timeout) never counts: it is logged and counted.
A zone that lists a link either acts (``action: reject``/``tempfail``) or
adds its ``weight`` to the message's score (``action: score``), so a weak
list helps without deciding alone.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from milterguard.content.suffixes import DEFAULT_PATH, suffix_list
from milterguard.content.views import MessageViews
from milterguard.errors import MilterguardError
from milterguard.gates.dns import NODATA, NXDOMAIN, OK, DnsQuery
from milterguard.gates.dnsbl import ZoneCounters
from milterguard.gates.dnsbl_zones import (ZONE_KEYS, CodeFilter, DnsblZone, parse_zones,
                                           read_reply)
from milterguard.verdict import STRENGTH, Action, Finding

log = logging.getLogger("milterguard.uribl")

DEFAULT_REPLY = "554 5.7.1 Message rejected: it links to {domain}, listed by {zone}"
_KEYS = (ZONE_KEYS - {"ipv4", "ipv6", "txt"}) | {"domains", "ips"}


@dataclass
class UriZone:
    zone: DnsblZone          # name, zone, code filters, reply
    domains: bool = True     # ask registered domains
    ips: bool = False        # ask IPv4 literals (reversed, as SURBL does)


_LOCAL_NETS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "224.0.0.0/3"))


def _local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Addresses no list can know (private, loopback, link-local, multicast)."""
    return any(ip in net for net in _LOCAL_NETS)


def link_names(views: MessageViews, suffixes: Any, skip: frozenset[str],
               limit: int) -> tuple[list[str], list[str]]:
    """(registered domains, IPv4 literals) of the message's links, first
    ``limit`` distinct ones in order of appearance."""
    domains: list[str] = []
    ips: list[str] = []
    seen: set[str] = set()
    for host in views.texts("url-hosts"):
        if len(domains) + len(ips) >= limit:
            break
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            if ip.version == 4 and host not in seen and not _local(ip):
                seen.add(host)
                ips.append(host)
            continue
        domain = suffixes.registered_domain(host)
        if domain is None or domain in seen or domain in skip:
            continue
        seen.add(domain)
        try:
            domain.encode("idna")
        except UnicodeError:
            continue     # not a name DNS could carry
        domains.append(domain)
    return domains, ips


class UriblChecker:
    """Asks the URI zones about a message's links; findings for the session."""

    def __init__(self, zones: list[UriZone], query: DnsQuery, suffixes: Any, *,
                 deadline: float = 2.0, max_names: int = 20,
                 skip_domains: frozenset[str] = frozenset()) -> None:
        self.zones = zones
        self.query = query
        self.suffixes = suffixes
        self.deadline = deadline
        self.max_names = max_names
        self.skip_domains = skip_domains
        self.counters = {z.zone.name: ZoneCounters() for z in zones}
        self._lock = threading.Lock()
        #: Called with (zone, result) for every answer (the Prometheus metrics).
        self.on_result: Callable[[str, str], None] | None = None

    @classmethod
    def from_config(cls, config: Any, query: DnsQuery) -> "UriblChecker | None":
        """None when no zone is configured (nothing to ask, no list to load)."""
        section = config.section("uribl")
        deadline = section.number("deadline", 2.0, 0.01, 60.0)
        max_names = int(section.number("max_names", 20, 1, 1000))
        default_reply = section.get("reply", DEFAULT_REPLY)
        read_reply(section, "reply", default_reply)
        skip = section.get("skip_domains") or []
        if not isinstance(skip, list) or not all(isinstance(d, str) for d in skip):
            raise section.error("must be a list of domains", "skip_domains")
        parsed = parse_zones(section, default_reply, known=_KEYS,
                             actions=("reject", "tempfail", "score"), default_category="uribl")
        zones: list[UriZone] = []
        for zone, item in zip(parsed, section.get("zones") or []):
            flags = {}
            for key, default in (("domains", True), ("ips", False)):
                value = item.get(key, default)
                if not isinstance(value, bool):
                    raise item.error("must be true or false", key, zone.name)
                flags[key] = value
            zones.append(UriZone(zone, flags["domains"], flags["ips"]))
        if not zones:
            return None
        path = section.get("public_suffix_list", DEFAULT_PATH)
        try:
            suffixes = suffix_list(str(path))
        except MilterguardError as exc:
            raise section.error(str(exc), "public_suffix_list") from None
        return cls(zones, query, suffixes, deadline=deadline, max_names=max_names,
                   skip_domains=frozenset(d.lower().strip(".") for d in skip))

    def check(self, views: MessageViews) -> list[Finding]:
        domains, ips = link_names(views, self.suffixes, self.skip_domains, self.max_names)
        if not domains and not ips:
            return []
        asked: list[tuple[UriZone, str, str]] = []   # zone, listed name, query name
        for uzone in self.zones:
            if uzone.domains:
                asked += [(uzone, d, f"{d.encode('idna').decode('ascii')}.{uzone.zone.zone}")
                          for d in domains]
            if uzone.ips:
                asked += [(uzone, ip, ".".join(reversed(ip.split("."))) + "." + uzone.zone.zone)
                          for ip in ips]
        if not asked:
            return []
        answers = self.query.lookup_many([q for _, _, q in asked], "A", self.deadline)
        listed: dict[str, tuple[UriZone, str, list[CodeFilter], tuple[str, ...]]] = {}
        for (uzone, name, _), answer in zip(asked, answers):
            zname = uzone.zone.name
            if answer.status in (NXDOMAIN, NODATA):
                self._count(zname, "clean")
                continue
            if answer.status != OK:
                self._count(zname, "unknown")
                log.info("event=uribl-unknown zone=%s name=%s error=%s", zname, name, answer.error)
                continue
            hit, strange = uzone.zone.classify(answer.records)
            if not hit:
                self._count(zname, "unknown")
                log.info("event=uribl-unknown zone=%s name=%s error=unexpected-code codes=%s",
                         zname, name, ",".join(answer.records))
                continue
            self._count(zname, "listed")
            if zname not in listed:      # a zone counts once per message
                listed[zname] = (uzone, name, hit, answer.records)
        return [self._finding(*entry) for entry in listed.values()]

    def _finding(self, uzone: UriZone, name: str, filters: list[CodeFilter],
                 codes: tuple[str, ...]) -> Finding:
        strongest = max(filters, key=lambda f: STRENGTH[f.action])
        detail = f"zone={uzone.zone.name} name={name} codes={','.join(codes)}"
        rule_id = f"uribl:{uzone.zone.name}"
        if strongest.action == Action.CONTINUE:
            return Finding(rule_id=rule_id, category=strongest.category,
                           score=max(f.weight for f in filters), detail=detail)
        return Finding(rule_id=rule_id, category=strongest.category, action=strongest.action,
                       reply=uzone.zone.reply_for(name, ""), detail=detail)

    def _count(self, name: str, status: str) -> None:
        with self._lock:
            counters = self.counters[name]
            counters.queries += 1
            setattr(counters, status, getattr(counters, status) + 1)
        if self.on_result is not None:
            self.on_result(name, status)

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: dict(vars(c)) for name, c in self.counters.items()}
