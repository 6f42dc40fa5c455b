"""What the session and the engine call on the parts they are given.

The engine is handed its gates, greylist and hit store (the daemon builds
the real ones; tests and ``milterguard explain`` pass fakes or nothing), so
these Protocols say exactly which calls the policy side relies on. Any
object with these methods fits; nothing here imports DNS, SQL or sockets,
so the session stays testable without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from milterguard.smtpinfo import ClientInfo
from milterguard.verdict import Finding, Hit

if TYPE_CHECKING:
    from milterguard.classifier.settings import ClassifierSettings
    from milterguard.content.views import MessageViews


class GateChecks(Protocol):
    """Connect, HELO, MAIL and RCPT checks (gates/gateset.py: ``Gates``).

    Each returns its findings; DNS trouble is a result, never a raise.
    """

    def on_connect(self, client: ClientInfo) -> list[Finding]: ...

    def on_helo(self, client: ClientInfo) -> list[Finding]: ...

    def on_mail(self, client: ClientInfo, sender: str) -> list[Finding]: ...

    def on_rcpt(self, client: ClientInfo, sender: str, rcpt: str) -> list[Finding]: ...

    def on_message(self, views: MessageViews) -> list[Finding]:
        """End of message: checks of the content's links (URI blocklists)."""
        ...

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


class MessageClassifier(Protocol):
    """The statistical classifier's learned counts (classifier/runtime.py:
    ``Classifier``), asked once per message at end of message."""

    def findings(self, settings: ClassifierSettings, views: MessageViews) -> list[Finding]:
        """The band this message falls in, as findings (none while it learns)."""
        ...

    def close(self) -> None: ...


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

    def on_message(self, views: MessageViews) -> list[Finding]:
        return []

    def close(self) -> None:
        pass
