"""Postfix regexp: and pcre: table patterns, translated to the ``regex`` module.

A table line starts with ``[!]/re/flags`` (any delimiter, as in Postfix).
Postfix matches it with glibc's POSIX regcomp (regexp:) or PCRE (pcre:);
milterguard matches with ``regex``. What reads alike means different things:
inside POSIX brackets a backslash is literal, regexp: tables are
case-insensitive by default and ``x`` switches to basic syntax, GNU
``\\< \\>`` are word edges, and a pattern over a whole body must behave as
Postfix's per-line check (``^``/``$`` at line ends, ``.`` and negated lists
never crossing a newline). Each construct is rewritten to its ``regex``
equivalent, or refused (``Untranslatable``) when there is none: a table
line is better reported than silently changed in meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["TablePattern", "Untranslatable", "parse_pattern", "translate_pcre",
           "translate_posix"]


class Untranslatable(ValueError):
    """A pattern construct with no faithful equivalent."""


@dataclass
class TablePattern:
    """One parsed ``/re/flags`` with its translation."""

    negated: bool
    python: str          # self-contained (scoped flags), no leading anchor added
    groups: int          # capturing groups, for renumbering back-references


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


def parse_pattern(text: str, pcre: bool, per_line: bool, group_offset: int = 0) -> tuple[TablePattern, str]:
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
    return TablePattern(negated, python, groups), rest
