"""Convert Postfix regexp:/pcre: header_checks and body_checks to rule YAML.

A site moving from Postfix's content checks keeps its tables' meaning:

- Postfix matches raw, undecoded text, so header tables become rules on
  ``headers:raw`` (one "Name: value" string per header, folding kept) and
  body tables rules on ``body:raw``, where each Postfix line check becomes a
  per-line match (``^``/``$`` at line ends, ``.`` and negated lists never
  crossing a newline).
- regexp: (POSIX, glibc) and pcre: patterns are rewritten to the ``regex``
  module's syntax with their flags and Postfix's defaults (case-insensitive,
  REG_NEWLINE only with ``m``); ``postfix_patterns`` does that, one table
  line's pattern at a time.
- ``if /re/`` ... ``endif`` and ``!/re/`` become lookaheads, and a DUNNO /
  OK / IGNORE line excludes what it matches from the rules after it, as in
  Postfix where such a line ends the search for that input line.

Actions: REJECT -> reject (reply "550 5.7.1 text"; a text that starts with
an enhanced status code keeps it, as Postfix does, and ``REJECT 4.7.1 try
later`` becomes a tempfail "450 4.7.1 try later"), DISCARD -> discard,
HOLD -> quarantine, WARN and INFO -> the rule in observe mode (recorded as a
would-have-reject, never acting). PREPEND, REDIRECT, FILTER, BCC, REPLACE,
STRIP and IGNORE change the message or its routing: those lines are listed
as not converted, with their line numbers.

One difference remains: Postfix stops at the first matching line of the
table, milterguard records every rule that matches and the strongest action
wins. Only DUNNO/OK/IGNORE lines are carried over as exclusions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import regex

from milterguard.ruleset.postfix_patterns import TablePattern, Untranslatable, parse_pattern

__all__ = ["Conversion", "Skipped", "convert_table", "logical_lines"]


@dataclass
class Skipped:
    """A table line that did not become a rule, and why."""

    line: int
    reason: str
    text: str


@dataclass
class Conversion:
    """Rules made from one table and the lines left behind."""

    rules: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[Skipped] = field(default_factory=list)


# -- table reading -------------------------------------------------------------

def logical_lines(lines: Iterable[str]) -> list[tuple[int, str]]:
    """Postfix table lines: comments and blanks dropped, indented lines joined."""
    result: list[tuple[int, str]] = []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[:1].isspace() and result:
            start, text = result[-1]
            result[-1] = (start, text + " " + stripped)
        else:
            result.append((number, stripped))
    return result


_ACTIONS = {"REJECT": "reject", "DISCARD": "discard", "HOLD": "quarantine"}
#: A REJECT text that starts with an enhanced status code (RFC 3463).
_STATUS = re.compile(r"([45]\.\d{1,3}\.\d{1,3})(?:\s+(.*))?$", re.S)
_OBSERVE = ("WARN", "INFO")
_EXCLUDE = ("DUNNO", "OK", "IGNORE")
_NOT_CONVERTIBLE = {
    "PREPEND": "PREPEND adds a header; use a tag rule or Postfix",
    "REDIRECT": "REDIRECT changes the recipients",
    "FILTER": "FILTER changes the delivery transport",
    "BCC": "BCC adds a recipient",
    "REPLACE": "REPLACE rewrites the header",
    "STRIP": "STRIP removes the header",
    "IGNORE": "IGNORE deletes the header (later rules exclude these lines)",
}


def convert_table(lines: Iterable[str], *, kind: str = "header", pcre: bool = False,
                  source: str = "table") -> Conversion:
    """Convert one table's text; ``kind`` is "header" or "body"."""
    if kind not in ("header", "body"):
        raise ValueError("kind must be 'header' or 'body'")
    per_line = kind == "body"
    target = "body:raw" if per_line else "headers:raw"
    any_char = "[^\\n]" if per_line else "[\\s\\S]"
    start = "(?m:^)" if per_line else r"\A"
    conv = Conversion()
    # Stack of if-blocks: each holds its condition and the exclusions made inside.
    conditions: list[tuple[int, TablePattern]] = []
    exclusions: list[list[TablePattern]] = [[]]
    used_ids: set[str] = set()

    def prefix_groups() -> int:
        return sum(p.groups for _, p in conditions) + sum(p.groups for level in exclusions for p in level)

    for number, text in logical_lines(lines):
        keyword = text.split(None, 1)[0].lower()
        if keyword == "endif":
            if not conditions:
                conv.skipped.append(Skipped(number, "endif without if", text))
                continue
            conditions.pop()
            exclusions.pop()
            continue
        try:
            if keyword == "if":
                pattern, rest = parse_pattern(text[2:], pcre, per_line, prefix_groups())
                if rest:
                    raise Untranslatable("text after if condition")
                conditions.append((number, pattern))
                exclusions.append([])
                continue
            pattern, rest = parse_pattern(text, pcre, per_line, prefix_groups())
        except Untranslatable as exc:
            if keyword == "if":
                # Keep the nesting straight: the block's rules are dropped with it.
                conditions.append((number, TablePattern(False, "(?!)", 0)))
                exclusions.append([])
            conv.skipped.append(Skipped(number, str(exc), text))
            continue
        if not rest:
            conv.skipped.append(Skipped(number, "no action", text))
            continue
        action_word, _, action_text = rest.partition(" ")
        action_word = action_word.upper()
        action_text = action_text.strip()
        if action_word in _EXCLUDE:
            exclusions[-1].append(pattern)
            if action_word == "IGNORE":
                conv.skipped.append(Skipped(number, _NOT_CONVERTIBLE["IGNORE"], text))
            else:
                conv.notes.append(Skipped(number, f"{action_word}: excluded from later rules", text))
            continue
        if action_word in _NOT_CONVERTIBLE:
            conv.skipped.append(Skipped(number, _NOT_CONVERTIBLE[action_word], text))
            continue
        if action_word not in _ACTIONS and action_word not in _OBSERVE:
            conv.skipped.append(Skipped(number, f"unknown action {action_word}", text))
            continue

        guards: list[str] = []
        for _, cond in conditions:
            look = "?!" if cond.negated else "?="
            guards.append(f"({look}{any_char}*?{cond.python})")
        for level in exclusions:
            for excl in level:
                look = "?=" if excl.negated else "?!"
                guards.append(f"({look}{any_char}*?{excl.python})")
        if pattern.negated:
            guards.append(f"(?!{any_char}*?{pattern.python})")
            python = start + "".join(guards)
        elif guards:
            python = start + "".join(guards) + f"{any_char}*?{pattern.python}"
        else:
            python = pattern.python
        try:
            regex.compile(python, regex.V0)
        except (regex.error, ValueError, OverflowError) as exc:
            conv.skipped.append(Skipped(number, f"pattern does not compile: {exc}", text))
            continue

        rule_id = f"pf-{kind}-{number}"
        while rule_id in used_ids:
            rule_id += "x"
        used_ids.add(rule_id)
        rule: dict[str, Any] = {"id": rule_id, "target": target, "regex": [python]}
        if action_word in _OBSERVE:
            rule["action"] = "reject"
            rule["mode"] = "observe"
        else:
            rule["action"] = _ACTIONS[action_word]
            rule["mode"] = "enforce"
        if action_word == "REJECT":
            reply_text = action_text or "Message content rejected"
            # Exception text never goes into replies; neither do Postfix's $n substitutions.
            if re.search(r"\$(\d|\{\d)", reply_text):
                conv.notes.append(Skipped(number, "reply uses $n substitution; kept literally", text))
            status = _STATUS.match(reply_text)
            if status:
                xcode, reply_text = status.group(1), status.group(2) or "Message content rejected"
            else:
                xcode = "5.7.1"
            if xcode[0] == "4":
                rule["action"] = "tempfail"
            rule["reply"] = f"{xcode[0]}50 {xcode} {' '.join(reply_text.split())}"
        rule["category"] = f"{kind}-regex"
        note = f" ({action_word}{': ' + action_text if action_text and action_word != 'REJECT' else ''})" \
            if action_word != "REJECT" else ""
        rule["description"] = f"imported from {source}:{number}{note}"
        conv.rules.append(rule)
    for number, _ in conditions:
        conv.skipped.append(Skipped(number, "if without endif (block ends at end of file)", "if"))
    return conv
