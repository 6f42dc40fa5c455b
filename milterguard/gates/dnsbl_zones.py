"""DNSBL zone configuration: where to ask, and which answers mean what.

A zone's return-code filters decide what counts as a listing; everything
else a zone answers is "unknown" to the checker (dnsbl.py), never a
listing. The well-known disaster is Spamhaus answering 127.255.255.254
("query through a public resolver") and sites then rejecting all mail, so
the error codes below never match whatever a filter says. This module only
reads the ``dnsbl:`` section and names queries; it sends nothing.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from milterguard.clientaddr import parse_client_ip
from milterguard.verdict import Action, Reply, clean_reply_text
from milterguard.yamlsrc import LDict, LList

#: Answers that are never a listing whatever a filter says: Spamhaus's error
#: range (127.255.255.0/24: 252 typo in zone, 254 public resolver, 255
#: excessive queries) and 127.0.0.1 (RFC 5782 reserves it).
ERROR_NETWORKS = (ipaddress.ip_network("127.255.255.0/24"),
                  ipaddress.ip_network("127.0.0.1/32"))
LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")

DEFAULT_REPLY = "554 5.7.1 Service unavailable; Client host [{addr}] blocked using {zone}{txt}"
_REPLY_RE = re.compile(r"^([45]\d\d) ([45]\.\d{1,3}\.\d{1,3}) (.+)$", re.S)
_ZONE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ACTIONS = {"reject": Action.REJECT, "tempfail": Action.TEMPFAIL, "accept": Action.ACCEPT,
            "score": Action.CONTINUE}
#: What a DNSBL zone's mapping may hold (the URI blocklists read other keys).
ZONE_KEYS = frozenset({"name", "zone", "codes", "category", "action", "weight", "ipv4", "ipv6",
                       "reply", "reply_name", "txt"})
ZONE_ACTIONS = ("reject", "tempfail", "accept")


def read_reply(section: LDict, key: str, text: Any, rule: str | None = None) -> Reply:
    """``"554 5.7.1 text"`` from config into a Reply, or a ConfigError."""
    match = _REPLY_RE.match(text) if isinstance(text, str) else None
    if not match or match.group(1)[0] != match.group(2)[0]:
        raise section.error('must look like "554 5.7.1 text" (code and enhanced '
                            'code of the same class)', key, rule)
    return Reply(match.group(1), match.group(2), match.group(3))


def read_action(section: LDict, key: str, value: Any, rule: str | None = None,
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
    reply: Reply = field(default_factory=lambda: read_reply(LDict(), "reply", DEFAULT_REPLY))
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
        return nibble_name(ip.exploded, self.zone)

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
        for key, value in (("{addr}", addr), ("{domain}", addr), ("{zone}", shown),
                           ("{txt}", "; " + txt if txt else "")):
            text = text.replace(key, value)
        if self.reply_name:
            text = re.sub(re.escape(self.zone), shown, text, flags=re.I)
        return Reply(self.reply.code, self.reply.xcode, clean_reply_text(text))


def is_listing_code(text: str) -> bool:
    """A 127.0.0.0/8 answer outside the error codes: what a test point must return."""
    try:
        answer = ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return answer in LOOPBACK_NET and not any(answer in n for n in ERROR_NETWORKS)


def nibble_name(addr: str, zone: str) -> str:
    """The RFC 5782 query name of an IPv6 address: 32 reversed nibbles."""
    ip = ipaddress.IPv6Address(addr)
    return ".".join(reversed(ip.exploded.replace(":", ""))) + "." + zone


def parse_zone(item: LDict, default_reply: str, known: frozenset[str] = ZONE_KEYS,
               actions: tuple[str, ...] = ZONE_ACTIONS,
               default_category: str = "dnsbl") -> DnsblZone:
    """One zone; both modes read the same filters (the mode picks action or weight).

    ``known``, ``actions`` and ``default_category`` let the URI blocklists
    (gates/uribl.py) read their zones with the same code filters."""
    name = item.get("name")
    if not isinstance(name, str) or not _ZONE_NAME_RE.match(name):
        raise item.error("must be a short name (letters, digits, - . _)", "name")
    zone = item.get("zone")
    if not isinstance(zone, str) or not zone.strip(".") or " " in zone:
        raise item.error("must be a DNS zone such as dnsbl.example", "zone", name)
    zone = zone.strip(".").lower()
    for key in item:
        if key not in known:
            raise item.unknown_key(key, known, name)
    flags = {}
    for key, default in (("ipv4", True), ("ipv6", False), ("txt", "txt" in known)):
        value = item.get(key, default)
        if not isinstance(value, bool):
            raise item.error("must be true or false", key, name)
        flags[key] = value
    if not flags["ipv4"] and not flags["ipv6"]:
        raise item.error("a zone must list IPv4 or IPv6 addresses", "ipv4", name)
    category = item.get("category", default_category)
    if not isinstance(category, str) or not category:
        raise item.error("must be a non-empty string", "category", name)
    action = read_action(item, "action", item.get("action", "reject"), name, actions)
    weight = item.number("weight", 1.0, -1e9, 1e9, rule=name)
    reply_name = item.get("reply_name", "")
    if not isinstance(reply_name, str):
        raise item.error("must be a string", "reply_name", name)
    reply = read_reply(item, "reply", item.get("reply", default_reply), name)
    codes = item.get("codes", ["127.0.0.2-127.0.0.254"])
    if not isinstance(codes, list) or not codes:
        raise item.error("must be a non-empty list of codes", "codes", name)
    filters: list[CodeFilter] = []
    for code in codes:
        where: LDict = item
        field = "codes"
        entry: dict[str, Any] = {"match": code} if not isinstance(code, LDict) else code
        if isinstance(code, LDict):
            where, field = code, "match"
            for k in code:
                if k not in ("match", "category", "action", "weight"):
                    raise code.unknown_key(k, ("match", "category", "action", "weight"), name)
        low, high, mask = parse_code(where, field, entry.get("match"), name)
        f_category = entry.get("category", category)
        if not isinstance(f_category, str) or not f_category:
            raise where.error("must be a non-empty string", "category", name)
        f_action = action
        if "action" in entry:
            f_action = read_action(where, "action", entry["action"], name, actions)
        f_weight = weight
        if "weight" in entry:
            f_weight = where.number("weight", weight, -1e9, 1e9, rule=name)
        filters.append(CodeFilter(str(entry.get("match")), low, high, mask,
                                  f_category, f_action, f_weight))
    return DnsblZone(name, zone, tuple(filters), flags["ipv4"], flags["ipv6"],
                     reply, reply_name, flags["txt"])


def parse_zones(section: LDict, default_reply: str, **zone_options: Any) -> list[DnsblZone]:
    """The ``zones:`` list of the ``dnsbl:`` (or ``uribl:``) section, names
    unique; ``zone_options`` go to parse_zone."""
    zones_cfg = section.get("zones", [])
    if zones_cfg is None:
        zones_cfg = []
    if not isinstance(zones_cfg, list):
        raise section.error("must be a list of zones", "zones")
    zones: list[DnsblZone] = []
    seen: set[str] = set()
    for index, item in enumerate(zones_cfg):
        if not isinstance(item, LDict):
            where = LDict()
            where.file = section.file
            where.line = zones_cfg.line_of(index) if isinstance(zones_cfg, LList) else 0
            raise where.error("each zone must be a mapping", f"zones[{index}]")
        zone = parse_zone(item, default_reply, **zone_options)
        if zone.name in seen:
            raise item.error(f"duplicate zone name {zone.name!r}", "name", zone.name)
        seen.add(zone.name)
        zones.append(zone)
    return zones
