"""Is our resolver telling the truth when it says "no such domain"?

A resolver without upstream, or a captive DNS, answers NXDOMAIN for every
name. The envelope and HELO checks would then answer ``550 5.1.8`` to every
sender: permanent bounces of good mail, with nothing in the log standing
out (issue 12, finding 4). So a few names that must exist (``dns.probe_names``,
top-level domains by default) are looked up at start and every
``dns.probe_interval``, the way DNSBL zones are self-tested. While the
resolver denies one of them, the checks' NXDOMAIN-based refusals become
4xx (the sender retries; Postfix's own default for an unknown sender
domain is 450), each such downgrade is counted (a metric) and logged as
``event=dns-reject-downgraded``, and the state change itself is logged as
``event=resolver-denies-existence`` / ``event=resolver-recovered``.

A timeout or SERVFAIL for a probe says nothing about NXDOMAIN answers (the
checks already turn those into 4xx themselves), so only an NXDOMAIN for a
probe name counts as broken.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from milterguard.gates.dns import NXDOMAIN, DnsQuery
from milterguard.verdict import Action, Finding, Reply
from milterguard.yamlsrc import LDict

log = logging.getLogger("milterguard.dns")

#: Findings that rest on an NXDOMAIN (or an empty answer) from our resolver,
#: and the temporary answer each gets while the resolver is not trusted.
DOWNGRADES = {
    "helo:unknown": Reply("450", "4.7.1", "Helo command rejected: Host not found"),
    "envelope:sender-nxdomain": Reply("450", "4.1.8",
                                      "Sender address rejected: Domain not found"),
    "envelope:recipient-nxdomain": Reply("450", "4.1.2",
                                         "Recipient address rejected: Domain not found"),
}


@dataclass
class ProbeSettings:
    """``dns.probe_names`` and ``dns.probe_interval``."""

    names: tuple[str, ...] = ("com", "net", "org")
    interval: float = 300.0
    rdtype: str = "SOA"

    @classmethod
    def from_section(cls, section: LDict) -> "ProbeSettings":
        names = section.strings("probe_names") if "probe_names" in section else list(cls.names)
        return cls(tuple(n.strip(".") for n in names if n.strip(".")),
                   section.duration("probe_interval", cls.interval))


@dataclass
class ResolverHealth:
    """Probe results and what the checks do about them (thread-safe)."""

    query: DnsQuery
    settings: ProbeSettings = field(default_factory=ProbeSettings)
    clock: Callable[[], float] = time.time
    denied: tuple[str, ...] = ()     # probe names answered NXDOMAIN last time
    downgraded: int = 0              # refusals turned into 4xx so far
    probes: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def denies_existence(self) -> bool:
        return bool(self.denied)

    def probe(self) -> tuple[str, ...]:
        """Look every probe name up now (no cache); returns those denied."""
        denied = []
        for name in self.settings.names:
            result = self.query.lookup(name, self.settings.rdtype, use_cache=False)
            if result.status == NXDOMAIN:
                denied.append(name)
        was = self.denied
        self.denied = tuple(denied)
        self.probes += 1
        if denied and not was:
            log.warning("event=resolver-denies-existence probes=%s action=dns-rejects-as-4xx",
                        ",".join(denied))
        elif was and not denied:
            log.warning("event=resolver-recovered probes=%s", ",".join(self.settings.names))
        return self.denied

    def adjust(self, findings: list[Finding]) -> list[Finding]:
        """The findings, NXDOMAIN-based refusals made temporary while the
        resolver denies a name that must exist."""
        if not self.denied or not findings:
            return findings
        out = []
        for finding in findings:
            reply = DOWNGRADES.get(finding.rule_id)
            if reply is None or finding.action is not Action.REJECT:
                out.append(finding)
                continue
            shown = finding.reply.text.split(":", 1)[0] if finding.reply else ""
            text = f"{shown}: {reply.text}" if shown.startswith("<") else reply.text
            with self._lock:
                self.downgraded += 1
            log.warning("event=dns-reject-downgraded rule=%s %s reason=resolver-denies-existence"
                        " probes=%s", finding.rule_id, finding.detail, ",".join(self.denied))
            out.append(replace(finding, action=Action.TEMPFAIL,
                               reply=Reply(reply.code, reply.xcode, text),
                               detail=f"{finding.detail} resolver=denies-existence".strip()))
        return out

    # -- the probe thread (like the DNSBL self-test) -------------------

    def start(self) -> None:
        if not self.settings.names or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="dns-probe", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.probe()
            except Exception:   # a probe must never end the thread
                log.exception("event=internal-error stage=dns-probe")
            if self.settings.interval <= 0:
                return
            self._stop.wait(self.settings.interval)

    def close(self) -> None:
        self._stop.set()

    def counters(self) -> dict[str, Any]:
        return {"denies_existence": int(self.denies_existence), "downgraded": self.downgraded,
                "probes": self.probes}
