"""What a greylisting triplet is made of, and its key in the store.

A retry must map to the same triplet as the first attempt, and so must the
next mail of the same list: the sender is reduced to its stable part (BATV
and SRS wrappers, sub-address tags, VERP-encoded recipients and digit runs
removed), the client to its network (sender pools retry from siblings),
and the three hashed into one 64-bit key, the table's primary key.
"""

from __future__ import annotations

import hashlib
import re

from milterguard.clientaddr import IPAddress, network_of

# BATV: prvs=TAG=user (and Microsoft's msprvs1=TAG=user); older btv1==TAG==user.
_BATV = re.compile(r"^(?:ms)?prvs\d*=[^=]+=(.+)$")
_BTV1 = re.compile(r"^btv1==[^=]+==(.+)$")
# SRS0=HASH=TT=orig.domain=orig.local ; SRS1=HASH=first.hop==HASH=TT=domain=local
# ('=' may be '+' or '-' after the SRS0/SRS1 tag, as the SRS paper allows).
_SRS0 = re.compile(r"^srs0[=+-][^=]*=[^=]*=([^=]+)=(.+)$")
_SRS1 = re.compile(r"^srs1[=+-][^=]*=[^=]*=[=+-][^=]*=[^=]*=([^=]+)=(.+)$")
# VERP: the recipient encoded into the local part as "-user=domain".
_VERP = re.compile(r"^(.+?)[-+][^-+=]*=[^=]*$")
_DIGITS = re.compile(r"\d+")


def _strip_address(addr: str) -> str:
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1].strip()
    return addr.lower()


def normalize_sender(sender: str) -> str:
    """The stable part of an envelope sender.

    Tags that change per message or per day are removed so that a retry, or
    the next mail of the same list, maps to the same triplet: BATV and SRS
    wrappers, ``+tag`` sub-addresses, VERP-encoded recipients, and digit runs
    (bounce and message numbers) which become ``#``. ``""`` is the null sender.
    """
    addr = _strip_address(sender)
    if not addr:
        return ""
    local, at, domain = addr.rpartition("@")
    if not at:
        local, domain = addr, ""
    domain = domain.rstrip(".")
    for _ in range(3):  # wrappers may nest (an SRS'd BATV address)
        match = _SRS1.match(local) or _SRS0.match(local)
        if match:
            domain, local = match.group(1).rstrip("."), match.group(2)
            continue
        match = _BATV.match(local) or _BTV1.match(local)
        if match:
            local = match.group(1)
            continue
        break
    if "+" in local[1:]:
        local = local[:local.index("+", 1)]
    match = _VERP.match(local)
    if match:
        local = match.group(1)
    local = _DIGITS.sub("#", local)
    return f"{local}@{domain}" if domain else local


def normalize_rcpt(rcpt: str) -> str:
    """Recipients are ours and stable: brackets off, lower-cased."""
    return _strip_address(rcpt)


def sender_domain(sender: str) -> str:
    addr = _strip_address(sender)
    return addr.rpartition("@")[2].rstrip(".") if "@" in addr else ""


def client_network(ip: IPAddress,
                   ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The network a client is grouped by, as stored in the triplet."""
    return str(network_of(ip, ipv4_prefix, ipv6_prefix))


def triplet_key(net: str, sender: str, rcpt: str) -> int:
    """A signed 64-bit hash (fits BIGINT); collisions are negligible at 10^9 rows."""
    digest = hashlib.blake2b(f"{net}\0{sender}\0{rcpt}".encode("utf-8", "replace"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
