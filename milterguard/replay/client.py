"""Replay sample mail through a running milter, playing Postfix's part.

This is the MTA side of the milter protocol: it opens one connection per
message, negotiates, and sends connect, HELO, MAIL, each RCPT, DATA, the
headers, end of headers, the body in chunks and end of message, with the
macros Postfix would send, honouring the stages and replies the milter
negotiated away (pymilter's ``Milter.Base`` disables every callback a
milter does not define; an MTA side that waits for those replies hangs).

Message files are RFC 5322 bytes with any line ending. The envelope comes
from ``X-Replay-*`` pseudo-headers in the header block, which are removed
before the message is sent:

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

A message that reaches end of message is ``accept``ed (delivered), or
``tag`` when the milter added ``X-Spam-Flag: YES`` (delivered but marked by
the score), or ``quarantine`` when it asked for the hold queue.

Rule ids ("hits") are read from two places the daemon controls:
- an ``X-Milterguard`` header added, inserted or changed at end of message,
  whose value lists ids separated by commas and/or spaces; ``key=value``
  tokens are ignored except ``hits=ID[,ID...]``, so both
  ``X-Milterguard: rule-a, rule-b`` and ``X-Milterguard: hits=rule-a,rule-b
  score=3.5`` work;
- a reply text ending in ``[id, id]``, e.g. ``550 5.7.1 Rejected [rule-a]``
  (the only channel at a reject, where no header can be added). Replies of
  refused recipients count too.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import os
import re
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

from milterguard.milter import protocol as mp
from milterguard.errors import MilterguardError, ProtocolError

MTA_HOSTNAME = "mx.example.net"
DEFAULT_CLIENT_ADDR = "192.0.2.1"
DEFAULT_CLIENT_NAME = "client.example.com"
DEFAULT_SENDER = "sender@example.com"
DEFAULT_RCPT = "rcpt@example.net"
CLIENT_PORT = 54321
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
#: Postfix passes folded headers to milters with their line breaks as "\n"
#: (milter8.c: "Sendmail 8 sends multi-line headers as text separated by
#: newline"), not CRLF; the replay does the same.
FOLD = b"\n"

#: Files a directory walk skips: expectation files, notes, scripts.
NON_MESSAGE_SUFFIXES = (".yaml", ".yml", ".md", ".rst", ".json", ".py", ".sh",
                        ".gz", ".bz2", ".xz", ".zip", ".tar", ".orig", ".rej", ".swp")
NON_MESSAGE_PREFIXES = ("README", "LICENSE", "COPYING")

#: Macros Postfix sends at a later stage than connect; other X-Replay-Macro
#: names go with connect, which libmilter keeps for the whole connection.
MACRO_STAGE = {
    "tls_version": "helo", "cipher": "helo", "cipher_bits": "helo",
    "cert_subject": "helo", "cert_issuer": "helo",
    "auth_type": "mail", "auth_authen": "mail", "auth_author": "mail",
    "mail_addr": "mail", "mail_host": "mail", "mail_mailer": "mail",
    "rcpt_addr": "rcpt", "rcpt_host": "rcpt", "rcpt_mailer": "rcpt",
    "i": "data",
}

DEFAULT_REPLY = {
    "reject": "550 5.7.1 Command rejected",
    "tempfail": "451 4.7.1 Service unavailable - try again later",
    "shutdown": "421 4.7.0 Milter requested shutdown",
}

_LINE_END = re.compile(rb"\r\n|\r|\n")
_HEADER = re.compile(rb"([!-9;-~]+)[ \t]*:")
_REPLY_IDS = re.compile(r"\[([^\[\]]*)\]\s*$")
_ID_SPLIT = re.compile(r"[\s,;]+")


# ------------------------------------------------------------- messages

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
    #: (name, raw text after the colon); folded lines joined with FOLD
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
            headers[-1][1] += FOLD + line
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


def new_queue_id() -> str:
    """A Postfix-like short queue id (hex, upper case)."""
    return secrets.token_hex(5).upper()


# --------------------------------------------------------------- results

@dataclass
class ReplayResult:
    """How one message fared. ``action`` "accept" at eom means delivered."""

    file: str
    stage: str = ""
    action: str = ""
    reply: str = ""
    hits: list[str] = field(default_factory=list)
    added_headers: list[tuple[str, str]] = field(default_factory=list)
    changed_headers: list[tuple[str, str]] = field(default_factory=list)
    quarantine: str = ""
    refused_rcpts: list[tuple[str, str]] = field(default_factory=list)
    queue_id: str = ""
    ms: float = 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["added_headers"] = [list(h) for h in self.added_headers]
        out["changed_headers"] = [list(h) for h in self.changed_headers]
        out["refused_rcpts"] = [{"rcpt": r, "reply": t} for r, t in self.refused_rcpts]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def ids_from_header(value: str) -> list[str]:
    ids = []
    for token in _ID_SPLIT.split(value.strip()):
        key, sep, rest = token.partition("=")
        if not sep:
            ids.append(token)
        elif key.lower() == "hits":
            ids += [t for t in rest.split(",") if t]
    return [i for i in ids if i]


def ids_from_reply(reply: str) -> list[str]:
    last = reply.rstrip().split("\n")[-1]
    match = _REPLY_IDS.search(last)
    return [t for t in _ID_SPLIT.split(match.group(1)) if t] if match else []


def _add_unique(target: list[str], ids: Iterable[str]) -> None:
    for i in ids:
        if i not in target:
            target.append(i)


# ------------------------------------------------------------ transport

def parse_socket_spec(spec: str) -> tuple[socket.AddressFamily, object]:
    """libmilter socket syntax: unix:/path, local:/path, inet:PORT@HOST, inet6:PORT@HOST."""
    kind, sep, rest = spec.partition(":")
    if not sep:
        if spec.startswith("/"):
            return socket.AF_UNIX, spec
        raise MilterguardError(f"bad socket spec {spec!r} (want unix:/path or inet:PORT@HOST)")
    kind = kind.lower()
    if kind in ("unix", "local"):
        if not rest:
            raise MilterguardError(f"bad socket spec {spec!r}: no path")
        return socket.AF_UNIX, rest
    if kind in ("inet", "inet6"):
        port_text, _, host = rest.partition("@")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise MilterguardError(f"bad socket spec {spec!r}: bad port")
        host = host.strip("[]") or ("::1" if kind == "inet6" else "127.0.0.1")
        family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
        return family, (host, int(port_text))
    raise MilterguardError(f"bad socket spec {spec!r}: unknown kind {kind!r}")


def open_socket(spec: str, timeout: float) -> socket.socket:
    family, address = parse_socket_spec(spec)
    if family == socket.AF_UNIX:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        host, port = address  # type: ignore[misc]
        # inet:PORT@name may need resolving; take the first address of the family.
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        address = infos[0][4]
        sock = socket.socket(family, socket.SOCK_STREAM)
        # Writes are batched until a reply is due (see _flush), so Nagle only
        # adds delay (pitfall 3 of the design notes).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    try:
        sock.connect(address)  # type: ignore[arg-type]
    except BaseException:
        sock.close()
        raise
    return sock


class _Ended(Exception):
    """The conversation reached a decision before end of message."""


class MilterClient:
    """One MTA-side milter connection; stage methods return the decision."""

    def __init__(self, sock: socket.socket, quickack: bool = True) -> None:
        self.sock = sock
        self.buffer = mp.PacketBuffer()
        self.out = bytearray()
        self.neg = mp.Negotiated()
        self.skip_stage = ""
        self.modifications: list[mp.Response] = []
        self.quickack = (sock.family != socket.AF_UNIX and _TCP_QUICKACK is not None
                         and quickack)

    def _flush(self) -> None:
        if self.out:
            self.sock.sendall(bytes(self.out))
            self.out.clear()

    def _read_packet(self) -> tuple[bytes, bytes]:
        self._flush()
        while True:
            pkt = self.buffer.next_packet()
            if pkt is not None:
                return pkt
            data = self.sock.recv(65536)
            if self.quickack:
                # libmilter writes each eom modification and the final reply
                # separately; with Nagle on its side and delayed ACK on ours
                # every message with an added header stalls ~40 ms on TCP.
                self.sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            if not data:
                raise ProtocolError("milter closed the connection")
            self.buffer.feed(data)

    def negotiate(self) -> mp.Negotiated:
        self.out += mp.encode_optneg()
        command, data = self._read_packet()
        if command != mp.C_OPTNEG:
            raise ProtocolError(f"expected OPTNEG reply, got {command!r}")
        self.neg = mp.Negotiated.from_reply(mp.decode_optneg(data))
        return self.neg

    def event(self, stage: str, pkt: bytes, macros: dict[str, str] | None = None
              ) -> mp.Response | None:
        """Send one stage; the milter's decision, or None if none is due."""
        if self.skip_stage:
            if stage == self.skip_stage:
                return None      # milter said SKIP for the rest of this stage
            self.skip_stage = ""
        # Like Postfix, send the macros even for a stage the milter disabled,
        # so later callbacks can still read them.
        if macros:
            wanted = self.neg.filter_macros(stage, macros)
            if wanted:
                self.out += mp.encode_macros(mp.STAGE_INFO[stage].command, wanted)
        if not self.neg.sends(stage):
            return None
        self.out += pkt
        if not self.neg.expects_reply(stage):
            return None
        while True:
            command, data = self._read_packet()
            resp = mp.decode_response(command, data)
            if resp.kind == mp.R_PROGRESS:
                continue
            if resp.is_decision:
                if resp.kind == mp.R_SKIP:
                    self.skip_stage = stage
                return resp
            if stage != "eom":
                raise ProtocolError(f"response {command!r} not allowed at {stage}")
            self.modifications.append(resp)

    def send_only(self, command: bytes) -> None:
        """Abort and quit: no reply is due."""
        self.out += mp.encode_simple(command)
        self._flush()


def _decision(resp: mp.Response | None) -> tuple[str, str]:
    """(action, reply) of a stage's answer; 'continue' when nothing decided."""
    if resp is None:
        return "continue", ""
    kind = resp.kind
    if kind in (mp.R_CONTINUE, mp.R_SKIP):
        return "continue", ""
    if kind == mp.R_ACCEPT:
        return "accept", ""
    if kind == mp.R_DISCARD:
        return "discard", ""
    if kind == mp.R_REJECT:
        return "reject", DEFAULT_REPLY["reject"]
    if kind == mp.R_TEMPFAIL:
        return "tempfail", DEFAULT_REPLY["tempfail"]
    if kind in (mp.R_SHUTDOWN, mp.R_CONN_FAIL):
        return "tempfail", DEFAULT_REPLY["shutdown"]
    text = resp.text.replace("%%", "%")
    if text[:1] == "4":
        return "tempfail", text
    if text[:1] == "5":
        return "reject", text
    raise ProtocolError(f"malformed reply code {text!r}")


# ------------------------------------------------------------ conversation

class _Conversation:
    """Drives one message through a MilterClient and fills a ReplayResult."""

    def __init__(self, client: MilterClient, msg: ParsedMessage, result: ReplayResult) -> None:
        self.client = client
        self.msg = msg
        self.env = msg.envelope
        self.result = result
        self.qid = result.queue_id
        self.user_macros: dict[str, dict[str, str]] = {}
        for name, value in self.env.macros.items():
            self.user_macros.setdefault(MACRO_STAGE.get(name, "connect"), {})[name] = value

    def _macros(self, stage: str, base: dict[str, str]) -> dict[str, str]:
        out = dict(base)
        out.update(self.user_macros.get(stage, {}))
        return out

    def _step(self, stage: str, pkt: bytes, macros: dict[str, str]) -> mp.Response | None:
        self.result.stage = stage
        resp = self.client.event(stage, pkt, self._macros(stage, macros))
        action, reply = _decision(resp)
        if action == "discard" and stage in ("connect", "helo"):
            action = "continue"      # Postfix ignores DISCARD for a connection
        if action != "continue":
            self.result.action, self.result.reply = action, reply
            raise _Ended
        return resp

    def _connect(self) -> None:
        env = self.env
        name = env.client_name or "unknown"
        try:
            version = ipaddress.ip_address(env.client_addr).version
        except ValueError:
            raise MilterguardError(f"X-Replay-Client: bad address {env.client_addr!r}") from None
        family = mp.FAMILY_INET6 if version == 6 else mp.FAMILY_INET
        # Postfix hands "[addr]" as the host name when reverse DNS failed.
        host = f"[{env.client_addr}]" if name == "unknown" else name
        macros = {"j": MTA_HOSTNAME, "{daemon_name}": MTA_HOSTNAME, "v": "Postfix",
                  "{client_addr}": env.client_addr, "{client_name}": name,
                  "_": f"{name} [{env.client_addr}]"}
        self._step("connect", mp.encode_connect(host, family, CLIENT_PORT, env.client_addr),
                   macros)
        self._step("helo", mp.encode_helo(env.helo), {})

    def _envelope(self) -> None:
        env = self.env
        mail_macros = {"{mail_addr}": env.sender or ""}
        if env.auth:
            mail_macros.update({"{auth_type}": "PLAIN", "{auth_authen}": env.auth})
        self._step("mail", mp.encode_mail([f"<{env.sender}>"]), mail_macros)
        accepted = 0
        refusals: list[tuple[str, str]] = []
        for rcpt in env.recipients:
            self.result.stage = "rcpt"
            resp = self.client.event("rcpt", mp.encode_rcpt([f"<{rcpt}>"]),
                                     self._macros("rcpt", {"{rcpt_addr}": rcpt}))
            action, reply = _decision(resp)
            if action in ("reject", "tempfail"):
                # A refusal at RCPT drops that recipient only.
                refusals.append((action, reply))
                self.result.refused_rcpts.append((rcpt, reply))
                continue
            if action != "continue":
                self.result.action, self.result.reply = action, reply
                raise _Ended
            accepted += 1
        if not accepted:
            kinds = {a for a, _ in refusals}
            action = "reject" if kinds == {"reject"} else "tempfail"
            self.result.action = action
            self.result.reply = next(r for a, r in refusals if a == action)
            raise _Ended

    def _content(self) -> None:
        leadspc = self.client.neg.header_leading_space
        self._step("data", mp.encode_simple(mp.C_DATA), {"i": self.qid})
        for name, value in self.msg.headers:
            if not leadspc and value.startswith(b" "):
                value = value[1:]    # Postfix eats one space after the colon
            self._step("header", mp.encode_header(name, value), {"i": self.qid})
        self._step("eoh", mp.encode_simple(mp.C_EOH), {"i": self.qid})
        body = self.msg.body
        for start in range(0, len(body), mp.BODY_CHUNK):
            chunk = body[start:start + mp.BODY_CHUNK]
            resp = self._step("body", mp.encode_body(chunk), {"i": self.qid})
            if resp is not None and resp.kind == mp.R_SKIP:
                break
        self.client.skip_stage = ""
        resp = self._step_eom()
        action, reply = _decision(resp)
        if action in ("continue", "accept"):
            # Delivered, but marked as spam by the milter's score: "tag".
            tagged = any(n.lower() == "x-spam-flag" and v.strip().upper() == "YES"
                         for n, v in self.result.added_headers)
            action = ("quarantine" if self.result.quarantine else
                      "tag" if tagged else "accept")
        self.result.action, self.result.reply = action, reply

    def _step_eom(self) -> mp.Response | None:
        self.result.stage = "eom"
        resp = self.client.event("eom", mp.encode_simple(mp.C_EOM),
                                 self._macros("eom", {"i": self.qid}))
        for mod in self.client.modifications:
            if mod.kind in (mp.R_ADDHEADER, mp.R_INSHEADER):
                self.result.added_headers.append((mod.name, mod.value))
            elif mod.kind == mp.R_CHGHEADER:
                self.result.changed_headers.append((mod.name, mod.value))
            elif mod.kind == mp.R_QUARANTINE:
                self.result.quarantine = mod.text or "quarantined"
        return resp

    def run(self) -> None:
        in_message = False
        try:
            self._connect()
            in_message = True
            self._envelope()
            self._content()
            in_message = False
        except _Ended:
            pass
        if in_message:
            self.client.send_only(mp.C_ABORT)
        self.client.send_only(mp.C_QUIT)


def _collect_hits(result: ReplayResult) -> None:
    for name, value in result.added_headers + result.changed_headers:
        if name.lower() == "x-milterguard":
            _add_unique(result.hits, ids_from_header(value))
    for _, reply in result.refused_rcpts:
        _add_unique(result.hits, ids_from_reply(reply))
    _add_unique(result.hits, ids_from_reply(result.reply))


def replay_message(socket_spec: str, raw_bytes: bytes, name: str = "x",
                   timeout: float = 10.0) -> ReplayResult:
    """Replay one message over a fresh connection; errors become results."""
    result = ReplayResult(file=name, queue_id=new_queue_id())
    started = time.monotonic()
    try:
        msg = parse_message(raw_bytes)
        with open_socket(socket_spec, timeout) as sock:
            client = MilterClient(sock)
            result.stage = "connect"
            client.negotiate()
            _Conversation(client, msg, result).run()
    except (OSError, ProtocolError, MilterguardError) as exc:
        # TimeoutError is an OSError; str() of it is often empty.
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"timeout after {timeout:g}s"
        result.action, result.reply = "error", reason
    result.ms = round((time.monotonic() - started) * 1000, 2)
    _collect_hits(result)
    return result


# ------------------------------------------------------------ many files

def is_message_file(name: str) -> bool:
    base = os.path.basename(name)
    return not (base.startswith(".") or base.lower().endswith(NON_MESSAGE_SUFFIXES)
                or base.upper().startswith(NON_MESSAGE_PREFIXES))


def collect_files(paths: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Files named directly, plus message files found under directories (sorted)."""
    skip = {os.path.abspath(p) for p in exclude}
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = []
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [os.path.join(root, f) for f in files if is_message_file(f)]
            out += sorted(found)
        elif os.path.exists(path):
            out.append(path)
        else:
            raise MilterguardError(f"no such file or directory: {path}")
    return [p for p in out if os.path.abspath(p) not in skip]


def replay_file(socket_spec: str, path: str, timeout: float = 10.0) -> ReplayResult:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        return ReplayResult(file=path, action="error", reply=f"cannot read: {exc.strerror}")
    return replay_message(socket_spec, raw, name=path, timeout=timeout)


def replay_files(socket_spec: str, files: list[str], jobs: int = 1,
                 timeout: float = 10.0) -> Iterator[ReplayResult]:
    """Results in the order of ``files``; ``jobs`` connections at a time."""
    if jobs <= 1:
        for path in files:
            yield replay_file(socket_spec, path, timeout)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(lambda p: replay_file(socket_spec, p, timeout), files)


def replay_paths(socket_spec: str, paths: Iterable[str], jobs: int = 1,
                 timeout: float = 10.0) -> Iterator[ReplayResult]:
    """Replay files and directory trees (see collect_files)."""
    return replay_files(socket_spec, collect_files(paths), jobs=jobs, timeout=timeout)


# ------------------------------------------------------------ formatting

def _flat(text: str) -> str:
    return " / ".join(line.strip() for line in text.splitlines() if line.strip())


def format_table(results: list[ReplayResult]) -> str:
    """A plain text table: file, stage, action, reply, hits."""
    rows = [("FILE", "STAGE", "ACTION", "REPLY", "HITS")]
    rows += [(r.file, r.stage, r.action, _flat(r.reply), ",".join(r.hits)) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)] + [row[4]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
