"""Convert Postfix regexp:/pcre: header_checks and body_checks to rule YAML.

A site moving from Postfix's content checks keeps its tables' meaning:

- Postfix matches raw, undecoded text, so header tables become rules on
  ``headers:raw`` (one "Name: value" string per header, folding kept) and
  body tables rules on ``body:raw``, where each Postfix line check becomes a
  per-line match (``^``/``$`` at line ends, ``.`` and negated lists never
  crossing a newline).
- regexp: tables are POSIX extended regular expressions (glibc), compiled
  without REG_NEWLINE unless the ``m`` flag is given, case-insensitive unless
  ``i`` toggles it off; ``x`` toggles to basic syntax. These are rewritten to
  the ``regex`` module's syntax: backslashes inside brackets are literal,
  GNU ``\\< \\>`` word edges, ``\\` \\'`` string edges, BRE operators.
- pcre: tables are nearly Python syntax; flags become scoped inline flags,
  and the few PCRE-only escapes are rewritten.
- ``if /re/`` ... ``endif`` and ``!/re/`` become lookaheads, and a DUNNO /
  OK / IGNORE line excludes what it matches from the rules after it, as in
  Postfix where such a line ends the search for that input line.

Actions: REJECT -> reject (reply "550 5.7.1 text"), DISCARD -> discard,
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

__all__ = ["Conversion", "Skipped", "convert_table", "translate_posix", "translate_pcre"]


class Untranslatable(ValueError):
    """A pattern construct with no faithful equivalent."""


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


@dataclass
class _Pattern:
    """One parsed ``/re/flags`` with its translation."""

    negated: bool
    python: str          # self-contained (scoped flags), no leading anchor added
    groups: int          # capturing groups, for renumbering back-references


# -- pattern translation -----------------------------------------------------

_POSIX_CLASSES = {"alpha", "digit", "alnum", "upper", "lower", "space", "blank",
                  "punct", "print", "graph", "cntrl", "xdigit", "word"}


def _bracket(p: str, i: int, per_line: bool) -> tuple[str, int]:
    """Translate a POSIX bracket expression starting at p[i] == '['."""
    j = i + 1
    negated = j < len(p) and p[j] == "^"
    if negated:
        j += 1
    items: list[str] = []
    first = True
    while True:
        if j >= len(p):
            raise Untranslatable("unterminated bracket expression")
        c = p[j]
        if c == "]" and not first:
            j += 1
            break
        first = False
        if c == "[" and j + 1 < len(p) and p[j + 1] in ":.=":
            kind = p[j + 1]
            end = p.find(kind + "]", j + 2)
            if end < 0:
                raise Untranslatable("unterminated [: :] in bracket")
            inner = p[j + 2:end]
            if kind == ":":
                if inner not in _POSIX_CLASSES:
                    raise Untranslatable(f"unknown character class [:{inner}:]")
                items.append(f"[:{inner}:]")
            elif len(inner) == 1:
                items.append(re.escape(inner))
            else:
                raise Untranslatable(f"collating element [{kind}{inner}{kind}]")
            j = end + 2
            continue
        if c == "-" and items and j + 1 < len(p) and p[j + 1] != "]":
            items.append("-")
        elif c in "\\[]^-&~|":
            # In POSIX brackets a backslash is an ordinary character.
            items.append("\\" + c)
        else:
            items.append(c)
        j += 1
    if negated and per_line:
        items.append("\\n")
    return "[" + ("^" if negated else "") + "".join(items) + "]", j


def translate_posix(p: str, *, extended: bool = True, newline: bool = False,
                    per_line: bool = False, group_offset: int = 0) -> tuple[str, int]:
    """POSIX (glibc) regex -> ``regex`` syntax; returns (pattern, groups).

    ``newline`` is REG_NEWLINE (the table's ``m`` flag); ``per_line`` says
    the subject holds many Postfix input lines (body), which implies it.
    """
    nl = newline or per_line
    out: list[str] = []
    groups = 0
    i = 0
    n = len(p)
    while i < n:
        c = p[i]
        if c == "\\":
            if i + 1 >= n:
                raise Untranslatable("trailing backslash")
            e = p[i + 1]
            i += 2
            if not extended and e in "(){}|+?":
                if e == "(":
                    groups += 1
                out.append(e)
            elif e in "wSbB":
                out.append("\\" + e)
            elif e == "W":
                out.append("[^\\w\\n]" if nl else "\\W")
            elif e == "s":
                out.append("[^\\S\\n]" if nl else "\\s")
            elif e == "<":
                out.append(r"\b(?=\w)")
            elif e == ">":
                out.append(r"\b(?<=\w)")
            elif e == "`":
                out.append(r"\A")
            elif e == "'":
                out.append(r"\Z")
            elif e.isdigit() and e != "0":
                out.append(f"(?:\\{int(e) + group_offset})")
            else:
                out.append(re.escape(e))
            continue
        if c == "[":
            text, i = _bracket(p, i, nl)
            out.append(text)
            continue
        if c == ".":
            out.append("[^\\n]" if nl else "(?s:.)")
        elif c == "^":
            at_start = i == 0 or (extended and p[i - 1] in "(|") or \
                (not extended and p[max(0, i - 2):i] in ("\\(", "\\|"))
            if extended or at_start:
                out.append("(?m:^)" if nl else r"\A")
            else:
                out.append(r"\^")
        elif c == "$":
            at_end = i == n - 1 or (extended and p[i + 1] in ")|") or \
                (not extended and p[i + 1:i + 3] in ("\\)", "\\|"))
            if extended or at_end:
                out.append("(?m:$)" if nl else r"\Z")
            else:
                out.append(r"\$")
        elif extended and c == "(":
            if p[i + 1:i + 2] == "?":
                raise Untranslatable("PCRE syntax '(?' in a regexp: table")
            groups += 1
            out.append("(")
        elif extended and c in "){}|+?*":
            out.append(c)
        elif not extended and c in "(){}|+?":
            out.append("\\" + c)
        elif c == "*":
            # A leading star (or one after an anchor/group start) is literal in POSIX.
            prev = "".join(out)[-1:] if out else ""
            out.append("\\*" if (not out or prev in "(|" or out[-1] in (r"\A", "(?m:^)")) else "*")
        else:
            out.append(c)
        i += 1
    return "".join(out), groups


_PCRE_ESCAPES = {
    "z": r"\Z", "Z": r"(?=\n?\Z)", "h": r"[\t \xa0]", "H": r"[^\t \xa0]",
    "v": r"[\n\x0b\f\r\x85\u2028\u2029]", "V": r"[^\n\x0b\f\r\x85\u2028\u2029]",
    "R": r"(?:\r\n|[\n\x0b\f\r\x85\u2028\u2029])", "e": r"\x1b",
}


def translate_pcre(p: str, group_offset: int = 0) -> tuple[str, int]:
    """PCRE -> ``regex`` syntax; returns (pattern, groups)."""
    out: list[str] = []
    groups = 0
    i = 0
    n = len(p)
    in_class = False
    while i < n:
        c = p[i]
        if c == "\\" and i + 1 < n:
            e = p[i + 1]
            if e == "Q":
                end = p.find("\\E", i + 2)
                literal = p[i + 2:] if end < 0 else p[i + 2:end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            if e == "c" or e == "C":
                raise Untranslatable(f"PCRE escape \\{e}")
            if e == "x" and p[i + 2:i + 3] == "{":
                end = p.find("}", i + 3)
                if end < 0:
                    raise Untranslatable("unterminated \\x{")
                try:
                    out.append(re.escape(chr(int(p[i + 3:end] or "0", 16))))
                except (ValueError, OverflowError):
                    raise Untranslatable("bad \\x{} escape") from None
                i = end + 1
                continue
            if e == "g" and p[i + 2:i + 3] == "{":
                end = p.find("}", i + 3)
                if end < 0:
                    raise Untranslatable("unterminated \\g{")
                ref = p[i + 3:end]
                out.append(f"\\g<{int(ref) + group_offset if ref.isdigit() else ref}>")
                i = end + 1
                continue
            if not in_class and e in _PCRE_ESCAPES:
                out.append(_PCRE_ESCAPES[e])
            elif e.isdigit() and e != "0" and not in_class:
                digits = re.match(r"\d+", p[i + 1:])
                assert digits
                out.append(f"(?:\\{int(digits.group(0)) + group_offset})")
                i += 1 + len(digits.group(0))
                continue
            else:
                out.append(c + e)
            i += 2
            continue
        if in_class:
            if c == "]" and p[i - 1] not in "[^" :
                in_class = False
            elif c == "[" and p[i + 1:i + 2] != ":":
                out.append("\\[")
                i += 1
                continue
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            # A ']' right after '[' or '[^' is literal in PCRE.
            j = i + 1
            if p[j:j + 1] == "^":
                out.append("^")
                j += 1
            if p[j:j + 1] == "]":
                out.append("\\]")
                j += 1
            i = j
            continue
        if c == "(":
            if p[i + 1:i + 3] == "?C" or p[i + 1:i + 2] == "*" and p[i + 2:i + 3].isupper() \
                    and p[i + 2:i + 5] not in ("PRU", "SKI", "FAI", "F)"):
                raise Untranslatable("PCRE verb or callout")
            if p[i + 1:i + 2] != "?" or p[i + 1:i + 3] in ("?<", "?P", "?'") \
                    and p[i + 1:i + 4] not in ("?<=", "?<!"):
                groups += 1
        out.append(c)
        i += 1
    return "".join(out), groups


def _scoped(body: str, on: str, off: str) -> str:
    if on and off:
        return f"(?{on}-{off}:{body})"
    if off:
        return f"(?-{off}:{body})"
    return f"(?{on}:{body})"


def parse_pattern(text: str, pcre: bool, per_line: bool, group_offset: int = 0) -> tuple[_Pattern, str]:
    """``[!]/re/flags rest`` -> (pattern, rest). Any delimiter, like Postfix."""
    s = text.lstrip()
    negated = s.startswith("!")
    if negated:
        s = s[1:].lstrip()
    if not s or s[0].isspace() or s[0] == "\\":
        raise Untranslatable("no pattern")
    delim = s[0]
    i = 1
    while i < len(s) and s[i] != delim:
        if s[i] == "\\" and i + 1 < len(s):
            i += 1
        i += 1
    if i >= len(s):
        raise Untranslatable("pattern has no closing delimiter")
    raw = s[1:i]
    if delim != "/":
        raw = raw.replace("\\" + delim, delim)
    j = i + 1
    while j < len(s) and not s[j].isspace():
        j += 1
    flags, rest = s[i + 1:j], s[j:].strip()
    caseless = True
    if pcre:
        multi = dotall = verbose = anchored = False
        for f in flags:
            if f == "i":
                caseless = not caseless
            elif f == "m":
                multi = True
            elif f == "s":
                dotall = True
            elif f == "x":
                verbose = True
            elif f == "A":
                anchored = True
            elif f in "EX":
                pass
            elif f == "U":
                raise Untranslatable("flag U (ungreedy) has no equivalent")
            else:
                raise Untranslatable(f"unknown pcre flag {f!r}")
        body, groups = translate_pcre(raw, group_offset)
        on = ("i" if caseless else "") + ("m" if multi or per_line else "") + \
            ("s" if dotall else "") + ("x" if verbose else "")
        off = "" if caseless else "i"
        if anchored:
            body = ("(?m:^)" if per_line else r"\A") + f"(?:{body})"
        python = _scoped(body, on, off)
    else:
        extended, newline = True, False
        for f in flags:
            if f == "i":
                caseless = not caseless
            elif f == "x":
                extended = not extended
            elif f == "m":
                newline = not newline
            else:
                raise Untranslatable(f"unknown regexp flag {f!r}")
        body, groups = translate_posix(raw, extended=extended, newline=newline,
                                       per_line=per_line, group_offset=group_offset)
        python = _scoped(body, "i" if caseless else "", "" if caseless else "i")
    return _Pattern(negated, python, groups), rest


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
    conditions: list[tuple[int, _Pattern]] = []
    exclusions: list[list[_Pattern]] = [[]]
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
                conditions.append((number, _Pattern(False, "(?!)", 0)))
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
            rule["reply"] = f"550 5.7.1 {' '.join(reply_text.split())}"
        rule["category"] = f"{kind}-regex"
        note = f" ({action_word}{': ' + action_text if action_text and action_word != 'REJECT' else ''})" \
            if action_word != "REJECT" else ""
        rule["description"] = f"imported from {source}:{number}{note}"
        conv.rules.append(rule)
    for number, _ in conditions:
        conv.skipped.append(Skipped(number, "if without endif (block ends at end of file)", "if"))
    return conv
