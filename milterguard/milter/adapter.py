"""The only module that talks to pymilter (libmilter).

It converts libmilter callbacks into Session calls and Session verdicts into
libmilter answers. Any exception inside a callback is logged and answered
with the configured fallback, never with its text.

Every callback is implemented, so the MTA is never told to skip a stage
(SMFIP_NO*): Postfix sends a skipped stage's macros all the same, with no
answer due, and over TCP the packet after such an unanswered one waits for
our delayed ACK (about 40 ms a message, with Nagle on the MTA's side).

Which stages are answered is negotiated separately. On a unix socket the
stages whose answer is always "continue" (DATA, each header, each body
chunk, and connect and HELO while their rejects wait for the first RCPT)
are negotiated as no-reply (SMFIP_NR_*): the MTA sends them without
waiting, which saves a round trip per header. On TCP that would bring back
the delayed-ACK stall, so there every stage is answered.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable

import Milter
import milter

from milterguard.errors import MilterguardError
from milterguard.milter.engine import Engine
from milterguard.milter.macroguard import macro_lists_even
from milterguard.milter.session import INTERNAL_TEMPFAIL, Session
from milterguard.socketspec import SocketSpec
from milterguard.verdict import Action, Verdict

log = logging.getLogger("milterguard.milter")

#: Macros we read; Postfix sends them when milter_*_macros allow (README).
CONNECT_MACROS = ("j", "{daemon_name}", "{client_addr}", "{client_name}")
MAIL_MACROS = ("i", "{auth_authen}", "{auth_type}", "{mail_addr}")

# pymilter ships no types: the answer codes this module returns, typed once.
CONTINUE: int = Milter.CONTINUE
NOREPLY: int = Milter.NOREPLY
TEMPFAIL: int = Milter.TEMPFAIL

_ANSWER: dict[Action, int] = {
    Action.CONTINUE: Milter.CONTINUE,
    Action.TAG: Milter.CONTINUE,
    Action.ACCEPT: Milter.ACCEPT,
    Action.REJECT: Milter.REJECT,
    Action.TEMPFAIL: Milter.TEMPFAIL,
    Action.DISCARD: Milter.DISCARD,
    Action.QUARANTINE: Milter.CONTINUE,  # quarantine is an eom modification
}


def _client_address(family: int, hostaddr: Any) -> tuple[str, int]:
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(hostaddr, tuple):
        addr = str(hostaddr[0])
        if addr.lower().startswith("ipv6:"):
            addr = addr[5:]
        return addr, int(hostaddr[1]) if len(hostaddr) > 1 else 0
    return "", 0


class MessagesInFlight:
    """How many messages are between MAIL FROM and their end, so a stop can
    wait for them (SIGTERM drains instead of resetting sessions), and
    whether new ones are still welcome."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0
        self.closing = False

    def enter(self) -> None:
        with self._cond:
            self.count += 1

    def leave(self) -> None:
        with self._cond:
            self.count -= 1
            if self.count <= 0:
                self._cond.notify_all()

    def drain(self, timeout: float) -> int:
        """Refuse new messages, then block until none is in flight or
        ``timeout`` passed; returns how many were still in flight."""
        with self._cond:
            self.closing = True
            self._cond.wait_for(lambda: self.count <= 0, timeout)
            return max(self.count, 0)


IN_FLIGHT = MessagesInFlight()
#: The answer to MAIL FROM while draining: the MTA retries later.
SHUTTING_DOWN = ("451", "4.3.2", "Service shutting down, try again later")

#: Stages that always answer "continue" and may go unanswered (unix sockets).
NO_REPLY_STAGES = Milter.P_NR_DATA | Milter.P_NR_HDR | Milter.P_NR_BODY
#: Also unanswered when the policy holds every connect/HELO verdict.
NO_REPLY_CONNECT = Milter.P_NR_CONN | Milter.P_NR_HELO


class MilterguardMilter(Milter.Base):  # type: ignore[misc]  # untyped base: pymilter has no types
    """One instance per SMTP connection (libmilter gives each its own thread)."""

    engine: Engine  # set by serve() before libmilter starts
    #: P_NR_* bits to ask for when the MTA offers them; serve() sets it
    #: from the socket kind.
    no_reply_mask = 0
    #: macroguard could not read this libmilter's struct (logged once).
    _guard_unavailable_logged = False
    #: Per connection (instance attributes once set): a malformed macro
    #: packet was logged; a message is between MAIL FROM and its end.
    _malformed_macros = False
    _in_message = False

    def __init__(self) -> None:
        self.session = Session(self.engine)
        self._protocol = 0
        # An internal error in a no-reply stage, answered at the next stage
        # that has an answer (end of headers or of message).
        self._silent_error = False

    def negotiate(self, opts: list[int]) -> int:
        offered = opts[1]
        result: int = Milter.Base.negotiate(self, opts)
        if result == CONTINUE and self.no_reply_mask:
            mask = self.no_reply_mask
            if self.engine.policy.quiet_connect:
                mask |= NO_REPLY_CONNECT
            opts[1] |= offered & mask
            self._protocol = opts[1]
        return result

    # -- plumbing ----------------------------------------------------------

    def _macros(self, names: tuple[str, ...]) -> dict[str, str]:
        """The macros among ``names`` that the MTA sent, or none at all when
        a macro packet was malformed (looking anything up then would crash
        libmilter: see macroguard). Without macros the client counts as
        unauthenticated, so a forged packet can only make checks stricter."""
        safe = macro_lists_even(self._ctx)
        if safe is False:
            if not self._malformed_macros:
                self._malformed_macros = True
                log.warning("event=malformed-macros client=%s action=ignored "
                            "reason=odd-number-of-strings", self.session.client.addr or "-")
            return {}
        if safe is None and not MilterguardMilter._guard_unavailable_logged:
            MilterguardMilter._guard_unavailable_logged = True
            log.warning("event=macro-guard-unavailable reason=unknown-libmilter-layout")
        out = {}
        for name in names:
            value = self.getsymval(name)
            if value:
                out[name] = value
        return out

    def _answer(self, verdict: Verdict) -> int:
        if verdict.reply is not None and verdict.action in (Action.REJECT, Action.TEMPFAIL):
            r = verdict.reply
            self.setreply(r.code, r.xcode, r.text.replace("%", "%%"))
        return _ANSWER[verdict.action]

    def _internal_error(self) -> int:
        if self.engine.policy.on_internal_error == "tempfail":
            r = INTERNAL_TEMPFAIL
            self.setreply(r.code, r.xcode, r.text)
            return TEMPFAIL
        return CONTINUE

    def _timed(self, stage: str, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)``, its latency counted when metrics are on; an
        exception is logged (never answered with its text) and gives None."""
        metrics = self.engine.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        try:
            return call(*args)
        except Exception:
            log.exception("event=internal-error stage=%s client=%s", stage,
                          self.session.client.addr or "-")
            return None
        finally:
            if metrics is not None:
                metrics.stage_latency(stage, time.perf_counter() - started)

    def _guard(self, stage: str, call: Callable[..., Verdict], *args: Any) -> int:
        """Answer ``call(*args)``'s verdict; an exception gets the fallback."""
        answer = self._timed(stage, self._answered, call, args)
        return self._internal_error() if answer is None else answer

    def _answered(self, call: Callable[..., Verdict], args: tuple[Any, ...]) -> int:
        if self._silent_error:
            self._silent_error = False
            return self._internal_error()
        return self._answer(call(*args))

    def _quiet(self, stage: str, flag: int, call: Callable[..., Verdict], *args: Any) -> int:
        """A stage that always continues; unanswered when negotiated so.

        A final verdict there can only come from connect or HELO after a
        reload changed the policy mid-connection: it is held for the first
        RCPT, like a delayed reject.
        """
        if not self._protocol & flag:
            return self._guard(stage, call, *args)
        verdict = self._timed(stage, call, *args)
        if verdict is None:
            self._silent_error = True
        elif verdict.final:
            self.session.hold(verdict)
        return NOREPLY

    # -- callbacks, in SMTP order --------------------------------------------
    # Each passes the session method and its arguments to _guard rather than
    # a closure: these run a dozen times per message, and in the daemon every
    # Python call counts (see bench/bench_milter_cpu.py).

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        addr, port = _client_address(family, hostaddr)
        return self._quiet("connect", Milter.P_NR_CONN, self.session.connect, hostname or "",
                           addr, port, self._macros(CONNECT_MACROS))

    def hello(self, heloname: str) -> int:
        return self._quiet("helo", Milter.P_NR_HELO, self.session.helo, heloname or "")

    def _message_started(self) -> None:
        if not self._in_message:
            self._in_message = True
            IN_FLIGHT.enter()

    def _message_ended(self) -> None:
        if self._in_message:
            self._in_message = False
            IN_FLIGHT.leave()

    def envfrom(self, mailfrom: str, *params: str) -> int:
        if IN_FLIGHT.closing:
            self.setreply(*SHUTTING_DOWN)
            return TEMPFAIL
        self._message_started()
        answer = self._guard("mail", self.session.mail, (mailfrom or "").strip("<>"),
                             self._macros(MAIL_MACROS))
        if answer not in (CONTINUE, NOREPLY):
            self._message_ended()   # refused at MAIL: no message follows
        return answer

    def envrcpt(self, to: str, *params: str) -> int:
        return self._guard("rcpt", self.session.rcpt, (to or "").strip("<>"))

    def data(self) -> int:
        return self._quiet("data", Milter.P_NR_DATA, self.session.data, self._macros(("i",)))

    def header_bytes(self, name: str, value: bytes | str) -> int:
        # pymilter's own header_bytes decodes the same way, one call deeper.
        text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
        return self.header(name, text)

    def header(self, name: str, value: str) -> int:
        return self._quiet("header", Milter.P_NR_HDR, self.session.header, name, value)

    def eoh(self) -> int:
        return self._guard("eoh", self.session.eoh, self._macros(("i",)))

    def body(self, chunk: bytes) -> int:
        return self._quiet("body", Milter.P_NR_BODY, self.session.body, chunk)

    def eom(self) -> int:
        try:
            return self._guard("eom", self._end_of_message)
        finally:
            self._message_ended()

    def _end_of_message(self) -> Verdict:
        result = self.session.eom(self._macros(("i",)))
        for name, value in result.add_headers:
            self.addheader(name, value)
        for name, index, value in result.change_headers:
            self.chgheader(name, index, value)
        if result.quarantine:
            self.quarantine(result.quarantine)
        return result.verdict

    def abort(self) -> int:
        self._silent_error = False   # it belonged to the aborted message
        try:
            self.session.abort()
        except Exception:
            log.exception("event=internal-error stage=abort")
        finally:
            self._message_ended()
        return CONTINUE

    def close(self) -> int:
        try:
            self.session.close()
        except Exception:
            log.exception("event=internal-error stage=close")
        finally:
            self._message_ended()
        return CONTINUE

    def unknown(self, cmd: str) -> int:
        return CONTINUE


def _nodelay_on_listeners() -> int:
    """Set TCP_NODELAY on our listening TCP sockets; Linux passes it on to
    every accepted connection.

    libmilter writes each end-of-message modification (an added header) and
    the final reply as separate small packets. With Nagle on, the reply
    waits for the MTA's delayed ACK of the header packet: about 40 ms per
    tagged message over TCP. libmilter offers no option for it, so we find
    its listening socket among our file descriptors.
    """
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue
        try:
            if (sock.family in (socket.AF_INET, socket.AF_INET6)
                    and sock.type == socket.SOCK_STREAM
                    and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                count += 1
        except OSError:
            pass
        finally:
            sock.close()
    return count


def serve(engine: Engine, listen: SocketSpec, timeout: int = 600,
          on_listening: Callable[[], None] | None = None) -> None:
    """Run libmilter on ``listen`` until SIGTERM/SIGINT/SIGHUP or ``stop()``;
    blocks.

    ``timeout``: seconds libmilter waits for the MTA's next command before
    dropping an idle session. ``on_listening`` runs once the socket exists
    (the caller sets its owner and mode there).

    libmilter ends every open session as soon as it stops (its listener
    treats the closed socket as an error and aborts), so a graceful stop
    drains first (``IN_FLIGHT.drain``) and calls ``stop()`` after.
    """
    socket_spec = listen.libmilter()
    MilterguardMilter.engine = engine
    MilterguardMilter.no_reply_mask = NO_REPLY_STAGES if listen.is_unix else 0
    Milter.factory = MilterguardMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.QUARANTINE)
    open_socket = milter.opensocket

    def opensocket_nodelay(rmsock: bool) -> Any:
        result = open_socket(rmsock)
        if _nodelay_on_listeners():
            log.info("event=tcp-nodelay socket=%s", socket_spec)
        if on_listening is not None:
            on_listening()
        return result

    milter.opensocket = opensocket_nodelay
    try:
        Milter.runmilter("milterguard", socket_spec, timeout)
    except milter.error as exc:   # e.g. the socket cannot be opened
        raise MilterguardError(f"libmilter: {exc}") from None
    finally:
        milter.opensocket = open_socket


def stop() -> None:
    """Make ``serve`` return: libmilter closes its socket and ends sessions."""
    milter.stop()
