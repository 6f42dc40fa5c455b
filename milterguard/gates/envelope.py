"""Envelope checks at MAIL FROM and RCPT TO, with Postfix's reply codes.

Address syntax (RFC 5321 path, with RFC 6531 UTF-8 allowed), non-FQDN
addresses, and whether the domain can send or receive mail at all: a
domain with no MX and no A/AAAA, or with a null MX (RFC 7505). NXDOMAIN
rejects; a DNS failure only ever tempfails (450 4.1.8), so a broken
resolver delays mail instead of losing it. The null sender ``<>`` (bounces)
is legal and skips the domain checks.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from milterguard.gates.dns import NODATA, NXDOMAIN, OK, DnsQuery
from milterguard.gates.helo import parse_address_literal, shown_text
from milterguard.verdict import Action, Finding, Reply, clean_reply_text
from milterguard.yamlsrc import LDict

SENDER_CATEGORY = "bad-sender"
RECIPIENT_CATEGORY = "bad-recipient"

# RFC 5321 atext, plus any non-ASCII character (RFC 6531 UTF8-non-ascii).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
# Dots anywhere in the local part ("j..doe", "user."): RFC 5321 forbids
# them, but real senders (some mobile carriers, old directories) use them and
# Postfix accepts them; refusing them would lose legitimate mail.
_DOT_STRING = re.compile(rf"^(?:{_ATEXT}|\.)*{_ATEXT}(?:{_ATEXT}|\.)*$")
_QUOTED = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"$')
_LABEL = re.compile(r"^(?:[A-Za-z0-9\u0080-\U0010ffff]"
                    r"(?:[A-Za-z0-9\u0080-\U0010ffff-]{0,61}[A-Za-z0-9\u0080-\U0010ffff])?)$")

# Domain states.
DOMAIN_OK = "ok"
DOMAIN_NULL_MX = "null-mx"
DOMAIN_NONE = "none"          # NXDOMAIN, or no MX, A or AAAA
DOMAIN_UNKNOWN = "unknown"    # DNS failed: we do not know


@dataclass(frozen=True)
class Address:
    """A parsed envelope address; ``local`` and ``domain`` empty for ``<>``."""

    text: str          # without angle brackets, as shown in replies
    local: str
    domain: str        # "" when the address has no @domain part

    @property
    def null(self) -> bool:
        return self.text == ""

    @property
    def literal(self) -> bool:
        return self.domain.startswith("[")


def parse_envelope_address(raw: str) -> Address | None:
    """An RFC 5321 path (with or without <>) to an Address; None if invalid."""
    text = raw.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    elif "<" in text or ">" in text:
        return None
    if text.startswith("@"):
        # Obsolete source route "@a,@b:user@example.com": RFC 5321 says ignore it.
        colon = text.find(":")
        if colon < 0:
            return None
        text = text[colon + 1:]
    if text == "":
        return Address("", "", "")
    if len(text.encode("utf-8", "replace")) > 254:
        return None
    at = text.rfind("@")
    local, domain = (text, "") if at < 0 else (text[:at], text[at + 1:])
    if not local or len(local.encode("utf-8", "replace")) > 64:
        return None
    if not (_DOT_STRING.match(local) or _QUOTED.match(local)):
        return None
    if at >= 0:
        if domain.startswith("["):
            if parse_address_literal(domain) is None:
                return None
        elif not valid_domain(domain):
            return None
    return Address(text, local, domain)


def valid_domain(domain: str) -> bool:
    if not domain or len(domain) > 253 or domain.endswith("."):
        return False
    labels = domain.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return False
    return not labels[-1].isdigit()


@dataclass
class EnvelopeSettings:
    """The ``envelope:`` config section (exceptions are applied by gates.py)."""

    reject_bad_syntax: bool = True
    reject_non_fqdn_sender: bool = True
    reject_non_fqdn_recipient: bool = True
    reject_unknown_sender_domain: bool = True
    reject_null_mx: bool = True
    reject_unknown_recipient_domain: bool = False
    timeout: float = 2.0

    @classmethod
    def from_config(cls, config: Any) -> "EnvelopeSettings":
        section: LDict = config.section("envelope")
        out = cls()
        for key in ("reject_bad_syntax", "reject_non_fqdn_sender", "reject_non_fqdn_recipient",
                    "reject_unknown_sender_domain", "reject_null_mx",
                    "reject_unknown_recipient_domain"):
            setattr(out, key, section.flag(key, getattr(out, key)))
        out.timeout = section.number("timeout", 2.0, 0.01, 60, "seconds")
        return out


def domain_state(query: DnsQuery, domain: str, timeout: float) -> str:
    """Whether ``domain`` can take mail: MX first, then A and AAAA (RFC 5321 5.1)."""
    end = time.monotonic() + timeout
    mx = query.lookup(domain, "MX", timeout=end - time.monotonic())
    if mx.status == OK:
        hosts = [r.split(None, 1) for r in mx.records]
        if len(hosts) == 1 and len(hosts[0]) == 2 and hosts[0][1] == ".":
            return DOMAIN_NULL_MX  # RFC 7505: "0 ." is the only MX
        return DOMAIN_OK
    if mx.status == NXDOMAIN:
        return DOMAIN_NONE
    seen_unknown = mx.status != NODATA
    for rdtype in ("A", "AAAA"):
        result = query.lookup(domain, rdtype, timeout=end - time.monotonic())
        if result.status == OK:
            return DOMAIN_OK
        if result.status == NXDOMAIN:
            return DOMAIN_UNKNOWN if seen_unknown else DOMAIN_NONE
        seen_unknown = seen_unknown or result.status != NODATA
    return DOMAIN_UNKNOWN if seen_unknown else DOMAIN_NONE


class EnvelopeChecks:
    """Sender checks at MAIL FROM, recipient checks at RCPT TO."""

    def __init__(self, settings: EnvelopeSettings, query: DnsQuery) -> None:
        self.settings = settings
        self.query = query

    def check_sender(self, sender: str) -> list[Finding]:
        s = self.settings
        shown = shown_text(sender.strip().strip("<>"), 120)
        addr = parse_envelope_address(sender)
        if addr is None:
            if not s.reject_bad_syntax:
                return []
            return [Finding("envelope:sender-syntax", SENDER_CATEGORY, Action.REJECT,
                            Reply("501", "5.1.7", f"<{shown}>: Bad sender address syntax"),
                            detail=f"sender={shown}")]
        if addr.null:
            return []
        if addr.literal:
            return []
        if "." not in addr.domain:
            if not s.reject_non_fqdn_sender:
                return []
            return [Finding("envelope:sender-non-fqdn", SENDER_CATEGORY, Action.REJECT,
                            Reply("504", "5.5.2", f"<{shown}>: Sender address rejected: "
                                  "need fully-qualified address"), detail=f"sender={shown}")]
        if not (s.reject_unknown_sender_domain or s.reject_null_mx):
            return []
        state = domain_state(self.query, addr.domain, s.timeout)
        dom = clean_reply_text(addr.domain, 100)
        if state == DOMAIN_NULL_MX and s.reject_null_mx:
            return [Finding("envelope:sender-null-mx", SENDER_CATEGORY, Action.REJECT,
                            Reply("550", "5.7.27", f"<{shown}>: Sender address rejected: "
                                  f"Domain {dom} does not accept mail (nullMX)"),
                            detail=f"sender={shown}")]
        if not s.reject_unknown_sender_domain:
            return []
        if state == DOMAIN_NONE:
            return [Finding("envelope:sender-nxdomain", SENDER_CATEGORY, Action.REJECT,
                            Reply("550", "5.1.8", f"<{shown}>: Sender address rejected: "
                                  "Domain not found"), detail=f"sender={shown} domain={dom}")]
        if state == DOMAIN_UNKNOWN:
            return [Finding("envelope:sender-dns-tempfail", SENDER_CATEGORY, Action.TEMPFAIL,
                            Reply("450", "4.1.8", f"<{shown}>: Sender address rejected: "
                                  "Domain not found"), detail=f"sender={shown} domain={dom}")]
        return []

    def check_recipient(self, rcpt: str) -> list[Finding]:
        s = self.settings
        shown = shown_text(rcpt.strip().strip("<>"), 120)
        addr = parse_envelope_address(rcpt)
        if addr is None or addr.null:
            if not s.reject_bad_syntax:
                return []
            return [Finding("envelope:recipient-syntax", RECIPIENT_CATEGORY, Action.REJECT,
                            Reply("501", "5.1.3", f"<{shown}>: Bad recipient address syntax"),
                            detail=f"rcpt={shown}")]
        if addr.literal:
            return []
        if not addr.domain and addr.local.lower() == "postmaster":
            return []  # RFC 5321 4.5.1: <Postmaster> without a domain must work
        if "." not in addr.domain:
            if not s.reject_non_fqdn_recipient:
                return []
            return [Finding("envelope:recipient-non-fqdn", RECIPIENT_CATEGORY, Action.REJECT,
                            Reply("504", "5.5.2", f"<{shown}>: Recipient address rejected: "
                                  "need fully-qualified address"), detail=f"rcpt={shown}")]
        if not s.reject_unknown_recipient_domain:
            return []
        state = domain_state(self.query, addr.domain, s.timeout)
        dom = clean_reply_text(addr.domain, 100)
        if state == DOMAIN_NULL_MX and s.reject_null_mx:
            return [Finding("envelope:recipient-null-mx", RECIPIENT_CATEGORY, Action.REJECT,
                            Reply("556", "5.1.10", f"<{shown}>: Recipient address rejected: "
                                  f"Domain {dom} does not accept mail (nullMX)"),
                            detail=f"rcpt={shown}")]
        if state == DOMAIN_NONE:
            return [Finding("envelope:recipient-nxdomain", RECIPIENT_CATEGORY, Action.REJECT,
                            Reply("550", "5.1.2", f"<{shown}>: Recipient address rejected: "
                                  "Domain not found"), detail=f"rcpt={shown} domain={dom}")]
        if state == DOMAIN_UNKNOWN:
            return [Finding("envelope:recipient-dns-tempfail", RECIPIENT_CATEGORY,
                            Action.TEMPFAIL,
                            Reply("450", "4.1.2", f"<{shown}>: Recipient address rejected: "
                                  "Domain not found"), detail=f"rcpt={shown} domain={dom}")]
        return []
