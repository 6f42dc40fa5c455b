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

from milterguard.gates.dnswire import (FAST_TYPES, NXDOMAIN_RCODE, WireAnswer, parse_response,
                                       query_packet, unique_ids)
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
        for server in servers:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                # dnspython would raise a bare ValueError at start (a traceback).
                raise section.error(f"not an IP address: {server!r}", "nameservers") from None
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
        of a thread per query) costs more than the network; the packets are
        built and read by dnswire.py for the same reason. Truncated answers
        and other types take the full resolver.
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
            if rdtype.upper() in FAST_TYPES:
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
        qtype = FAST_TYPES[rdtype]
        pending: dict[int, int] = {}         # query id -> index
        packets: dict[int, bytes] = {}
        ids = iter(unique_ids(len(names)))
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            return [DnsResult(UNKNOWN, error=type(exc).__name__)] * len(names)
        with sock:
            sock.setblocking(False)
            for index, name in enumerate(names):
                try:
                    packet = query_packet(qid := next(ids), name, qtype)
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
                    slot = pending.get(qid)
                    if slot is None:
                        continue
                    parsed = _result(parse_response(data, names[slot], qtype))
                    if parsed is None:
                        continue  # not an answer to our question: keep waiting
                    del pending[qid]
                    results[slot] = parsed
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


def _send(sock: socket.socket, packet: bytes, target: tuple[str, int]) -> None:
    try:
        sock.sendto(packet, target)
    except OSError:
        pass  # counts as no answer


def _result(answer: WireAnswer | None) -> DnsResult | None:
    """A decoded packet in the resolver's vocabulary (None: not our answer)."""
    if answer is None:
        return None
    if answer.error:
        return DnsResult(UNKNOWN, error=answer.error)
    if answer.rcode == NXDOMAIN_RCODE:
        return DnsResult(NXDOMAIN, ttl=answer.negative_ttl)
    if answer.rcode != 0:
        return DnsResult(UNKNOWN, error={2: "servfail", 5: "refused"}.get(
            answer.rcode, f"rcode{answer.rcode}"))
    if not answer.records:
        return DnsResult(NODATA, ttl=answer.negative_ttl)
    return DnsResult(OK, answer.records, answer.ttl)


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
            return int(min(rrset.ttl, rrset[0].minimum))
    return 0


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> int:
    try:
        responses = exc.responses()  # type: ignore[no-untyped-call]  # dnspython leaves it unannotated
    except Exception:  # noqa: BLE001 - dnspython versions differ in what they keep
        return 0
    for response in responses.values():
        return _soa_ttl(response)
    return 0
