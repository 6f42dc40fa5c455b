"""A small DNS resolver wrapper: every lookup ends in a result, never a raise.

Gates must never reject good mail because DNS misbehaved, so timeouts,
SERVFAIL, REFUSED, malformed answers and socket errors all become the status
``unknown``; only an authoritative NXDOMAIN or an empty answer (NODATA) say
"does not exist". Answers are cached for their TTL, clamped to a floor (so a
TTL of 0 does not turn every connection into a query) and a cap (so a stale
listing does not live for days).
"""

from __future__ import annotations

import logging
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
        out.port = _int(section, "port", 53, 1, 65535)
        out.timeout = _float(section, "timeout", 2.0, 0.01, 60.0)
        cache = section.get("cache", True)
        if not isinstance(cache, bool):
            raise section.error("must be true or false", "cache")
        out.cache = cache
        out.min_ttl = _int(section, "cache_min_ttl", 60, 0, 86400)
        out.max_ttl = _int(section, "cache_max_ttl", 3600, 0, 7 * 86400)
        if out.max_ttl < out.min_ttl:
            raise section.error("must not be smaller than cache_min_ttl", "cache_max_ttl")
        out.cache_size = _int(section, "cache_size", 10000, 0, 10_000_000)
        return out


def _int(section: LDict, key: str, default: int, low: int, high: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise section.error(f"must be an integer from {low} to {high}", key)
    return value


def _float(section: LDict, key: str, default: float, low: float, high: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not low <= value <= high:
        raise section.error(f"must be a number from {low} to {high}", key)
    return float(value)


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
