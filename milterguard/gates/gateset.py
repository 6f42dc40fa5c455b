"""The gates the session calls at connect, HELO, MAIL FROM and RCPT TO,
and the DNS lookups of end of message (URI blocklists).

``Gates`` is a facade: it builds the DNSBL checker, HELO and envelope checks
from the config, applies each check group's own exceptions (by client
address, network, HELO pattern, sender domain), and returns findings. The
global allowlist (trusted networks, authenticated clients) and the delay of
connect/HELO rejects to the first RCPT are the session's business.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import dns.resolver

from milterguard.clientaddr import IPNetwork, client_in_networks
from milterguard.gates.dnsbl import DnsblChecker
from milterguard.gates.dns import DnsQuery
from milterguard.gates.dnshealth import ProbeSettings, ResolverHealth
from milterguard.gates.envelope import EnvelopeChecks, EnvelopeSettings, parse_envelope_address
from milterguard.gates.helo import HeloChecks, HeloSettings
from milterguard.gates.uribl import UriblChecker
from milterguard.smtpinfo import ClientInfo
from milterguard.verdict import Finding
from milterguard.yamlsrc import LDict

log = logging.getLogger("milterguard.gates")


@dataclass
class CheckExceptions:
    """Who a check group leaves alone. Empty lists: nobody."""

    networks: list[IPNetwork] = field(default_factory=list)
    helo_patterns: list[str] = field(default_factory=list)     # shell globs, any case
    sender_domains: list[str] = field(default_factory=list)    # a domain and its subdomains
    recipient_domains: list[str] = field(default_factory=list)

    @classmethod
    def from_section(cls, owner: LDict, key: str = "exceptions") -> "CheckExceptions":
        out = cls()
        section = owner.get(key)
        if section is None:
            return out
        if not isinstance(section, LDict):
            raise owner.error("must be a mapping", key)
        known = ("addresses", "networks", "helo_patterns", "sender_domains",
                 "recipient_domains")
        for name in section:
            if name not in known:
                raise section.unknown_key(name, known)
        for name in ("addresses", "networks"):
            out.networks += section.networks(name)
        out.helo_patterns = [p.lower() for p in section.strings("helo_patterns")]
        out.sender_domains = [d.lower().strip(".") for d in section.strings("sender_domains")]
        out.recipient_domains = [d.lower().strip(".")
                                 for d in section.strings("recipient_domains")]
        return out

    def client(self, client: ClientInfo) -> bool:
        """The client's address or HELO name is excepted."""
        if self.networks and client_in_networks(client.addr, self.networks):
            return True
        helo = client.helo.lower()
        return bool(helo) and any(fnmatch.fnmatchcase(helo, p) for p in self.helo_patterns)

    def sender(self, sender: str) -> bool:
        return _domain_in(sender, self.sender_domains)

    def recipient(self, rcpt: str) -> bool:
        return _domain_in(rcpt, self.recipient_domains)


def _domain_in(address: str, domains: list[str]) -> bool:
    if not domains:
        return False
    parsed = parse_envelope_address(address)
    if parsed is None or not parsed.domain:
        return False
    domain = parsed.domain.lower()
    return any(domain == d or domain.endswith("." + d) for d in domains)


class Gates:
    """Connect, HELO and envelope gates behind one interface for the session."""

    def __init__(self, query: DnsQuery, dnsbl: DnsblChecker, helo: HeloChecks,
                 envelope: EnvelopeChecks, dnsbl_exceptions: CheckExceptions,
                 helo_exceptions: CheckExceptions,
                 envelope_exceptions: CheckExceptions,
                 uribl: UriblChecker | None = None,
                 health: ResolverHealth | None = None) -> None:
        self.query = query
        self.uribl = uribl
        #: Probes of names that must exist; NXDOMAIN refusals become 4xx
        #: while the resolver denies one (dnshealth).
        self.health = health or ResolverHealth(query, ProbeSettings(names=()))
        self.dnsbl = dnsbl
        self.helo = helo
        self.envelope = envelope
        self.dnsbl_exceptions = dnsbl_exceptions
        self.helo_exceptions = helo_exceptions
        self.envelope_exceptions = envelope_exceptions

    @classmethod
    def from_config(cls, config: Any, resolver: dns.resolver.Resolver | DnsQuery | None = None,
                    clock: Callable[[], float] = time.time, start: bool = True) -> "Gates":
        """Build from config; ``resolver`` replaces the configured one (tests).

        ``start`` runs the DNSBL self-test thread (at once, then every
        ``dnsbl.self_test_interval``).
        """
        if isinstance(resolver, DnsQuery):
            query = resolver
        else:
            query = DnsQuery.from_config(config, resolver, clock)
        dnsbl = DnsblChecker.from_config(config, query, clock)
        gates = cls(query, dnsbl,
                    HeloChecks(HeloSettings.from_config(config), query),
                    EnvelopeChecks(EnvelopeSettings.from_config(config), query),
                    CheckExceptions.from_section(config.section("dnsbl")),
                    CheckExceptions.from_section(config.section("helo")),
                    CheckExceptions.from_section(config.section("envelope")),
                    UriblChecker.from_config(config, query),
                    ResolverHealth(query, ProbeSettings.from_section(config.section("dns")),
                                   clock))
        if start:
            dnsbl.start()
            gates.health.start()
        return gates

    def on_connect(self, client: ClientInfo) -> list[Finding]:
        if not client.addr or self.dnsbl_exceptions.client(client):
            return []
        return self.dnsbl.findings(client.addr, self.dnsbl.check(client.addr))

    def on_helo(self, client: ClientInfo) -> list[Finding]:
        if self.helo_exceptions.client(client):
            return []
        return self.health.adjust(self.helo.check(client))

    def on_mail(self, client: ClientInfo, sender: str) -> list[Finding]:
        out: list[Finding] = []
        if not self.helo_exceptions.client(client):
            out.extend(self.helo.missing(client))
        if not (self.envelope_exceptions.client(client)
                or self.envelope_exceptions.sender(sender)):
            out.extend(self.envelope.check_sender(sender))
        return self.health.adjust(out)

    def on_rcpt(self, client: ClientInfo, sender: str, rcpt: str) -> list[Finding]:
        if self.envelope_exceptions.client(client) or self.envelope_exceptions.recipient(rcpt):
            return []
        return self.health.adjust(self.envelope.check_recipient(rcpt))

    def on_message(self, views: Any) -> list[Finding]:
        """End of message: the URI blocklists, for every client (like the
        content rules: a trusted client's links are still asked about)."""
        if self.uribl is None:
            return []
        return self.uribl.check(views)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per-zone DNSBL counters (queries, listed, clean, unknown, ...)."""
        return self.dnsbl.stats()

    def close(self) -> None:
        self.dnsbl.close()
        self.health.close()
