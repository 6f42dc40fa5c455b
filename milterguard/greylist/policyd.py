"""Postfix policy delegation protocol server over the greylist store.

Sites already running a greylisting policy service point
``check_policy_service inet:127.0.0.1:60000`` at this one instead; it
shares the milter's store and settings, so a triplet passed through either
path is known to both.

Protocol (Postfix SMTPD_POLICY_README): the client sends ``name=value``
lines, an empty line ends a request; we answer ``action=...`` and an empty
line; a connection carries many requests. Postfix ignores attributes it
does not know and so do we.

A malformed request (a line without ``=``, a missing address) is answered
``action=DUNNO`` and logged: refusing mail because a policy request was odd
would stop mail for a fault of ours or of the protocol, while DUNNO lets the
rest of the restrictions decide. Only a line beyond ``MAX_LINE`` bytes or a
request beyond ``MAX_ATTRIBUTES`` closes that one connection (after the
DUNNO), since it cannot be re-synchronised; other connections are unaffected.
"""

from __future__ import annotations

import io
import logging
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from milterguard.clientaddr import IPNetwork, client_in_networks
from milterguard.greylist.triplets import Greylist, GreylistResult

log = logging.getLogger("milterguard.policyd")

MAX_LINE = 8192
MAX_ATTRIBUTES = 200
#: Postfix closes idle policy connections itself (smtpd_policy_service_max_idle,
#: 300 s); this reclaims connections of clients that vanished without a FIN.
IDLE_TIMEOUT = 900.0

DUNNO = "DUNNO"


@dataclass
class PolicyRequest:
    """One request's attributes, and what was wrong with it, if anything."""

    attrs: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: The connection cannot continue after this request (overlong input).
    fatal: bool = False


@dataclass
class Exemptions:
    """Clients the milter never greylists, so the policy service does not
    either (issue 12, finding 9): ``allowlist.networks`` and, with
    ``allowlist.authenticated``, SASL-authenticated clients."""

    networks: list[IPNetwork] = field(default_factory=list)
    authenticated: bool = True

    @classmethod
    def from_config(cls, config: Any) -> "Exemptions":
        allow = config.section("allowlist")
        return cls(allow.networks("networks"), bool(allow.get("authenticated", True)))

    def reason(self, attrs: dict[str, str]) -> str:
        """Why this request is exempt ("" if it is not)."""
        if self.authenticated and attrs.get("sasl_username"):
            return "authenticated"
        client = attrs.get("client_address", "")
        if client and self.networks and client_in_networks(client, self.networks):
            return "allowlisted"
        return ""


def policy_action(greylist: Greylist, request: PolicyRequest,
                  exemptions: Exemptions | None = None) -> tuple[str, GreylistResult | None]:
    """The ``action=`` value for one request.

    No sockets here (the server below reads and writes them), but not pure
    either: a RCPT request is a greylisting decision, which reads and
    writes the greylist store.
    """
    if request.errors:
        return DUNNO, None
    attrs = request.attrs
    kind = attrs.get("request", "")
    if kind != "smtpd_access_policy":
        request.errors.append(f"unsupported request={kind!r}")
        return DUNNO, None
    # Greylisting is per recipient: only at RCPT TO (or an unknown state
    # that carries a recipient, as older Postfix versions send).
    state = attrs.get("protocol_state", "RCPT").upper()
    if state != "RCPT":
        return DUNNO, None
    client, rcpt = attrs.get("client_address", ""), attrs.get("recipient", "")
    if not client or not rcpt:
        request.errors.append("missing client_address or recipient")
        return DUNNO, None
    if exemptions is not None and exemptions.reason(attrs):
        return DUNNO, None
    result = greylist.decide(client, attrs.get("sender", ""), rcpt)
    if result.finding is not None and result.finding.reply is not None:
        # DEFER_IF_PERMIT: a later reject in the restrictions still wins,
        # as with postgrey. Postfix takes the leading enhanced status code.
        reply = result.finding.reply
        return f"DEFER_IF_PERMIT {reply.xcode} {reply.text}", result
    return DUNNO, result


def read_request(rfile: io.BufferedIOBase) -> PolicyRequest | None:
    """Read lines up to the empty line; None at a clean end of the stream."""
    request = PolicyRequest()
    count = 0
    while True:
        raw = rfile.readline(MAX_LINE + 1)
        if not raw:
            if count:
                request.errors.append("connection closed inside a request")
                request.fatal = True
                return request
            return None
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            request.errors.append(f"line longer than {MAX_LINE} bytes")
            request.fatal = True
            return request
        line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        if not line:
            if count == 0:
                # A stray empty line between requests: ignore, do not answer
                # a request nobody made (that would shift every later answer).
                continue
            return request
        count += 1
        if count > MAX_ATTRIBUTES:
            request.errors.append(f"more than {MAX_ATTRIBUTES} attributes")
            request.fatal = True
            return request
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            request.errors.append(f"malformed line {line[:80]!r}")
            continue
        request.attrs[name.strip()] = value


class _Handler(socketserver.StreamRequestHandler):
    server: "PolicyServer"

    def handle(self) -> None:
        self.connection.settimeout(self.server.idle_timeout)
        peer = "%s:%s" % self.client_address[:2]
        try:
            while True:
                request = read_request(self.rfile)
                if request is None:
                    return
                action = self.server.answer(request, peer)
                self.wfile.write(f"action={action}\n\n".encode("utf-8"))
                self.wfile.flush()
                if request.fatal:
                    return
        except (OSError, socket.timeout) as exc:
            log.info("event=policy-connection-closed peer=%s reason=%r", peer, str(exc))


class PolicyServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A thread per Postfix connection (smtpd keeps one open per process)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], greylist: Greylist,
                 idle_timeout: float = IDLE_TIMEOUT,
                 exemptions: Exemptions | None = None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.greylist = greylist
        self.exemptions = exemptions
        self.idle_timeout = idle_timeout
        self._counts_lock = threading.Lock()
        self.counts: dict[str, int] = {}
        super().__init__(address, _Handler)

    def answer(self, request: PolicyRequest, peer: str) -> str:
        try:
            action, result = policy_action(self.greylist, request, self.exemptions)
        except Exception as exc:  # a bug must not stop mail (logged with its traceback)
            log.exception("event=policy-error peer=%s error=%r", peer, str(exc))
            request.errors.append("internal error")
            action, result = DUNNO, None
        if request.errors:
            outcome = "malformed"
            log.warning("event=policy-malformed peer=%s action=%s errors=%r",
                        peer, action, "; ".join(request.errors))
        elif result is None:
            outcome = "skipped"
            exempt = self.exemptions.reason(request.attrs) if self.exemptions else ""
            if exempt:
                outcome = exempt
                log.info("event=policy peer=%s client=%s outcome=%s action=DUNNO",
                         peer, request.attrs.get("client_address", ""), exempt)
        else:
            outcome = result.outcome
            log.info("event=policy peer=%s %s action=%s queue_id=%s",
                     peer, result.log_fields(), action.split(" ", 1)[0],
                     request.attrs.get("queue_id", ""))
        with self._counts_lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
        return action


def serve(server: PolicyServer, stop: threading.Event,
          on_ready: Callable[[], None] | None = None) -> None:
    """Serve until ``stop`` is set; cleanup of expired entries runs meanwhile."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="policyd", daemon=True)
    thread.start()
    if on_ready:
        on_ready()
    try:
        while not stop.wait(min(60.0, server.greylist.settings.cleanup_interval)):
            server.greylist.maybe_cleanup()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
