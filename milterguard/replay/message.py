"""Message files for replay: RFC 5322 bytes plus the envelope to send them with.

A message file is what a sample or a saved spam looks like on disk, with
any line ending (an mbox ``From `` line is skipped). The SMTP envelope and
the client come from ``X-Replay-*`` pseudo-headers in the header block,
which are removed before the message is sent:

    X-Replay-Client: 192.0.2.7 mail.example.com   (address, optional name;
                     also "addr=... name=..."; name "unknown" as Postfix)
    X-Replay-Helo: mail.example.com
    X-Replay-Mail-From: <sender@example.com>      ("<>" = null sender)
    X-Replay-Rcpt-To: a@example.net, b@example.net  (repeatable)
    X-Replay-Auth: alice                          ({auth_authen})
    X-Replay-Macro: tls_version=TLSv1.3           (repeatable)

Defaults: client 192.0.2.1 named client.example.com, HELO the client name,
sender from From (else sender@example.com), recipients from To (else
rcpt@example.net).
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass, field

from milterguard.errors import MilterguardError

DEFAULT_CLIENT_ADDR = "192.0.2.1"
DEFAULT_CLIENT_NAME = "client.example.com"
DEFAULT_SENDER = "sender@example.com"
DEFAULT_RCPT = "rcpt@example.net"
#: What joins a folded header's lines. Postfix passes folded headers to
#: milters with their line breaks as "\n" (milter8.c: "Sendmail 8 sends
#: multi-line headers as text separated by newline"), not CRLF; the replay
#: does the same.
CONTINUATION_LINE_BREAK = b"\n"

#: Bytes of one header ("Name:" and value) that Postfix hands a milter
#: (measured with Postfix 3.7: its cleanup accepts 120 KB headers, the
#: milter gets the first 60000 bytes). A longer single line is cut there;
#: a folded header keeps the lines that fit whole.
POSTFIX_HEADER_LIMIT = 60000

_LINE_END = re.compile(rb"\r\n|\r|\n")
_HEADER = re.compile(rb"([!-9;-~]+)[ \t]*:")


@dataclass
class Envelope:
    """The SMTP envelope and client a message is replayed with."""

    client_addr: str = DEFAULT_CLIENT_ADDR
    client_name: str = DEFAULT_CLIENT_NAME
    helo: str = ""
    sender: str | None = None          # None: take it from From
    recipients: list[str] = field(default_factory=list)
    auth: str = ""
    macros: dict[str, str] = field(default_factory=dict)


@dataclass
class ParsedMessage:
    envelope: Envelope
    #: (name, raw text after the colon); folded lines joined with CONTINUATION_LINE_BREAK
    headers: list[tuple[bytes, bytes]]
    body: bytes                         # CRLF line endings

    def milter_headers(self) -> list[tuple[str, str]]:
        """The headers as a milter receives them: text, without the one
        space Postfix drops after the colon (for explain and benchmarks)."""
        out = []
        for name, value in self.headers:
            text = value.decode("utf-8", "replace")
            out.append((name.decode("ascii", "replace"), text[1:] if text.startswith(" ") else text))
        return out


def header_as_postfix_sends(name: bytes, value: bytes) -> bytes:
    """A header's value as Postfix hands it to a milter.

    Postfix passes header values as C strings: a NUL ends the value there
    (the header is still sent; a NUL in the body passes as it is). A
    header longer than POSTFIX_HEADER_LIMIT is cut; the rest is dropped.
    """
    value = value.split(b"\0", 1)[0]
    room = POSTFIX_HEADER_LIMIT - len(name) - 1
    if len(value) > room:
        line_end = value.rfind(CONTINUATION_LINE_BREAK, 0, room + 1)
        value = value[:line_end] if line_end > 0 else value[:room]
    return value


def _unfold(value: bytes) -> str:
    return " ".join(value.decode("utf-8", "replace").split())


def _strip_angle(addr: str) -> str:
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1].strip()
    return addr


def _addresses(values: list[str]) -> list[str]:
    return [a for _, a in email.utils.getaddresses(values) if "@" in a]


def _apply_replay_header(env: Envelope, name: str, value: str) -> None:
    key = name.lower()[len("x-replay-"):]
    if key == "client":
        bare = []
        for token in value.split():
            k, sep, v = token.partition("=")
            if sep and k.lower() in ("addr", "name"):
                setattr(env, "client_addr" if k.lower() == "addr" else "client_name",
                        v.strip("[]"))
            else:
                bare.append(token.strip("[]"))
        if bare:
            env.client_addr = bare[0]
        if len(bare) > 1:
            env.client_name = bare[1]
    elif key == "helo":
        env.helo = value
    elif key == "mail-from":
        env.sender = _strip_angle(value)
    elif key == "rcpt-to":
        env.recipients += [_strip_angle(r) for r in value.split(",") if r.strip()]
    elif key == "auth":
        env.auth = value
    elif key == "macro":
        mname, sep, mvalue = value.partition("=")
        if not sep or not mname.strip():
            raise MilterguardError(f"X-Replay-Macro needs name=value, got {value!r}")
        env.macros[mname.strip().strip("{}")] = mvalue.strip()
    else:
        raise MilterguardError(f"unknown pseudo-header {name}")


def parse_message(raw: bytes) -> ParsedMessage:
    """Split a message file into envelope, headers and CRLF body."""
    lines = _LINE_END.split(raw)
    if lines and lines[-1] == b"":
        lines.pop()          # the file ended with a line break
    idx = 0
    if lines and lines[0].startswith(b"From "):
        idx = 1              # mbox separator line, not a header
    headers: list[list[bytes]] = []
    while idx < len(lines):
        line = lines[idx]
        if line == b"":
            idx += 1
            break
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1][1] += CONTINUATION_LINE_BREAK + line
            idx += 1
            continue
        match = _HEADER.match(line)
        if not match:
            break            # not a header: Postfix starts the body here
        headers.append([match.group(1), line[match.end():]])
        idx += 1
    env = Envelope()
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        text_name = name.decode("ascii", "replace")
        if text_name.lower().startswith("x-replay-"):
            _apply_replay_header(env, text_name, _unfold(value))
        else:
            kept.append((name, value))
    if not env.helo:
        env.helo = env.client_name if env.client_name != "unknown" else DEFAULT_CLIENT_NAME
    if env.sender is None:
        froms = _addresses([_unfold(v) for n, v in kept if n.lower() == b"from"])
        env.sender = froms[0] if froms else DEFAULT_SENDER
    if not env.recipients:
        env.recipients = (_addresses([_unfold(v) for n, v in kept if n.lower() == b"to"])
                          or [DEFAULT_RCPT])
    body = b"".join(line + b"\r\n" for line in lines[idx:])
    return ParsedMessage(env, kept, body)
