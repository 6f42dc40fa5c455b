"""HELO/EHLO sanity checks with Postfix's semantics and reply codes.

The checks mirror Postfix's reject_invalid_helo_hostname,
reject_non_fqdn_helo_hostname and reject_unknown_helo_hostname (same codes,
so admins recognise them in logs), plus two that Postfix leaves to the
admin: a client that claims to be this server, and an address literal that
is not the client's own address. A DNS failure is a tempfail, never a
reject: only NXDOMAIN or a name without A/AAAA/MX rejects.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Any

from milterguard.clientaddr import IPAddress, parse_client_ip, unmapped
from milterguard.gates.dns import NODATA, NXDOMAIN, OK, DnsQuery
from milterguard.smtpinfo import ClientInfo
from milterguard.verdict import Action, Finding, Reply, clean_reply_text
from milterguard.yamlsrc import LDict

CATEGORY = "bad-helo"

_LABEL_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


@dataclass
class HeloSettings:
    """The ``helo:`` config section (exceptions are applied by gates.py)."""

    require: bool = True
    reject_invalid: bool = True
    reject_non_fqdn: bool = True
    reject_own_name: bool = True
    reject_literal_mismatch: bool = True
    reject_unknown: bool = False
    own_names: tuple[str, ...] = ()
    own_addresses: tuple[str, ...] = ()
    timeout: float = 2.0

    @classmethod
    def from_config(cls, config: Any) -> "HeloSettings":
        section: LDict = config.section("helo")
        out = cls()
        for key in ("require", "reject_invalid", "reject_non_fqdn", "reject_own_name",
                    "reject_literal_mismatch", "reject_unknown"):
            setattr(out, key, section.flag(key, getattr(out, key)))
        out.timeout = section.number("timeout", 2.0, 0.01, 60, "seconds")
        server = config.section("server")
        names = [server.get("hostname") or _machine_fqdn()]
        extra = section.get("own_names", [])
        if not isinstance(extra, list) or not all(isinstance(n, str) for n in extra):
            raise section.error("must be a list of host names", "own_names")
        names.extend(extra)
        out.own_names = tuple(n.lower().rstrip(".") for n in names if n)
        addrs = server.get("addresses", []) or []
        if not isinstance(addrs, list):
            raise server.error("must be a list of IP addresses", "addresses")
        for addr in addrs:
            try:
                ipaddress.ip_address(str(addr))
            except ValueError:
                raise server.error(f"not an IP address: {addr!r}", "addresses") from None
        out.own_addresses = tuple(str(a) for a in addrs)
        return out


def _machine_fqdn() -> str:
    import socket
    name = socket.getfqdn()
    # "localhost" would make every client that HELOs as localhost a liar
    # about being us; that one is caught as non-FQDN anyway.
    return "" if "." not in name else name


def valid_hostname(name: str) -> bool:
    """Postfix's valid_hostname(): labels of letters, digits, '-', '_'; not all numeric."""
    if not name or len(name) > 255:
        return False
    labels = name.split(".")
    if not all(_LABEL_RE.match(label) for label in labels):
        return False
    # An all-numeric name is an IP address without brackets (or garbage).
    return not all(label.isdigit() for label in labels)


def parse_address_literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` to an address; None if invalid."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return ipaddress.IPv6Address(inner[5:])
        return ipaddress.IPv4Address(inner)
    except ValueError:
        return None


def _same_address(literal: IPAddress, own: str) -> bool:
    return unmapped(literal) == parse_client_ip(own)


def shown_text(text: str, limit: int) -> str:
    """clean_reply_text(text, limit), without its per-character pass for the
    plain names nearly every client sends (every HELO and envelope address
    is shown, findings or not)."""
    if (text.isascii() and text.isprintable() and "%" not in text and "  " not in text
            and text[:1] != " " and text[-1:] != " "):
        return text[:limit]
    return clean_reply_text(text, limit)


_IPV4_CHARS = frozenset("0123456789.")


def _is_bare_ip(name: str) -> bool:
    # An IPv4 address is digits and dots, an IPv6 one has a colon: a host
    # name (nearly every HELO) needs no exception-raising parse.
    if ":" not in name and not _IPV4_CHARS.issuperset(name):
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HeloChecks:
    """Checks one HELO name; DNS through a DnsQuery."""

    def __init__(self, settings: HeloSettings, query: DnsQuery) -> None:
        self.settings = settings
        self.query = query

    def missing(self, client: ClientInfo) -> list[Finding]:
        """At MAIL FROM: the client never said HELO/EHLO."""
        if self.settings.require and not client.helo.strip():
            return [Finding("helo:missing", CATEGORY, Action.REJECT,
                            Reply("503", "5.5.1", "Error: send HELO/EHLO first"),
                            detail="no HELO")]
        return []

    def check(self, client: ClientInfo) -> list[Finding]:
        """The first problem with ``client.helo`` in Postfix's order, or nothing."""
        helo = client.helo.strip()
        if not helo:
            return []
        shown = shown_text(helo, 100)
        s = self.settings
        literal = helo.startswith("[")
        name = helo[:-1] if helo.endswith(".") and not literal else helo

        if literal:
            addr = parse_address_literal(helo)
            if addr is None:
                return self._invalid("helo:invalid", shown) if s.reject_invalid else []
            if s.reject_own_name and not _same_address(addr, client.addr) and any(
                    _same_address(addr, own) for own in s.own_addresses):
                return self._own(shown)
            if s.reject_literal_mismatch and client.addr and not _same_address(addr, client.addr):
                return [Finding("helo:literal-mismatch", CATEGORY, Action.REJECT,
                                Reply("550", "5.7.1", f"<{shown}>: Helo command rejected: "
                                      "address literal is not your address"),
                                detail=f"helo={shown} client={client.addr}")]
            return []
        if _is_bare_ip(name):
            return self._invalid("helo:bare-ip", shown) if s.reject_invalid else []
        if s.reject_invalid and not valid_hostname(name):
            return self._invalid("helo:invalid", shown)
        if s.reject_non_fqdn and "." not in name:
            return [Finding("helo:non-fqdn", CATEGORY, Action.REJECT,
                            Reply("504", "5.5.2", f"<{shown}>: Helo command rejected: "
                                  "need fully-qualified hostname"), detail=f"helo={shown}")]
        if s.reject_own_name and name.lower() in s.own_names:
            return self._own(shown)
        if s.reject_unknown and valid_hostname(name):
            return self._unknown(name, shown)
        return []

    def _invalid(self, rule_id: str, shown: str) -> list[Finding]:
        return [Finding(rule_id, CATEGORY, Action.REJECT,
                        Reply("501", "5.5.2", f"<{shown}>: Helo command rejected: Invalid name"),
                        detail=f"helo={shown}")]

    def _own(self, shown: str) -> list[Finding]:
        return [Finding("helo:own-name", CATEGORY, Action.REJECT,
                        Reply("550", "5.7.1", f"<{shown}>: Helo command rejected: "
                              "You are not me"), detail=f"helo={shown}")]

    def _unknown(self, name: str, shown: str) -> list[Finding]:
        """No A, AAAA or MX: reject on NXDOMAIN/no records, tempfail if DNS failed."""
        end = time.monotonic() + self.settings.timeout
        statuses = []
        for rdtype in ("A", "AAAA", "MX"):
            result = self.query.lookup(name, rdtype, timeout=end - time.monotonic())
            if result.status == OK:
                return []
            statuses.append(result.status)
            if result.status == NXDOMAIN:
                break  # the name does not exist: no other type will either
        if all(st in (NXDOMAIN, NODATA) for st in statuses):
            return [Finding("helo:unknown", CATEGORY, Action.REJECT,
                            Reply("550", "5.7.1", f"<{shown}>: Helo command rejected: "
                                  "Host not found"), detail=f"helo={shown} dns={statuses[-1]}")]
        return [Finding("helo:unknown", CATEGORY, Action.TEMPFAIL,
                        Reply("450", "4.7.1", f"<{shown}>: Helo command rejected: "
                              "Host not found"), detail=f"helo={shown} dns=unknown")]
