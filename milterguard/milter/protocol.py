"""Wire codec of the Sendmail milter protocol (version 6), both directions.

Pure functions and small data classes, no sockets: the replay harness
(``replay.py``) drives a milter with them, and tests round-trip them.

A packet is a 4-byte big-endian length that counts the command byte, then
the command byte, then the data. Strings inside the data are NUL-terminated.

Which stages the MTA may skip, and which replies it must not wait for, is
decided once per connection in option negotiation (``SMFIC_OPTNEG``): the
MTA offers protocol flags, the milter answers with the subset it wants.
``Negotiated`` answers "send this stage?" and "wait for a reply?" from
those flags; getting that wrong either hangs the MTA side on a reply that
never comes or feeds the milter a stage it did not ask for.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from milterguard.errors import ProtocolError

PROTOCOL_VERSION = 6
#: libmilter refuses larger packets; body chunks stay below this.
MAX_PACKET = 64 * 1024 * 1024
BODY_CHUNK = 65535

# Commands, MTA -> milter.
C_ABORT = b"A"
C_BODY = b"B"
C_CONNECT = b"C"
C_MACRO = b"D"
C_EOM = b"E"
C_HELO = b"H"
C_QUIT_NC = b"K"
C_HEADER = b"L"
C_MAIL = b"M"
C_EOH = b"N"
C_OPTNEG = b"O"
C_QUIT = b"Q"
C_RCPT = b"R"
C_DATA = b"T"
C_UNKNOWN = b"U"

# Responses, milter -> MTA.
R_ADDRCPT = b"+"
R_DELRCPT = b"-"
R_ADDRCPT_PAR = b"2"
R_SHUTDOWN = b"4"
R_ACCEPT = b"a"
R_REPLBODY = b"b"
R_CONTINUE = b"c"
R_DISCARD = b"d"
R_CHGFROM = b"e"
R_CONN_FAIL = b"f"
R_ADDHEADER = b"h"
R_INSHEADER = b"i"
R_SETSYMLIST = b"l"
R_CHGHEADER = b"m"
R_PROGRESS = b"p"
R_QUARANTINE = b"q"
R_REJECT = b"r"
R_SKIP = b"s"
R_TEMPFAIL = b"t"
R_REPLYCODE = b"y"

#: Replies that end the stage with a decision (as opposed to modifications,
#: progress notes and the negotiation answer).
DECISIONS = frozenset([R_ACCEPT, R_CONTINUE, R_DISCARD, R_REJECT, R_SKIP,
                       R_TEMPFAIL, R_REPLYCODE, R_SHUTDOWN, R_CONN_FAIL])

# Connect address families.
FAMILY_UNKNOWN = b"U"
FAMILY_UNIX = b"L"
FAMILY_INET = b"4"
FAMILY_INET6 = b"6"

# Actions the milter may request (SMFIF_*).
F_ADDHDRS = 0x01
F_CHGBODY = 0x02
F_ADDRCPT = 0x04
F_DELRCPT = 0x08
F_CHGHDRS = 0x10
F_QUARANTINE = 0x20
F_CHGFROM = 0x40
F_ADDRCPT_PAR = 0x80
F_SETSYMLIST = 0x100
ALL_ACTIONS = 0x1FF

# Protocol flags (SMFIP_*).
P_NOCONNECT = 0x1
P_NOHELO = 0x2
P_NOMAIL = 0x4
P_NORCPT = 0x8
P_NOBODY = 0x10
P_NOHDRS = 0x20
P_NOEOH = 0x40
P_NR_HDR = 0x80
P_NOUNKNOWN = 0x100
P_NODATA = 0x200
P_SKIP = 0x400
P_RCPT_REJ = 0x800
P_NR_CONN = 0x1000
P_NR_HELO = 0x2000
P_NR_MAIL = 0x4000
P_NR_RCPT = 0x8000
P_NR_DATA = 0x10000
P_NR_UNKN = 0x20000
P_NR_EOH = 0x40000
P_NR_BODY = 0x80000
P_HDR_LEADSPC = 0x100000
ALL_PROTOCOL = 0x1FFFFF

# Macro stages as the milter names them in a symbol-list request.
M_CONNECT, M_HELO, M_ENVFROM, M_ENVRCPT, M_DATA, M_EOM, M_EOH = range(7)


@dataclass(frozen=True)
class StageInfo:
    """How one SMTP stage travels: command, skip flag, no-reply flag, macros."""

    name: str
    command: bytes
    skip_flag: int      # milter asked not to get this stage at all
    noreply_flag: int   # milter will not answer this stage
    macro_stage: int    # which symbol list applies to its macros


STAGE_INFO = {
    s.name: s for s in (
        StageInfo("connect", C_CONNECT, P_NOCONNECT, P_NR_CONN, M_CONNECT),
        StageInfo("helo", C_HELO, P_NOHELO, P_NR_HELO, M_HELO),
        StageInfo("mail", C_MAIL, P_NOMAIL, P_NR_MAIL, M_ENVFROM),
        StageInfo("rcpt", C_RCPT, P_NORCPT, P_NR_RCPT, M_ENVRCPT),
        StageInfo("data", C_DATA, P_NODATA, P_NR_DATA, M_DATA),
        StageInfo("header", C_HEADER, P_NOHDRS, P_NR_HDR, M_EOH),
        StageInfo("eoh", C_EOH, P_NOEOH, P_NR_EOH, M_EOH),
        StageInfo("body", C_BODY, P_NOBODY, P_NR_BODY, M_EOM),
        StageInfo("eom", C_EOM, 0, 0, M_EOM),
        StageInfo("unknown", C_UNKNOWN, P_NOUNKNOWN, P_NR_UNKN, M_CONNECT),
    )
}


# --------------------------------------------------------------- framing

def packet(command: bytes, data: bytes = b"") -> bytes:
    """Frame one packet: length (command byte included), command, data."""
    if len(command) != 1:
        raise ValueError(f"command must be one byte, got {command!r}")
    return struct.pack(">I", len(data) + 1) + command + data


class PacketBuffer:
    """Splits a byte stream into packets; feed it whatever recv() returned."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_packet(self) -> tuple[bytes, bytes] | None:
        """The next complete (command, data), or None if more bytes are needed."""
        if len(self._buf) < 4:
            return None
        (length,) = struct.unpack(">I", self._buf[:4])
        if length < 1 or length > MAX_PACKET:
            raise ProtocolError(f"bad packet length {length}")
        if len(self._buf) < 4 + length:
            return None
        command = bytes(self._buf[4:5])
        data = bytes(self._buf[5:4 + length])
        del self._buf[:4 + length]
        return command, data


def cstr(value: str | bytes) -> bytes:
    """A NUL-terminated string; text is sent as UTF-8, bytes as they are."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if b"\0" in raw:
        raise ValueError("NUL inside a milter string")
    return raw + b"\0"


def split_cstrs(data: bytes) -> list[bytes]:
    """NUL-terminated strings back into a list (a missing final NUL is tolerated)."""
    if not data:
        return []
    if data.endswith(b"\0"):
        data = data[:-1]
    return data.split(b"\0")


# ------------------------------------------------------- MTA -> milter

def encode_optneg(version: int = PROTOCOL_VERSION, actions: int = ALL_ACTIONS,
                  protocol: int = ALL_PROTOCOL) -> bytes:
    return packet(C_OPTNEG, struct.pack(">III", version, actions, protocol))


def encode_macros(stage_command: bytes, macros: dict[str, str]) -> bytes:
    """One 'D' packet; single-letter names go bare, longer ones in braces."""
    data = bytearray(stage_command)
    for name, value in macros.items():
        data += cstr(macro_wire_name(name)) + cstr(value)
    return packet(C_MACRO, bytes(data))


def macro_wire_name(name: str) -> str:
    bare = name.strip("{}")
    return bare if len(bare) == 1 else "{" + bare + "}"


def encode_connect(hostname: str, family: bytes = FAMILY_UNKNOWN, port: int = 0,
                   address: str = "") -> bytes:
    data = cstr(hostname) + family
    if family != FAMILY_UNKNOWN:
        data += struct.pack(">H", port) + cstr(address)
    return packet(C_CONNECT, data)


def encode_helo(name: str) -> bytes:
    return packet(C_HELO, cstr(name))


def encode_mail(args: list[str]) -> bytes:
    """``args[0]`` is ``<sender>``, then ESMTP parameters."""
    return packet(C_MAIL, b"".join(cstr(a) for a in args))


def encode_rcpt(args: list[str]) -> bytes:
    return packet(C_RCPT, b"".join(cstr(a) for a in args))


def encode_header(name: str | bytes, value: str | bytes) -> bytes:
    return packet(C_HEADER, cstr(name) + cstr(value))


def encode_body(chunk: bytes) -> bytes:
    if len(chunk) > BODY_CHUNK:
        raise ValueError("body chunk larger than 65535 bytes")
    return packet(C_BODY, chunk)


def encode_simple(command: bytes) -> bytes:
    """Packets without data: data 'T', eoh 'N', eom 'E', abort 'A', quit 'Q'."""
    return packet(command)


@dataclass
class Command:
    """A decoded MTA command, for tests and for a milter-side reader."""

    command: bytes
    args: list[bytes] = field(default_factory=list)
    family: bytes = b""
    port: int = 0
    macros: dict[str, str] = field(default_factory=dict)
    optneg: tuple[int, int, int] | None = None
    body: bytes = b""


def decode_command(command: bytes, data: bytes) -> Command:
    """Decode one MTA->milter packet's payload."""
    if command == C_OPTNEG:
        if len(data) < 12:
            raise ProtocolError("short OPTNEG")
        return Command(command, optneg=struct.unpack(">III", data[:12]))
    if command == C_MACRO:
        if not data:
            raise ProtocolError("empty macro packet")
        parts = split_cstrs(data[1:])
        macros = {parts[i].decode("utf-8", "replace"): parts[i + 1].decode("utf-8", "replace")
                  for i in range(0, len(parts) - 1, 2)}
        return Command(command, args=[data[:1]], macros=macros)
    if command == C_CONNECT:
        host, _, rest = data.partition(b"\0")
        family = rest[:1]
        if family in (FAMILY_INET, FAMILY_INET6, FAMILY_UNIX):
            (port,) = struct.unpack(">H", rest[1:3])
            return Command(command, args=[host] + split_cstrs(rest[3:])[:1],
                           family=family, port=port)
        return Command(command, args=[host], family=family)
    if command == C_BODY:
        return Command(command, body=data)
    return Command(command, args=split_cstrs(data))


# ------------------------------------------------------- milter -> MTA

@dataclass
class OptNeg:
    """The milter's answer to option negotiation."""

    version: int
    actions: int
    protocol: int
    #: macro stage -> list of macro names (bare, without braces)
    symlists: dict[int, list[str]] = field(default_factory=dict)


def decode_optneg(data: bytes) -> OptNeg:
    if len(data) < 12:
        raise ProtocolError(f"short OPTNEG reply ({len(data)} bytes)")
    version, actions, protocol = struct.unpack(">III", data[:12])
    symlists: dict[int, list[str]] = {}
    rest = data[12:]
    # Optional symbol lists: uint32 stage, then a NUL-terminated name list.
    while len(rest) >= 5:
        (stage,) = struct.unpack(">I", rest[:4])
        names, _, rest = rest[4:].partition(b"\0")
        symlists[stage] = [n.strip("{}") for n in
                           names.decode("ascii", "replace").replace(",", " ").split()]
    return OptNeg(version, actions, protocol, symlists)


def encode_optneg_reply(reply: OptNeg) -> bytes:
    data = struct.pack(">III", reply.version, reply.actions, reply.protocol)
    for stage, names in reply.symlists.items():
        data += struct.pack(">I", stage) + cstr(" ".join("{%s}" % n if len(n) > 1 else n
                                                          for n in names))
    return packet(C_OPTNEG, data)


@dataclass
class Response:
    """One decoded milter response.

    ``kind`` is the response byte. Fields are filled as the kind needs:
    ``text`` for a reply code or quarantine reason, ``name``/``value``/
    ``index`` for header edits, ``args`` for recipient/sender edits,
    ``body`` for a body replacement chunk.
    """

    kind: bytes
    text: str = ""
    name: str = ""
    value: str = ""
    index: int = 0
    args: list[str] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_decision(self) -> bool:
        return self.kind in DECISIONS


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def decode_response(kind: bytes, data: bytes) -> Response:
    """Decode a milter->MTA packet (not OPTNEG); unknown kinds raise ProtocolError."""
    if kind in (R_ACCEPT, R_CONTINUE, R_DISCARD, R_REJECT, R_SKIP, R_TEMPFAIL,
                R_PROGRESS, R_SHUTDOWN, R_CONN_FAIL):
        return Response(kind)
    if kind in (R_REPLYCODE, R_QUARANTINE):
        parts = split_cstrs(data)
        return Response(kind, text=_text(parts[0]) if parts else "")
    if kind == R_ADDHEADER:
        parts = split_cstrs(data) + [b"", b""]
        return Response(kind, name=_text(parts[0]), value=_text(parts[1]))
    if kind in (R_INSHEADER, R_CHGHEADER):
        if len(data) < 4:
            raise ProtocolError(f"short header edit {kind!r}")
        (index,) = struct.unpack(">I", data[:4])
        parts = split_cstrs(data[4:]) + [b"", b""]
        return Response(kind, index=index, name=_text(parts[0]), value=_text(parts[1]))
    if kind in (R_ADDRCPT, R_DELRCPT, R_ADDRCPT_PAR, R_CHGFROM):
        return Response(kind, args=[_text(p) for p in split_cstrs(data)])
    if kind == R_REPLBODY:
        return Response(kind, body=data)
    raise ProtocolError(f"unknown milter response {kind!r}")


def encode_response(resp: Response) -> bytes:
    """The inverse of decode_response (used by tests and fake milters)."""
    kind = resp.kind
    if kind in (R_REPLYCODE, R_QUARANTINE):
        return packet(kind, cstr(resp.text))
    if kind == R_ADDHEADER:
        return packet(kind, cstr(resp.name) + cstr(resp.value))
    if kind in (R_INSHEADER, R_CHGHEADER):
        return packet(kind, struct.pack(">I", resp.index) + cstr(resp.name) + cstr(resp.value))
    if kind in (R_ADDRCPT, R_DELRCPT, R_ADDRCPT_PAR, R_CHGFROM):
        return packet(kind, b"".join(cstr(a) for a in resp.args))
    if kind == R_REPLBODY:
        return packet(kind, resp.body)
    return packet(kind)


# ------------------------------------------------------- negotiation

@dataclass
class Negotiated:
    """What the milter agreed to for this connection."""

    version: int = PROTOCOL_VERSION
    actions: int = ALL_ACTIONS
    protocol: int = 0
    symlists: dict[int, list[str]] = field(default_factory=dict)

    @classmethod
    def from_reply(cls, reply: OptNeg, offered_protocol: int = ALL_PROTOCOL,
                   offered_actions: int = ALL_ACTIONS) -> "Negotiated":
        if reply.version > PROTOCOL_VERSION or reply.version < 2:
            raise ProtocolError(f"milter speaks protocol version {reply.version}")
        if reply.actions & ~offered_actions:
            raise ProtocolError(f"milter wants actions 0x{reply.actions:x} "
                                f"beyond offered 0x{offered_actions:x}")
        # Flags we never offered cannot be honoured; ignore them like Postfix.
        return cls(reply.version, reply.actions, reply.protocol & offered_protocol,
                   dict(reply.symlists))

    def sends(self, stage: str) -> bool:
        """Does the milter want this stage at all?"""
        return not (self.protocol & STAGE_INFO[stage].skip_flag)

    def expects_reply(self, stage: str) -> bool:
        """Will the milter answer this stage? (False: do not wait.)"""
        info = STAGE_INFO[stage]
        return self.sends(stage) and not (self.protocol & info.noreply_flag)

    @property
    def header_leading_space(self) -> bool:
        return bool(self.protocol & P_HDR_LEADSPC)

    @property
    def skip_allowed(self) -> bool:
        return bool(self.protocol & P_SKIP)

    def filter_macros(self, stage: str, macros: dict[str, str]) -> dict[str, str]:
        """Apply the milter's symbol list for this stage, if it sent one."""
        wanted = self.symlists.get(STAGE_INFO[stage].macro_stage)
        if wanted is None:
            return macros
        keep = set(wanted)
        return {k: v for k, v in macros.items() if k.strip("{}") in keep}
