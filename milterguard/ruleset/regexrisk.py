"""Which regular expressions may backtrack catastrophically, and on what text.

The rule matcher runs every pattern with a timeout, so a pathological
pattern cannot hang the milter; but a pattern that times out misses the
mail it was written for and costs the milter the whole timeout on each
message. Lint warns about such patterns before they ship, in two ways:

- ``backtracking_risks``: on the pattern's structure, nested unbounded
  repeats with nothing mandatory between one round and the next, and
  alternatives under a repeat that can match the same text;
- ``slow_on``: by running the compiled pattern, with the matcher's own
  timeout, on texts built from its structure to make it fail slowly
  (``adversarial_texts``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import regex

from milterguard.ruleset.matcher import REGEX_TIMEOUT

#: Length of the long adversarial texts (about a mail body's size).
LONG_TEXT = 10000
#: Length of the short ones (exponential blow-up shows long before that).
SHORT_TEXT = 40


# -- structural check ----------------------------------------------------------
#
# A small parser for the part of the `regex` syntax that matters here. It
# builds a tree of atoms (one character each), sequences, alternations,
# repeats and groups; an atom's character set is approximated by the
# sample characters it matches, which is enough to tell whether two parts
# of a pattern compete for the same text.

_SAMPLES = (string.ascii_letters + string.digits + string.punctuation + " \t\n\r\x00"
            + "\u00e9\u00df\u00a0\u03a9\u0436\u0430\u4e2d\u200b\u00ad")


@dataclass
class _Node:
    kind: str                       # atom, empty, seq, alt, rep, group
    src: str = ""                   # atom: its regex source
    kids: tuple[_Node, ...] = ()
    lo: int = 0
    hi: int | None = None           # rep: None = unbounded
    safe: bool = False              # possessive repeat or atomic group


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def parse(self) -> _Node:
        node = self._alt()
        return node

    def _peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def _alt(self) -> _Node:
        branches = [self._seq()]
        while self._peek() == "|":
            self.i += 1
            branches.append(self._seq())
        return branches[0] if len(branches) == 1 else _Node("alt", kids=tuple(branches))

    def _seq(self) -> _Node:
        items: list[_Node] = []
        while self.i < len(self.p) and self._peek() not in "|)":
            atom = self._atom()
            if atom is None:
                continue
            items.append(self._quantified(atom))
        return items[0] if len(items) == 1 else _Node("seq", kids=tuple(items))

    def _quantified(self, node: _Node) -> _Node:
        while True:
            ch = self._peek()
            if ch in ("*", "+", "?"):
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
                self.i += 1
            elif ch == "{":
                m = regex.match(r"\{(\d*)(,?)(\d*)\}", self.p[self.i:])
                if not m or not (m.group(1) or m.group(3)):
                    return node          # a literal brace
                lo = int(m.group(1) or 0)
                hi = lo if not m.group(2) else (int(m.group(3)) if m.group(3) else None)
                self.i += m.end()
            else:
                return node
            safe = False
            if self._peek() == "+":
                safe = True              # possessive: never gives back
                self.i += 1
            elif self._peek() == "?":
                self.i += 1              # lazy: backtracks all the same
            node = _Node("rep", kids=(node,), lo=lo, hi=hi, safe=safe)

    def _atom(self) -> _Node | None:
        ch = self.p[self.i]
        if ch == "(":
            return self._group()
        if ch == "[":
            return self._class()
        if ch == "\\":
            return self._escape()
        self.i += 1
        if ch in "^$":
            return _Node("empty")
        if ch == "#" or ch.isspace():
            return _Node("atom", src=regex.escape(ch))
        return _Node("atom", src="." if ch == "." else regex.escape(ch))

    def _escape(self) -> _Node:
        m = regex.match(r"\\(?:[pPN]\{[^}]*\}|[pP][A-Za-z]|x[0-9A-Fa-f]{2}|x\{[0-9A-Fa-f]+\}"
                        r"|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|0[0-7]{0,2}|[1-9][0-9]?|.)",
                        self.p[self.i:], flags=regex.DOTALL)
        text = m.group() if m else "\\"
        self.i += max(1, len(text))
        if text[1:2] in ("b", "B", "A", "Z", "z", "G", "m", "M", "K") and len(text) == 2:
            return _Node("empty")
        if len(text) >= 2 and text[1].isdigit() and text[1] != "0":
            return _Node("atom", src=".")     # a back-reference: anything
        return _Node("atom", src=text)

    def _class(self) -> _Node:
        j = self.i + 1
        if j < len(self.p) and self.p[j] == "^":
            j += 1
        if j < len(self.p) and self.p[j] == "]":
            j += 1
        while j < len(self.p) and self.p[j] != "]":
            j += 2 if self.p[j] == "\\" else 1
        src = self.p[self.i:j + 1]
        self.i = j + 1
        return _Node("atom", src=src)

    def _group(self) -> _Node | None:
        self.i += 1
        rest = self.p[self.i:]
        look = False
        atomic = False
        if rest.startswith("?#"):
            end = self.p.find(")", self.i)
            self.i = len(self.p) if end < 0 else end + 1
            return None
        if rest.startswith(("?=", "?!", "?<=", "?<!")):
            look = True
            self.i += 3 if rest.startswith("?<") else 2
        elif rest.startswith("?>"):
            atomic = True
            self.i += 2
        elif rest.startswith(("?P<", "?<")):
            self.i = self.p.find(">", self.i) + 1 or len(self.p)
        elif rest.startswith("?P="):        # named back-reference
            self.i = self.p.find(")", self.i) + 1 or len(self.p)
            return _Node("atom", src=".")
        elif rest.startswith("?"):
            m = regex.match(r"\?[a-zA-Z^-]*([:)])|\?\||\?\(", rest)
            if m:
                self.i += m.end()
                if m.group(1) == ")":
                    return None              # inline flags, e.g. (?i)
        body = self._alt()
        if self._peek() == ")":
            self.i += 1
        if look:
            return _Node("empty")
        return _Node("group", kids=(body,), safe=atomic)


@lru_cache(maxsize=4096)
def _atom_chars(src: str, ignore_case: bool) -> frozenset[str]:
    try:
        rx = regex.compile(src, regex.V0 | (regex.IGNORECASE if ignore_case else 0))
    except (regex.error, ValueError):
        return frozenset(_SAMPLES)
    return frozenset(c for c in _SAMPLES if rx.fullmatch(c))


class _Analysis:
    """Structural questions about a parsed pattern."""

    def __init__(self, ignore_case: bool) -> None:
        self.ic = ignore_case
        self.problems: list[str] = []

    def chars(self, n: _Node) -> frozenset[str]:
        if n.kind == "atom":
            return _atom_chars(n.src, self.ic)
        out: frozenset[str] = frozenset()
        for k in n.kids:
            out |= self.chars(k)
        return out

    def nullable(self, n: _Node) -> bool:
        if n.kind == "atom":
            return False
        if n.kind == "empty":
            return True
        if n.kind == "seq":
            return all(self.nullable(k) for k in n.kids)
        if n.kind == "alt":
            return any(self.nullable(k) for k in n.kids)
        if n.kind == "rep":
            return n.lo == 0 or self.nullable(n.kids[0])
        return self.nullable(n.kids[0])

    def first(self, n: _Node) -> frozenset[str]:
        if n.kind == "atom":
            return self.chars(n)
        if n.kind == "seq":
            out: frozenset[str] = frozenset()
            for k in n.kids:
                out |= self.first(k)
                if not self.nullable(k):
                    break
            return out
        out = frozenset()
        for k in n.kids:
            out |= self.first(k)
        return out

    def fixed(self, n: _Node) -> list[frozenset[str]] | None:
        """The per-position character sets of a fixed-length part, or None."""
        if n.kind == "atom":
            return [self.chars(n)]
        if n.kind == "empty":
            return []
        if n.kind == "group":
            return self.fixed(n.kids[0])
        if n.kind == "seq":
            out: list[frozenset[str]] = []
            for k in n.kids:
                part = self.fixed(k)
                if part is None:
                    return None
                out += part
            return out
        if n.kind == "rep" and n.hi == n.lo and n.lo <= 20:
            part = self.fixed(n.kids[0])
            return None if part is None else part * n.lo
        return None

    def inner_repeats(self, n: _Node) -> list[_Node]:
        """Unbounded, backtracking repeats inside ``n`` (not behind atomic/possessive)."""
        if n.safe:
            return []
        out = []
        if n.kind == "rep" and n.hi is None:
            out.append(n)
        for k in n.kids:
            out += self.inner_repeats(k)
        return out

    @staticmethod
    def _flat(n: _Node) -> list[_Node]:
        """A sequence's items, with plain groups opened up."""
        if n.kind == "group" and not n.safe:
            return _Analysis._flat(n.kids[0])
        if n.kind == "seq":
            out: list[_Node] = []
            for k in n.kids:
                out += _Analysis._flat(k)
            return out
        return [n]

    def _anchored(self, branch: _Node, inner: _Node) -> bool:
        """Does a mandatory part of ``branch``, disjoint from what ``inner``
        repeats, split one iteration of the outer repeat from the next?"""
        inner_chars = self.chars(inner.kids[0])
        for item in self._flat(branch):
            if item is inner or inner in self.inner_repeats(item):
                continue
            if not self.nullable(item) and not (self.first(item) & inner_chars):
                return True
        return False

    def visit(self, n: _Node, src_of: Callable[[_Node], str]) -> None:
        if n.safe:
            return
        if n.kind == "rep" and (n.hi is None or n.hi > 1):
            body = n.kids[0]
            while body.kind == "group" and not body.safe:
                body = body.kids[0]
            branches = body.kids if body.kind == "alt" else (body,)
            for branch in branches:
                for inner in self.inner_repeats(branch):
                    if not self._anchored(branch, inner):
                        self.problems.append(
                            f"nested repeat: {src_of(inner)} inside a repeated group; "
                            "nothing mandatory separates one round from the next, so a "
                            "failing match tries every way of splitting the text")
                        break
                else:
                    continue
                break
            if body.kind == "alt" and not self.problems:
                self._overlapping_alternatives(body)
        for k in n.kids:
            self.visit(k, src_of)

    def _overlapping_alternatives(self, alt: _Node) -> None:
        kids = alt.kids
        for i in range(len(kids)):
            for j in range(i + 1, len(kids)):
                a, b = kids[i], kids[j]
                if self.nullable(a) or self.nullable(b):
                    overlap = True
                else:
                    fa, fb = self.fixed(a), self.fixed(b)
                    if fa is not None and fb is not None and fa and fb:
                        # Same length and overlapping at each position, or the
                        # longer one tiled by the shorter: (\d|\d\d)+.
                        short, long_ = sorted((fa, fb), key=len)
                        overlap = len(long_) % len(short) == 0 and all(
                            x & short[k % len(short)] for k, x in enumerate(long_))
                    else:
                        overlap = bool(self.first(a) & self.first(b))
                if overlap:
                    self.problems.append(
                        "alternatives under a repeat can match the same text "
                        f"(branches {i + 1} and {j + 1}): a failing match tries every choice "
                        "at every round")
                    return


def _node_src(n: _Node) -> str:
    if n.kind == "atom":
        return n.src
    if n.kind == "empty":
        return ""
    if n.kind == "seq":
        return "".join(_node_src(k) for k in n.kids)
    if n.kind == "alt":
        return "|".join(_node_src(k) for k in n.kids)
    if n.kind == "group":
        return "(" + ("?>" if n.safe else "") + _node_src(n.kids[0]) + ")"
    q = {(0, None): "*", (1, None): "+", (0, 1): "?"}.get((n.lo, n.hi))
    if q is None:
        q = "{%d,%s}" % (n.lo, "" if n.hi is None else n.hi)
    inner = _node_src(n.kids[0])
    if n.kids[0].kind in ("seq", "alt"):
        inner = "(?:" + inner + ")"
    return inner + q + ("+" if n.safe else "")


def backtracking_risks(pattern: str, ignore_case: bool = True) -> list[str]:
    """Structural reasons why ``pattern`` may backtrack catastrophically."""
    try:
        tree = _Parser(pattern).parse()
    except (IndexError, ValueError, RecursionError):
        return []
    analysis = _Analysis(ignore_case)
    analysis.visit(tree, _node_src)
    return analysis.problems


# -- dynamic check -------------------------------------------------------------

def _pick(c: str) -> tuple[bool, bool, str]:
    """Order sample characters: letters and digits first, lower case first."""
    return (not c.isalnum(), c != c.lower(), c)


def adversarial_texts(pattern: str, ignore_case: bool = True) -> list[str]:
    """Texts built to make a backtracking pattern fail slowly: long runs of
    what its repeats accept, led by its literal start, ending in a character
    that fits nowhere."""
    try:
        tree = _Parser(pattern).parse()
    except (IndexError, ValueError, RecursionError):
        tree = _Node("empty")
    an = _Analysis(ignore_case)
    prefix = ""
    for item in an._flat(tree):
        if item.kind == "empty":
            continue
        cs = an.chars(item) if item.kind == "atom" else frozenset()
        if not cs:
            break
        prefix += min(cs, key=_pick)
    runs: list[str] = []
    for rep in an.inner_repeats(tree):
        part = an.fixed(rep.kids[0])
        if part and all(part):
            runs.append("".join(min(cs, key=_pick) for cs in part))
        else:
            cs = an.chars(rep.kids[0])
            if cs:
                runs.append(min(cs, key=_pick))
    runs += ["a", " ", "a "]
    texts = []
    for run in dict.fromkeys(runs):
        for size in (SHORT_TEXT, LONG_TEXT):
            body = run * max(1, size // len(run))
            texts.append(prefix + body + "\x00")
            texts.append(prefix + body + "!\n")
    return texts


def slow_on(compiled: "regex.Pattern[str]", timeout: float = REGEX_TIMEOUT) -> str | None:
    """The first adversarial text (described) on which the pattern times out."""
    ignore_case = bool(compiled.flags & regex.IGNORECASE)
    for text in adversarial_texts(compiled.pattern, ignore_case):
        try:
            compiled.search(text, timeout=timeout)
        except TimeoutError:
            shown = text[:12].encode("unicode_escape").decode("ascii")
            return f"{len(text)} characters starting {shown!r}"
    return None
