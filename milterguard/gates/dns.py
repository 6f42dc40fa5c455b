"""A small DNS resolver wrapper: every lookup ends in a result, never a raise.

Gates must never reject good mail because DNS misbehaved, so timeouts,
SERVFAIL, REFUSED, malformed answers and socket errors all become the status
``unknown``; only an authoritative NXDOMAIN or an empty answer (NODATA) say
"does not exist". Answers are cached for their TTL, clamped to a floor (so a
TTL of 0 does not turn every connection into a query) and a cap (so a stale
listing does not live for days).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from milterguard.yamlsrc import LDict

log = logging.getLogger("milterguard.dns")

OK = "ok"              # at least one record of the asked type
NXDOMAIN = "nxdomain"  # the name does not exist
NODATA = "nodata"      # the name exists, but has no record of this type
UNKNOWN = "unknown"    # timeout, SERVFAIL, any error: we do not know


@dataclass(frozen=True)
class DnsResult:
    """The outcome of one lookup. ``records`` are rdata in text form."""

    status: str
    records: tuple[str, ...] = ()
    ttl: int = 0
    error: str = ""          # short reason for "unknown" (for logs, never replies)

    @property
    def exists(self) -> bool:
        return self.status == OK


@dataclass
class ResolverSettings:
    """What the ``dns:`` config section says."""

    nameservers: tuple[str, ...] = ()   # empty: /etc/resolv.conf
    port: int = 53
    timeout: float = 2.0                # per lookup, all retries included
    cache: bool = True
    min_ttl: int = 60
    max_ttl: int = 3600
    cache_size: int = 10000

    @classmethod
    def from_section(cls, section: LDict) -> "ResolverSettings":
        out = cls()
        servers = section.get("nameservers", [])
        if servers is None:
            servers = []
        if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
            raise section.error("must be a list of IP addresses", "nameservers")
        out.nameservers = tuple(servers)
        out.port = section.integer("port", 53, 1, 65535)
        out.timeout = section.number("timeout", 2.0, 0.01, 60.0, "seconds")
        out.cache = section.flag("cache", True)
        out.min_ttl = section.integer("cache_min_ttl", 60, 0, 86400)
        out.max_ttl = section.integer("cache_max_ttl", 3600, 0, 7 * 86400)
        if out.max_ttl < out.min_ttl:
            raise section.error("must not be smaller than cache_min_ttl", "cache_max_ttl")
        out.cache_size = section.integer("cache_size", 10000, 0, 10_000_000)
        return out


class DnsQuery:
    """Thread-safe lookups with a TTL cache; the clock is injectable for tests."""

    def __init__(self, settings: ResolverSettings | None = None,
                 resolver: dns.resolver.Resolver | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or ResolverSettings()
        if resolver is None:
            if self.settings.nameservers:
                resolver = dns.resolver.Resolver(configure=False)
                resolver.nameservers = list(self.settings.nameservers)
            else:
                resolver = dns.resolver.Resolver()
            resolver.port = self.settings.port
        # One try per server within the lifetime; dnspython would otherwise
        # retry a SERVFAILing server until the lifetime runs out.
        resolver.timeout = self.settings.timeout
        resolver.lifetime = self.settings.timeout
        resolver.retry_servfail = False
        self.resolver = resolver
        self.clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[float, DnsResult]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Any, resolver: dns.resolver.Resolver | None = None,
                    clock: Callable[[], float] = time.time) -> "DnsQuery":
        return cls(ResolverSettings.from_section(config.section("dns")), resolver, clock)

    def lookup(self, name: str, rdtype: str, timeout: float | None = None,
               use_cache: bool = True) -> DnsResult:
        """Look ``name`` up; ``timeout`` (seconds) bounds this call.

        ``use_cache=False`` is for self-tests, which must see the server's
        answer of now.
        """
        key = (name.lower().rstrip("."), rdtype.upper())
        cached = self._cached(key) if use_cache else None
        if cached is not None:
            return cached
        result = self._query(name, rdtype, self.settings.timeout if timeout is None else timeout)
        if result.status == UNKNOWN:
            log.info("event=dns-unknown name=%s type=%s error=%s", name, rdtype, result.error)
        else:
            self._store(key, result)
        return result

    def lookup_many(self, names: list[str], rdtype: str, timeout: float,
                    use_cache: bool = True) -> list[DnsResult]:
        """Look many names up at once, all within ``timeout``; results in order.

        A and TXT go out as raw UDP packets over one socket and are collected
        with select(): DNSBL lookups are many small queries, and with a
        resolver close by the per-query CPU of a full resolver object (and
        of a thread per query) costs more than the network. Truncated
        answers and other types take the full resolver.
        """
        end = time.monotonic() + timeout
        out: list[DnsResult | None] = [None] * len(names)
        keys = [(n.lower().rstrip("."), rdtype.upper()) for n in names]
        todo: list[int] = []
        for index, key in enumerate(keys):
            cached = self._cached(key) if use_cache else None
            if cached is not None:
                out[index] = cached
            else:
                todo.append(index)
        if todo:
            if rdtype.upper() in _FAST_TYPES:
                fresh = self._batch([names[i] for i in todo], rdtype.upper(), end)
            else:
                fresh = [self._query(names[i], rdtype, end - time.monotonic()) for i in todo]
            for index, result in zip(todo, fresh):
                if result.status == UNKNOWN and result.error in ("truncated", "bad-name"):
                    # TCP for big answers, IDNA for non-ASCII names: the full resolver.
                    result = self._query(names[index], rdtype, end - time.monotonic())
                if result.status == UNKNOWN:
                    log.info("event=dns-unknown name=%s type=%s error=%s",
                             names[index], rdtype, result.error)
                else:
                    self._store(keys[index], result)
                out[index] = result
        return [r if r is not None else DnsResult(UNKNOWN, error="internal") for r in out]

    def _batch(self, names: list[str], rdtype: str, end: float) -> list[DnsResult]:
        servers = [str(ns) for ns in self.resolver.nameservers]
        results: list[DnsResult] = [DnsResult(UNKNOWN, error="timeout")] * len(names)
        targets = []
        for server in servers:
            try:
                targets.append((str(ipaddress.ip_address(server)), self.resolver.port))
            except ValueError:
                continue  # DoH/DoT nameserver objects: not for the raw path
        if not targets:
            return [DnsResult(UNKNOWN, error="no-nameserver")] * len(names)
        family = socket.AF_INET6 if ":" in targets[0][0] else socket.AF_INET
        targets = [t for t in targets if (":" in t[0]) == (family == socket.AF_INET6)]
        qtype = _FAST_TYPES[rdtype]
        pending: dict[int, int] = {}         # query id -> index
        packets: dict[int, bytes] = {}
        ids = iter(_unique_ids(len(names)))
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            return [DnsResult(UNKNOWN, error=type(exc).__name__)] * len(names)
        with sock:
            sock.setblocking(False)
            for index, name in enumerate(names):
                try:
                    packet = _query_packet(qid := next(ids), name, qtype)
                except ValueError:
                    results[index] = DnsResult(UNKNOWN, error="bad-name")
                    continue
                pending[qid] = index
                packets[qid] = packet
                _send(sock, packet, targets[0])
            # Unanswered queries go once more, to the next server, halfway
            # through (UDP loses packets; a second server may be alive).
            resend_at = time.monotonic() + (end - time.monotonic()) / 2
            resent = False
            while pending:
                now = time.monotonic()
                if now >= end:
                    break
                if not resent and now >= resend_at:
                    resent = True
                    target = targets[1 % len(targets)]
                    for qid in pending:
                        _send(sock, packets[qid], target)
                wait = (end if resent else min(end, resend_at)) - now
                ready, _, _ = select.select([sock], [], [], max(0.0, wait))
                if not ready:
                    continue
                while True:
                    try:
                        data, peer = sock.recvfrom(4096)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # ICMP unreachable etc.: wait for the deadline
                    if (peer[0], peer[1]) not in targets or len(data) < 12:
                        continue
                    qid = struct.unpack_from("!H", data)[0]
                    index = pending.get(qid)
                    if index is None:
                        continue
                    parsed = _parse_response(data, names[index], qtype)
                    if parsed is None:
                        continue  # not an answer to our question: keep waiting
                    del pending[qid]
                    results[index] = parsed
        return results

    def _query(self, name: str, rdtype: str, timeout: float) -> DnsResult:
        if timeout <= 0:
            return DnsResult(UNKNOWN, error="deadline")
        try:
            answer = self.resolver.resolve(name, rdtype, lifetime=timeout,
                                           raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as exc:
            return DnsResult(NXDOMAIN, ttl=_negative_ttl(exc))
        except dns.resolver.LifetimeTimeout:
            return DnsResult(UNKNOWN, error="timeout")
        except dns.resolver.NoNameservers:
            return DnsResult(UNKNOWN, error="servfail")
        except dns.exception.DNSException as exc:
            return DnsResult(UNKNOWN, error=type(exc).__name__)
        except (OSError, ValueError) as exc:
            return DnsResult(UNKNOWN, error=type(exc).__name__)
        if answer.rrset is None:
            return DnsResult(NODATA, ttl=_soa_ttl(answer.response))
        records = tuple(_rdata_text(rdata) for rdata in answer.rrset)
        return DnsResult(OK, records, answer.rrset.ttl)

    def _cached(self, key: tuple[str, str]) -> DnsResult | None:
        if not self.settings.cache:
            return None
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._cache[key]
                return None
            return entry[1]

    def _store(self, key: tuple[str, str], result: DnsResult) -> None:
        if not self.settings.cache or self.settings.cache_size == 0:
            return
        ttl = min(max(result.ttl, self.settings.min_ttl), self.settings.max_ttl)
        if ttl <= 0:
            return
        with self._lock:
            self._cache[key] = (self.clock() + ttl, result)
            self._cache.move_to_end(key)
            while len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()


_FAST_TYPES = {"A": 1, "TXT": 16}
_SOA = 6


def _unique_ids(count: int) -> list[int]:
    """Distinct random query ids (unpredictable, against spoofed answers)."""
    ids: set[int] = set()
    while len(ids) < count:
        ids.update(struct.unpack(f"!{count}H", os.urandom(2 * count)))
    return list(ids)[:count]


def _send(sock: socket.socket, packet: bytes, target: tuple[str, int]) -> None:
    try:
        sock.sendto(packet, target)
    except OSError:
        pass  # counts as no answer


def _query_packet(qid: int, name: str, qtype: int) -> bytes:
    """A recursion-desired query for one name (ASCII names only)."""
    out = bytearray(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0))
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")  # UnicodeEncodeError is a ValueError
        if not 0 < len(raw) < 64:
            raise ValueError("bad label")
        out.append(len(raw))
        out += raw
    out += b"\0" + struct.pack("!HH", qtype, 1)
    if len(out) > 512:
        raise ValueError("name too long")
    return bytes(out)


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    """A (possibly compressed) name at ``pos``; returns it and the end offset."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            jumps += 1
            if jumps > 32:
                raise ValueError("compression loop")
            continue
        if length == 0:
            return ".".join(labels), (end if end >= 0 else pos + 1)
        labels.append(data[pos + 1:pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length


def _parse_response(data: bytes, name: str, qtype: int) -> DnsResult | None:
    """The answer to our query, or None if the packet answers something else."""
    try:
        _, flags, qdcount, ancount, nscount, _ = struct.unpack_from("!HHHHHH", data)
        if not flags & 0x8000 or qdcount != 1:
            return None
        qname, pos = _read_name(data, 12)
        rtype, _ = struct.unpack_from("!HH", data, pos)
        if qname.lower() != name.lower().rstrip(".") or rtype != qtype:
            return None
        pos += 4
        if flags & 0x0200:
            return DnsResult(UNKNOWN, error="truncated")
        rcode = flags & 0x000F
        records: list[str] = []
        ttls: list[int] = []
        neg_ttl = 0
        for section, count in (("answer", ancount), ("authority", nscount)):
            for _ in range(count):
                _, pos = _read_name(data, pos)
                rr_type, _, ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
                pos += 10
                rdata = data[pos:pos + rdlen]
                if len(rdata) != rdlen:
                    raise ValueError("short rdata")
                if section == "answer" and rr_type == qtype:
                    records.append(_rdata_to_text(rdata, qtype))
                    ttls.append(ttl)
                elif section == "authority" and rr_type == _SOA:
                    _, p = _read_name(data, pos)
                    _, p = _read_name(data, p)
                    minimum = struct.unpack_from("!I", data, p + 16)[0]
                    neg_ttl = min(ttl, minimum)
                pos += rdlen
    except (struct.error, IndexError, ValueError):
        return DnsResult(UNKNOWN, error="malformed")
    if rcode == 3:
        return DnsResult(NXDOMAIN, ttl=neg_ttl)
    if rcode != 0:
        return DnsResult(UNKNOWN, error={2: "servfail", 5: "refused"}.get(rcode, f"rcode{rcode}"))
    if not records:
        return DnsResult(NODATA, ttl=neg_ttl)
    return DnsResult(OK, tuple(records), min(ttls))


def _rdata_to_text(rdata: bytes, qtype: int) -> str:
    if qtype == 1:
        if len(rdata) != 4:
            raise ValueError("bad A record")
        return socket.inet_ntoa(rdata)
    parts = []
    pos = 0
    while pos < len(rdata):
        length = rdata[pos]
        parts.append(rdata[pos + 1:pos + 1 + length])
        pos += 1 + length
    return b"".join(parts).decode("utf-8", "replace")


def _rdata_text(rdata: Any) -> str:
    """TXT as its joined strings (what a reply shows); others in zone-file form."""
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")
    return str(rdata.to_text())


def _soa_ttl(response: dns.message.Message | None) -> int:
    """Negative-caching TTL (RFC 2308): min of the SOA's TTL and MINIMUM."""
    if response is None:
        return 0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return min(rrset.ttl, rrset[0].minimum)
    return 0


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> int:
    try:
        responses = exc.responses()
    except Exception:  # dnspython versions differ in what they keep
        return 0
    for response in responses.values():
        return _soa_ttl(response)
    return 0
