"""What the scan of a message did not cover, as findings with the site's actions.

Content milterguard could not read in full used to pass without a trace:
MIME nested deeper than the limit, parts past it, bytes past
``max_scan_bytes``, a charset that failed to decode, rules cut short by a
regex timeout. An attacker who knows the limits puts the spam just past
them. Now each is a finding under a built-in id (category ``scan``), logged
on the message's line and recorded like a rule hit, and acts as
``message.scan_actions`` says:

- ``scan:truncated``: body bytes past ``max_scan_bytes``, headers past
  ``max_headers``, a header value past 64 KB (large attachments do this to
  ordinary mail: by default only recorded);
- ``scan:structure``: MIME parts past ``max_parts``, nesting past
  ``max_depth`` (ordinary mail never does this: tagged by default);
- ``scan:decode``: a charset or transfer encoding that failed to decode
  (the text was scanned in a fallback decoding; recorded by default);
- ``scan:budget``: a regex that timed out, or searches skipped because the
  message's ``regex_time`` was spent (tagged by default).

These findings never go into the ban counts unless their action refuses
mail (``bans.count_actions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from milterguard.errors import ConfigError
from milterguard.verdict import Action, Finding, Reply
from milterguard.yamlsrc import LDict

CATEGORY = "scan"

#: Kind of shortfall -> (finding id, default action).
KINDS = {
    "truncated": ("scan:truncated", Action.CONTINUE),
    "structure": ("scan:structure", Action.TAG),
    "decode": ("scan:decode", Action.CONTINUE),
    "budget": ("scan:budget", Action.TAG),
}

#: Actions a shortfall may take (accept or discard would be a way past the rules).
ALLOWED = (Action.CONTINUE, Action.TAG, Action.TEMPFAIL, Action.REJECT, Action.QUARANTINE)

_REPLIES = {
    Action.REJECT: Reply("550", "5.7.1", "Message could not be scanned"),
    Action.TEMPFAIL: Reply("451", "4.7.1", "Message could not be scanned, try again later"),
}


@dataclass(frozen=True)
class ScanActions:
    """The action of each kind of shortfall (``message.scan_actions``)."""

    actions: dict[str, Action]

    @classmethod
    def from_section(cls, message: Any, errors: list[ConfigError]) -> "ScanActions":
        """Read ``scan_actions`` of the ``message`` section; problems go to ``errors``."""
        actions = {kind: default for kind, (_, default) in KINDS.items()}
        raw = message.get("scan_actions") if hasattr(message, "get") else None
        if raw is None:
            return cls(actions)
        if not isinstance(raw, LDict):
            errors.append(message.error("must be a mapping of kind: action", "scan_actions"))
            return cls(actions)
        names = ", ".join(a.value for a in ALLOWED)
        for kind, value in raw.items():
            if kind not in KINDS:
                errors.append(raw.error(f"unknown kind {kind!r}; known: {', '.join(KINDS)}", kind))
                continue
            try:
                action = Action(str(value))
            except ValueError:
                action = None
            if action not in ALLOWED:
                errors.append(raw.error(f"must be one of {names}", kind))
                continue
            actions[kind] = action
        return cls(actions)

    def finding(self, kind: str, detail: str) -> Finding:
        rule_id, _ = KINDS[kind]
        action = self.actions[kind]
        return Finding(rule_id=rule_id, category=CATEGORY, action=action,
                       reply=_REPLIES.get(action), detail=detail[:200])


DEFAULT_SCAN_ACTIONS = ScanActions({kind: default for kind, (_, default) in KINDS.items()})


def coverage_findings(actions: ScanActions, truncated: Iterable[str],
                      structure: Iterable[str], decode: Iterable[str],
                      budget: Any = None) -> list[Finding]:
    """One finding per kind of shortfall that occurred; ``detail`` lists
    what was not covered (first few reasons) for the log and the store."""
    out = []
    for kind, reasons in (("truncated", truncated), ("structure", structure),
                          ("decode", decode)):
        reasons = list(dict.fromkeys(reasons))
        if reasons:
            out.append(actions.finding(kind, "; ".join(reasons[:5])))
    if budget is not None and budget.exceeded:
        out.append(actions.finding("budget", budget.describe()))
    return out
