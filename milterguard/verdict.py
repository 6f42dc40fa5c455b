"""What a check reports (Finding), what is recorded (Hit), and what a
stage answers the MTA (Verdict, with its Action and Reply).

These are plain data so that the checks, the session, the rule set and the
store share them without importing each other.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class Action(str, enum.Enum):
    """What the MTA is told. Ordered by strength in ``STRENGTH``."""

    CONTINUE = "continue"
    ACCEPT = "accept"        # stop checking, deliver
    TAG = "tag"              # deliver, with X-Spam headers (content scoring)
    TEMPFAIL = "tempfail"    # 4xx
    REJECT = "reject"        # 5xx
    DISCARD = "discard"      # accept and drop silently
    QUARANTINE = "quarantine"  # accept into Postfix's hold queue


#: When several findings disagree, the strongest wins.
STRENGTH = {
    Action.CONTINUE: 0, Action.TAG: 1, Action.TEMPFAIL: 2,
    Action.QUARANTINE: 3, Action.REJECT: 4, Action.DISCARD: 5,
    Action.ACCEPT: 6,
}

STAGES = ("connect", "helo", "mail", "rcpt", "data", "header", "eoh",
          "body", "eom")


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: ``550 5.7.1 text``."""

    code: str
    xcode: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.xcode} {self.text}"


def clean_reply_text(text: str, limit: int = 200) -> str:
    """Make text safe for an SMTP reply line.

    Text may come from DNS TXT records or rule files; CR/LF would inject
    protocol lines, and libmilter refuses a lone '%'.
    """
    out = "".join(ch if 32 <= ord(ch) < 127 else " " for ch in text)
    out = " ".join(out.split()).replace("%", "%%")
    return out[:limit]


@dataclass
class Verdict:
    """A stage's answer. ``CONTINUE`` means: go on to the next stage."""

    action: Action = Action.CONTINUE
    reply: Reply | None = None
    stage: str = ""

    @property
    def final(self) -> bool:
        return self.action not in (Action.CONTINUE, Action.TAG)


@dataclass
class Hit:
    """One finding: a rule or gate that matched, for logs, stats and bans.

    ``observe`` hits are would-have-hits of rules in observe mode: recorded,
    never acted on.
    """

    rule_id: str
    category: str
    stage: str
    action: Action
    client_addr: str = ""
    helo: str = ""
    sender: str = ""
    recipients: tuple[str, ...] = ()
    queue_id: str = ""
    detail: str = ""
    score: float = 0.0
    observe: bool = False
    authenticated: str = ""   # SASL login of the client: bans never count these
    ts: float = field(default_factory=time.time)


@dataclass
class Finding:
    """What one check or rule reports, before the session decides.

    A check never answers the MTA itself: it returns findings, and the
    session turns them into one Verdict per stage (strongest action wins,
    scores add up) and into Hits for the store.
    ``action`` CONTINUE with a ``score`` is a scoring finding; ``observe``
    findings are recorded but never act.
    """

    rule_id: str
    category: str
    action: Action = Action.CONTINUE
    reply: Reply | None = None
    score: float = 0.0
    detail: str = ""
    observe: bool = False
    helper: bool = False   # only compound rules see it: never logged or recorded
    #: A positive score that may tag but never push a message to the reject
    #: score (the classifier's bands: suspicion, not proof).
    tag_only: bool = False
