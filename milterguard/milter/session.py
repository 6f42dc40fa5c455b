"""One SMTP connection as seen by the milter: stage events in, verdicts out.

This is policy, not protocol: it never touches sockets or pymilter, so it
tests without a daemon. The adapter (milter_adapter.py) feeds it plain
values and turns its Verdicts into libmilter answers.

Per-connection state (client, HELO, connect-stage findings) lives on the
Session; per-message state (envelope, headers, body, findings) lives on a
_Message that is replaced at every MAIL FROM, so several messages on one
connection, RSET and aborts never leak into each other.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from milterguard.clientaddr import client_in_networks
from milterguard.logsetup import escape_controls
from milterguard.smtpinfo import ClientInfo, MessageInfo
from milterguard.verdict import (STRENGTH, Action, Finding, Hit, Reply, Verdict,
                                 clean_reply_text)
from milterguard.content.views import MessageViews
from milterguard.milter.coverage import coverage_findings
from milterguard.ruleset.budget import ScanBudget

if TYPE_CHECKING:
    from milterguard.milter.engine import Engine, Policy

log = logging.getLogger("milterguard.session")

INTERNAL_TEMPFAIL = Reply("451", "4.3.0", "Temporary local problem, please try again later")


_BARE = re.compile(r"[\w.\-:@<>,/+=\[\]]+")


def _kv(value: object) -> str:
    """A log value that greps well: bare if simple, else double-quoted."""
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    # Quotes and backslashes here; control characters (CR, TAB, ESC, ...)
    # as \xNN, the same way logsetup escapes every line.
    return '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


@dataclass
class EomResult:
    """The end-of-message answer plus the header edits that go with it."""

    verdict: Verdict
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    change_headers: list[tuple[str, int, str]] = field(default_factory=list)  # name, index, value
    quarantine: str = ""


@dataclass
class _Message:
    info: MessageInfo
    policy: "Policy"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    body_truncated: bool = False
    body_bytes: int = 0                 # all the body's bytes, scanned or not
    headers_dropped: int = 0            # headers past max_headers (not scanned)
    findings: list[tuple[str, Finding]] = field(default_factory=list)  # (stage, finding)
    views: MessageViews | None = None   # built at end of headers, body added at eom
    views_headers: int = 0              # headers it was built on (a late header: rebuild)
    budget: ScanBudget | None = None    # regex time, shared by header and body rules
    score: float = 0.0
    logged: bool = False


class Session:
    """Turns one connection's stage events into verdicts and hits."""

    def __init__(self, engine: "Engine", clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self.client = ClientInfo()
        self.trusted = False          # allowlisted or authenticated: skip the gates
        self.conn_findings: list[tuple[str, Finding]] = []
        self.pending: Verdict | None = None   # delayed connect/HELO reject
        self.msg: _Message | None = None

    # -- connection stages -------------------------------------------------

    def connect(self, name: str, addr: str, port: int = 0,
                macros: dict[str, str] | None = None) -> Verdict:
        self.client = ClientInfo(addr=addr, name=name, port=port, macros=dict(macros or {}))
        self.trusted = self._allowlisted(addr)
        if self.trusted:
            return Verdict(stage="connect")
        findings = (self.engine.gates.on_connect(self.client)
                    + self._envelope_rules("client", [addr, name]))
        return self._gate_answer("connect", findings)

    def helo(self, name: str) -> Verdict:
        self.client.helo = name
        if self.trusted:
            return Verdict(stage="helo")
        findings = (self.engine.gates.on_helo(self.client)
                    + self._envelope_rules("helo", [name]))
        return self._gate_answer("helo", findings)

    def hold(self, verdict: Verdict) -> None:
        """Answer a connect/HELO verdict at the first RCPT instead (the
        strongest one held wins). Used for delayed rejects, and by the
        adapter when the MTA was told not to wait for those answers."""
        if self.pending is None or STRENGTH[verdict.action] > STRENGTH[self.pending.action]:
            self.pending = verdict

    # -- message stages ----------------------------------------------------

    def mail(self, sender: str, macros: dict[str, str] | None = None) -> Verdict:
        # A new MAIL FROM starts a new message: whatever came before is done.
        self._finish_unlogged("abort")
        macros = macros or {}
        self.client.macros.update(macros)
        auth = macros.get("{auth_authen}", "")
        if auth:
            self.client.authenticated = auth
            if self.engine.policy.trust_authenticated:
                # A client that logged in is trusted even if its address
                # looked bad at connect: drop the delayed verdict.
                self.trusted = True
                self.pending = None
                self.conn_findings = []
        policy = self.engine.policy
        self.msg = _Message(MessageInfo(sender=sender, queue_id=macros.get("i", "")), policy)
        if self.pending is None and self.conn_findings:
            # Non-final connect/HELO findings (scores) belong to the first
            # message: counted and recorded with it, once.
            self.msg.findings.extend(self.conn_findings)
            self.conn_findings = []
        if self.trusted:
            return Verdict(stage="mail")
        findings = (self.engine.gates.on_mail(self.client, sender)
                    + self._envelope_rules("mail", [sender]))
        return self._message_answer("mail", findings)

    def rcpt(self, rcpt: str, macros: dict[str, str] | None = None) -> Verdict:
        msg = self._message()
        if self.pending is not None:
            # The delayed connect/HELO verdict: now the log has the envelope.
            msg.info.recipients.append(rcpt)
            verdict = Verdict(self.pending.action, self.pending.reply, "rcpt")
            msg.findings.extend(self.conn_findings)
            self.conn_findings = []
            self._log_message(verdict, "rcpt")
            return verdict
        if self.trusted:
            msg.info.recipients.append(rcpt)
            return Verdict(stage="rcpt")
        findings = (self.engine.gates.on_rcpt(self.client, msg.info.sender, rcpt)
                    + self._envelope_rules("rcpt", [rcpt]))
        verdict = self._strongest(findings, "rcpt")
        if not verdict.final:
            grey = self.engine.greylist_check(self.client.addr, msg.info.sender, rcpt)
            if grey is not None:
                findings.append(grey)
                verdict = self._strongest(findings, "rcpt")
        msg.findings.extend(("rcpt", f) for f in findings)
        if verdict.final:
            # Per-recipient answer: the message goes on for the others.
            self._record([("rcpt", f) for f in findings], rcpt_only=rcpt)
            msg.findings = [x for x in msg.findings if x[1] not in findings]
            self._log_recipient(rcpt, verdict)
            return verdict
        msg.info.recipients.append(rcpt)
        return Verdict(stage="rcpt")

    def data(self, macros: dict[str, str] | None = None) -> Verdict:
        msg = self._message()
        if macros and macros.get("i"):
            msg.info.queue_id = macros["i"]
        return Verdict(stage="data")

    def header(self, name: str, value: str) -> Verdict:
        msg = self._message()
        if len(msg.headers) < msg.policy.max_headers:
            msg.headers.append((name, value))
        else:
            msg.headers_dropped += 1
        return Verdict(stage="header")

    def eoh(self, macros: dict[str, str] | None = None) -> Verdict:
        msg = self._message()
        if macros and macros.get("i"):
            msg.info.queue_id = macros["i"]
        rs = msg.policy.ruleset
        if not rs.header_targets and not rs.presence:
            return Verdict(stage="eoh")
        views = msg.views = self._new_views(msg, b"")
        findings = self.engine.content_findings(msg.policy, views, "headers", self._budget(msg))
        msg.findings.extend(("eoh", f) for f in findings)
        verdict = self._strongest(findings, "eoh")
        if verdict.final:
            self._log_message(verdict, "eoh")
        return verdict

    def body(self, chunk: bytes) -> Verdict:
        msg = self._message()
        room = msg.policy.max_scan_bytes - len(msg.body)
        msg.body_bytes += len(chunk)
        if room > 0:
            msg.body += chunk[:room]
        if len(chunk) > room:
            msg.body_truncated = True
        return Verdict(stage="body")

    def eom(self, macros: dict[str, str] | None = None) -> EomResult:
        msg = self._message()
        if macros and macros.get("i"):
            msg.info.queue_id = macros["i"]
        policy = msg.policy
        views = msg.views
        if views is None or msg.views_headers != len(msg.headers):
            views = msg.views = self._new_views(msg, bytes(msg.body))
        else:
            # Headers decoded at end of headers are decoded once.
            views.set_body(bytes(msg.body))
        # A rule reading both a header and the body hits (and scores) once.
        already = {f.rule_id for _, f in msg.findings}
        findings = [f for f in self.engine.content_findings(policy, views, "body", self._budget(msg))
                    if f.rule_id not in already]
        findings += self.engine.link_findings(views)
        findings += self.engine.classifier_findings(policy, views)
        findings += self._coverage(msg, views)
        msg.findings.extend(("eom", f) for f in findings)
        compound = self.engine.compound_findings(policy, [f for _, f in msg.findings])
        msg.findings.extend(("eom", f) for f in compound)
        verdict = self._strongest([f for _, f in msg.findings], "eom")
        result = EomResult(verdict)
        enforced = [f for _, f in msg.findings if not f.observe]
        score = sum(f.score for f in enforced)
        reject_points = sum(f.score for f in enforced if not f.tag_only or f.score < 0)
        msg.score = score
        if not verdict.final:
            if reject_points >= policy.reject_score:
                reply = policy.reject_reply
                if policy.reply_rule_ids:
                    ids = ",".join(dict.fromkeys(f.rule_id for f in enforced if f.score))
                    reply = Reply(reply.code, reply.xcode, f"{reply.text} [{ids}]")
                verdict = result.verdict = Verdict(Action.REJECT, reply, "eom")
            elif score >= policy.tag_score or verdict.action == Action.TAG:
                verdict = result.verdict = Verdict(Action.TAG, None, "eom")
        if verdict.action == Action.QUARANTINE:
            held_by = [f.rule_id for f in enforced if f.action == Action.QUARANTINE]
            result.quarantine = "milterguard: " + ",".join(held_by)
        if verdict.action in (Action.CONTINUE, Action.TAG, Action.ACCEPT, Action.QUARANTINE):
            self._header_edits(msg, result, enforced, score)
        self._log_message(verdict, "eom")
        return result

    def abort(self) -> None:
        """MTA aborted the message (RSET, lost connection): keep findings, drop state."""
        self._finish_unlogged("abort")
        self.msg = None

    def close(self) -> None:
        self._finish_unlogged("close")
        if self.conn_findings:
            # Rejected before any message (delay off, or never got to RCPT).
            self._record(self.conn_findings)
            self.conn_findings = []
        self.msg = None

    # -- helpers -----------------------------------------------------------

    def _allowlisted(self, addr: str) -> bool:
        if not addr:
            return True  # a local (unix socket) client is our own
        networks = self.engine.policy.allow_networks
        return bool(networks) and client_in_networks(addr, networks)

    def _message(self) -> _Message:
        if self.msg is None:
            # Stages out of order (a broken client or MTA): start a message anyway.
            self.msg = _Message(MessageInfo(), self.engine.policy)
        return self.msg

    @staticmethod
    def _new_views(msg: _Message, body: bytes) -> MessageViews:
        policy = msg.policy
        msg.views_headers = len(msg.headers)
        return MessageViews(msg.headers, body, policy.max_scan_bytes,
                            max_parts=policy.max_parts, max_depth=policy.max_depth)

    @staticmethod
    def _budget(msg: _Message) -> ScanBudget:
        if msg.budget is None:
            msg.budget = msg.policy.scan_budget()
        return msg.budget

    @staticmethod
    def _coverage(msg: _Message, views: MessageViews) -> list[Finding]:
        """Findings for what the scan of this message did not cover."""
        truncated = list(views.truncated)
        if msg.body_truncated:
            truncated.append(f"body: {msg.body_bytes - msg.policy.max_scan_bytes} bytes "
                             f"past max_scan_bytes {msg.policy.max_scan_bytes}")
        if msg.headers_dropped:
            truncated.append(f"{msg.headers_dropped} headers past max_headers "
                             f"{msg.policy.max_headers}")
        return coverage_findings(msg.policy.scan_actions, truncated, views.unscanned,
                                 views.decode_errors, msg.budget)

    def _envelope_rules(self, target: str, texts: list[str]) -> list[Finding]:
        policy = self.engine.policy
        return self.engine.rule_findings(policy, target, texts)

    def _strongest(self, findings: list[Finding], stage: str) -> Verdict:
        best: Finding | None = None
        for f in findings:
            if f.observe or f.action in (Action.CONTINUE,):
                continue
            if best is None or STRENGTH[f.action] > STRENGTH[best.action]:
                best = f
        if best is None:
            return Verdict(stage=stage)
        reply = best.reply
        if reply is not None and self.engine.policy.reply_rule_ids and best.action in (Action.REJECT, Action.TEMPFAIL):
            reply = Reply(reply.code, reply.xcode,
                          clean_reply_text(reply.text) + f" [{best.rule_id}]")
        return Verdict(best.action, reply, stage)

    def _gate_answer(self, stage: str, findings: list[Finding]) -> Verdict:
        self.conn_findings.extend((stage, f) for f in findings)
        verdict = self._strongest(findings, stage)
        if verdict.action in (Action.REJECT, Action.TEMPFAIL) and self.engine.policy.delay_rejects:
            self.hold(verdict)
            return Verdict(stage=stage)
        if verdict.final:
            self._log_connection(verdict, stage)
        return verdict

    def _message_answer(self, stage: str, findings: list[Finding]) -> Verdict:
        msg = self._message()
        msg.findings.extend((stage, f) for f in findings)
        verdict = self._strongest(findings, stage)
        if verdict.final:
            self._log_message(verdict, stage)
        return verdict

    def _header_edits(self, msg: _Message, result: EomResult,
                      enforced: list[Finding], score: float) -> None:
        policy = msg.policy
        if policy.tag_header and any(not f.helper for _, f in msg.findings):
            ids = []
            for _, f in msg.findings:
                if f.rule_id not in ids and not f.helper:
                    ids.append(f.rule_id)
            result.add_headers.append(("X-Milterguard", ", ".join(ids)))
        if result.verdict.action == Action.TAG:
            result.add_headers.append(("X-Spam-Flag", "YES"))
            result.add_headers.append(("X-Spam-Score", f"{score:.1f}"))
            if policy.subject_prefix:
                for index, (_, value) in enumerate(
                        [h for h in msg.headers if h[0].lower() == "subject"][:1], start=1):
                    result.change_headers.append(("Subject", index, policy.subject_prefix + value.lstrip()))

    def _hits(self, findings: list[tuple[str, Finding]], recipients: tuple[str, ...]) -> list[Hit]:
        info = self.msg.info if self.msg else MessageInfo()
        now = self.clock()
        return [Hit(rule_id=f.rule_id, category=f.category, stage=stage, action=f.action,
                    client_addr=self.client.addr, helo=self.client.helo, sender=info.sender,
                    recipients=recipients, queue_id=info.queue_id, detail=f.detail[:200],
                    score=f.score, observe=f.observe,
                    authenticated=self.client.authenticated, ts=now)
                for stage, f in findings]

    def _record(self, findings: list[tuple[str, Finding]], rcpt_only: str | None = None) -> None:
        findings = [(stage, f) for stage, f in findings if not f.helper]
        if not findings:
            return
        if rcpt_only is not None:
            recipients: tuple[str, ...] = (rcpt_only,)
        else:
            recipients = tuple(self.msg.info.recipients) if self.msg else ()
        self.engine.record(self._hits(findings, recipients))

    def _finish_unlogged(self, how: str) -> None:
        msg = self.msg
        if msg is not None and not msg.logged and (msg.findings or msg.info.recipients):
            self._log_message(Verdict(Action.CONTINUE, None, how), how)

    def _log_message(self, verdict: Verdict, stage: str) -> None:
        msg = self._message()
        if msg.logged:
            return
        msg.logged = True
        msg.score = sum(f.score for _, f in msg.findings if not f.observe)
        self._record(msg.findings)
        action = verdict.action.value if stage not in ("abort", "close") else stage
        if action == "continue":
            action = "accept"
        self._count_message(action)
        if not log.isEnabledFor(logging.INFO):
            return   # the quoting below is a good part of a clean message's cost
        ids = []
        for _, f in msg.findings:
            if f.helper:
                continue
            tag = f.rule_id + ("(observe)" if f.observe else "")
            if tag not in ids:
                ids.append(tag)
        log.info("queue_id=%s client=%s client_name=%s helo=%s from=%s rcpt=%s stage=%s "
                 "action=%s reply=%s rules=%s score=%s",
                 _kv(msg.info.queue_id or "-"), _kv(self.client.addr or "-"),
                 _kv(self.client.name or "-"), _kv(self.client.helo or "-"),
                 _kv("<" + msg.info.sender + ">"), _kv(",".join(msg.info.recipients) or "-"),
                 stage, action, _kv(str(verdict.reply) if verdict.reply else "-"),
                 _kv(",".join(ids) or "-"), f"{msg.score:.1f}")

    def _log_recipient(self, rcpt: str, verdict: Verdict) -> None:
        msg = self._message()
        log.info("queue_id=%s client=%s helo=%s from=%s rcpt=%s stage=rcpt action=%s reply=%s",
                 _kv(msg.info.queue_id or "-"), _kv(self.client.addr or "-"),
                 _kv(self.client.helo or "-"), _kv("<" + msg.info.sender + ">"), _kv(rcpt),
                 verdict.action.value, _kv(str(verdict.reply) if verdict.reply else "-"))

    def _count_message(self, action: str) -> None:
        metrics = self.engine.metrics
        if metrics is not None:
            metrics.message(action)

    def _log_connection(self, verdict: Verdict, stage: str) -> None:
        self._count_message(verdict.action.value)
        self._record(self.conn_findings)
        ids = ",".join(f.rule_id for _, f in self.conn_findings) or "-"
        self.conn_findings = []
        log.info("queue_id=- client=%s client_name=%s helo=%s stage=%s action=%s reply=%s rules=%s",
                 _kv(self.client.addr or "-"), _kv(self.client.name or "-"),
                 _kv(self.client.helo or "-"), stage, verdict.action.value,
                 _kv(str(verdict.reply) if verdict.reply else "-"), _kv(ids))
