"""What the session and the engine call on the parts they are given.

The engine is handed its gates, greylist and hit store (the daemon builds
the real ones; tests and ``milterguard explain`` pass fakes or nothing), so
these Protocols say exactly which calls the policy side relies on. Any
object with these methods fits; nothing here imports DNS, SQL or sockets,
so the session stays testable without them.
"""

from __future__ import annotations

from typing import Protocol

from milterguard.smtpinfo import ClientInfo
from milterguard.verdict import Finding, Hit


class GateChecks(Protocol):
    """Connect, HELO, MAIL and RCPT checks (gates/gateset.py: ``Gates``).

    Each returns its findings; DNS trouble is a result, never a raise.
    """

    def on_connect(self, client: ClientInfo) -> list[Finding]: ...

    def on_helo(self, client: ClientInfo) -> list[Finding]: ...

    def on_mail(self, client: ClientInfo, sender: str) -> list[Finding]: ...

    def on_rcpt(self, client: ClientInfo, sender: str, rcpt: str) -> list[Finding]: ...

    def close(self) -> None: ...


class GreylistCheck(Protocol):
    """The RCPT-time greylisting decision (greylist/triplets.py: ``Greylist``)."""

    def check(self, client_addr: str, sender: str, rcpt: str) -> Finding | None:
        """A TEMPFAIL finding, or None to let the recipient pass."""
        ...

    def close(self) -> None: ...


class HitSink(Protocol):
    """Where the session's hits go (store/hits.py: ``HitStore``); never blocks."""

    def record(self, hits: list[Hit]) -> None: ...

    def close(self) -> object: ...


class StageMetrics(Protocol):
    """What the session and the adapter count (report/metrics.py: ``Metrics``)."""

    def message(self, action: str) -> None: ...

    def stage_latency(self, stage: str, seconds: float) -> None: ...


class NoGates:
    """Gates that find nothing: an engine built without DNS checks."""

    def on_connect(self, client: ClientInfo) -> list[Finding]:
        return []

    def on_helo(self, client: ClientInfo) -> list[Finding]:
        return []

    def on_mail(self, client: ClientInfo, sender: str) -> list[Finding]:
        return []

    def on_rcpt(self, client: ClientInfo, sender: str, rcpt: str) -> list[Finding]:
        return []

    def close(self) -> None:
        pass
