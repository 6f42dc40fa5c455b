"""One message through a running milter, the way Postfix would send it.

One connection per message: negotiate, then connect, HELO, MAIL, each
RCPT, DATA, the headers, end of headers, the body in chunks and end of
message, with the macros Postfix would send. The conversation stops where
Postfix would: at a reject or tempfail, when every recipient was refused,
or at an accept or discard.

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
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from milterguard import socketspec
from milterguard.errors import MilterguardError, ProtocolError
from milterguard.milter import protocol as mp
from milterguard.replay.client import MilterClient
from milterguard.replay.message import ParsedMessage, header_as_postfix_sends, parse_message

MTA_HOSTNAME = "mx.example.net"
CLIENT_PORT = 54321

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

#: What Postfix tells the client when the milter decides without a text.
DEFAULT_REPLY = {
    "reject": "550 5.7.1 Command rejected",
    "tempfail": "451 4.7.1 Service unavailable - try again later",
    "shutdown": "421 4.7.0 Milter requested shutdown",
}

_REPLY_IDS = re.compile(r"\[([^\[\]]*)\]\s*$")
_ID_SPLIT = re.compile(r"[\s,;]+")


def missing_headers(msg: ParsedMessage, queue_id: str,
                    now: datetime | None = None) -> list[tuple[bytes, bytes]]:
    """The headers Postfix's cleanup adds before the milter sees the message
    (Message-Id, Date, From, in that order, each only when missing), as it
    does for clients in local_header_rewrite_clients (by default its own
    addresses) or for every client with always_add_missing_headers = yes.
    Formats as measured with Postfix 3.7; From is the envelope sender, or
    MAILER-DAEMON for the null sender."""
    have = {name.lower() for name, _ in msg.headers}
    when = now or datetime.now(timezone.utc)
    added = []
    if b"message-id" not in have:
        stamp = when.strftime("%Y%m%d%H%M%S")
        added.append((b"Message-Id", f" <{stamp}.{queue_id}@{MTA_HOSTNAME}>".encode()))
    if b"date" not in have:
        added.append((b"Date", f" {email.utils.format_datetime(when)} (UTC)".encode()))
    if b"from" not in have:
        added.append((b"From", f" {msg.envelope.sender or 'MAILER-DAEMON'}".encode()))
    return added


def new_queue_id() -> str:
    """A Postfix-like short queue id (hex, upper case)."""
    return secrets.token_hex(5).upper()


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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["added_headers"] = [list(h) for h in self.added_headers]
        out["changed_headers"] = [list(h) for h in self.changed_headers]
        out["refused_rcpts"] = [{"rcpt": r, "reply": t} for r, t in self.refused_rcpts]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def ids_from_header(value: str) -> list[str]:
    """Rule ids in an X-Milterguard header value (see the module docstring)."""
    ids = []
    for token in _ID_SPLIT.split(value.strip()):
        key, sep, rest = token.partition("=")
        if not sep:
            ids.append(token)
        elif key.lower() == "hits":
            ids += [t for t in rest.split(",") if t]
    return [i for i in ids if i]


def ids_from_reply(reply: str) -> list[str]:
    """Rule ids in the ``[id, id]`` that ends a reply's last line."""
    last = reply.rstrip().split("\n")[-1]
    match = _REPLY_IDS.search(last)
    return [t for t in _ID_SPLIT.split(match.group(1)) if t] if match else []


def _add_unique(target: list[str], ids: Iterable[str]) -> None:
    for i in ids:
        if i not in target:
            target.append(i)


class _Ended(Exception):
    """The conversation reached a decision before end of message."""


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


class _Conversation:
    """Drives one message through a MilterClient and fills a ReplayResult."""

    def __init__(self, client: MilterClient, msg: ParsedMessage, result: ReplayResult,
                 add_missing_headers: bool = False) -> None:
        self.client = client
        self.msg = msg
        self.add_missing_headers = add_missing_headers
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
        headers = list(self.msg.headers)
        if self.add_missing_headers:
            headers += missing_headers(self.msg, self.qid)
        for name, value in headers:
            value = header_as_postfix_sends(name, value)
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
                   timeout: float = 10.0, add_missing_headers: bool = False) -> ReplayResult:
    """Replay one message over a fresh connection; errors become results
    (a message that cannot be sent never stops a batch).
    ``add_missing_headers``: add what Postfix's cleanup adds (missing_headers)."""
    result = ReplayResult(file=name, queue_id=new_queue_id())
    started = time.monotonic()
    try:
        msg = parse_message(raw_bytes)
        with socketspec.connect(socket_spec, timeout) as sock:
            client = MilterClient(sock)
            result.stage = "connect"
            client.negotiate()
            _Conversation(client, msg, result, add_missing_headers).run()
    except (OSError, ProtocolError, MilterguardError, ValueError) as exc:
        # TimeoutError is an OSError; str() of it is often empty.
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"timeout after {timeout:g}s"
        result.action, result.reply = "error", reason
    result.ms = round((time.monotonic() - started) * 1000, 2)
    _collect_hits(result)
    return result
