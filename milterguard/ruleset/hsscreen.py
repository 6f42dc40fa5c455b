"""A Hyperscan screen: which of a target's regexes can match a text, in one pass.

RegexMatcher used to try a combined alternation of a target's patterns and
then each pattern alone, one backtracking search per rule and text. Here all
the patterns Hyperscan can compile go into one database (a DFA/NFA hybrid,
linear in the text, no backtracking), scanned once per text; it answers
which patterns *may* match. Only those candidates are then searched with the
`regex` module, under their per-rule timeout and the message's ScanBudget,
which gives the excerpt and the final yes or no. So the `regex` module stays
the one definition of what a rule means; Hyperscan only proves misses.

That proof needs Hyperscan's answer to be a superset of the `regex`
module's, which holds only where the two agree on the syntax and on
character classes:

* Patterns with constructs Hyperscan cannot run exactly (back-references,
  look-arounds, possessive quantifiers) are compiled with HS_FLAG_PREFILTER,
  whose matches are a superset of the exact ones by Hyperscan's contract.
* Patterns whose syntax means something else to Hyperscan (``{,n}`` is a
  literal to PCRE, a quantifier to `regex`), escapes outside a short list
  both engines read alike, or any non-ASCII character are not screened: they
  run as before, in the `regex` module on every text.
* Texts that are not ASCII are not screened either (the caller's fallback
  runs): the two engines' Unicode tables (``\\w`` with combining marks,
  ``\\s``, case folding of the Kelvin sign or long s) differ in places, and a
  difference there would be a silent miss. ASCII text is where they agree;
  tests/unit/ruleset/test_hsscreen.py checks that on random patterns and
  texts, and scripts/hs_differential.py on a whole corpus.

Hyperscan is optional: when the module cannot be imported, ``AVAILABLE`` is
false and the matcher runs the pure-Python path (the reference in tests).
"""

from __future__ import annotations

import ctypes
import importlib
import threading
from types import ModuleType
from typing import Any, Sequence

import regex


def _optional_hyperscan() -> ModuleType | None:
    """The hyperscan module, or None: the pure-Python matcher is the fallback."""
    try:
        return importlib.import_module("hyperscan")
    except ImportError:   # pragma: no cover - depends on the installation
        return None


_hs = _optional_hyperscan()

AVAILABLE = _hs is not None

# python-hyperscan calls the match handler through PyGILState_Ensure. In a
# thread whose Python thread state was made by hand -- pymilter's, one per
# milter connection on libmilter's threads -- the GILState record can be
# another (deleted) thread state, and the daemon crashed there (segfault in
# the handler, tests/e2e/test_greylist_e2e.py). PyGILState_Check() is true
# exactly when the record is the running thread state, so the handler's
# Ensure is safe; otherwise the text takes the pure-`regex` path. Measured
# through real Postfix (smtp-source, 4 sessions, the newsletter of
# bench/mail): only 252 of 2100 texts were on such a thread, so in the
# daemon the screen does little until the scan runs without a Python
# handler (a C match handler filling a buffer would need no GIL at all).
_gilstate_check = ctypes.pythonapi.PyGILState_Check
_gilstate_check.restype = ctypes.c_int
_gilstate_check.argtypes = []


def safe_thread() -> bool:
    """Whether a Hyperscan scan with a Python match handler is safe here."""
    return bool(_gilstate_check())

#: Escapes both engines read alike: classes, anchors, control characters,
#: \xHH, back-references \1-\9, and escaped punctuation (a literal in both).
_ESCAPE = regex.compile(r"\\(.)", regex.DOTALL)
_SAFE_ESCAPES = frozenset("dDwWsSbBAZntrfv") | frozenset(
    "\\.^$*+?()[]{}|/-#&~ !\"%',:;<=>@_`")
#: "{,n}": a quantifier to `regex`, four literal characters to Hyperscan.
_OPEN_MIN = regex.compile(r"(?<!\\)\{,")


def screenable(pattern: str) -> bool:
    """Whether Hyperscan reads ``pattern`` as the `regex` module does (on ASCII text)."""
    if not pattern.isascii() or _OPEN_MIN.search(pattern):
        return False
    for m in _ESCAPE.finditer(pattern):
        char = m.group(1)
        if char == "x":
            if not regex.match(r"[0-9A-Fa-f]{2}", pattern[m.end():]):
                return False
        elif char in "123456789":
            if pattern[m.end():m.end() + 1].isdigit():
                return False   # \12: a group or an octal escape, by engine
        elif char not in _SAFE_ESCAPES:
            return False
    return True


def _flags(pattern: "regex.Pattern[str]", prefilter: bool) -> int:
    assert _hs is not None
    flags: int = _hs.HS_FLAG_SINGLEMATCH | _hs.HS_FLAG_ALLOWEMPTY
    if pattern.flags & regex.IGNORECASE:
        flags |= _hs.HS_FLAG_CASELESS
    if pattern.flags & regex.MULTILINE:
        flags |= _hs.HS_FLAG_MULTILINE
    if pattern.flags & regex.DOTALL:
        flags |= _hs.HS_FLAG_DOTALL
    if prefilter:
        flags |= _hs.HS_FLAG_PREFILTER
    return flags


def _compiles(expression: bytes, flags: int) -> bool:
    assert _hs is not None
    try:
        _hs.Database().compile(expressions=[expression], ids=[0], elements=1, flags=[flags])
    except _hs.error:
        return False
    return True


def _collect(index: int, start: int, end: int, flags: int, found: set[int]) -> None:
    found.add(index)


class HyperscanScreen:
    """One Hyperscan database over the screenable patterns of a target.

    ``screened`` are the (rule id, pattern) pairs in the database, by index;
    ``unscreened`` the rest, which the caller runs on every text.
    """

    def __init__(self, patterns: Sequence[tuple[str, "regex.Pattern[str]"]]) -> None:
        if _hs is None:
            raise RuntimeError("hyperscan is not installed")
        self.screened: list[tuple[str, "regex.Pattern[str]"]] = []
        self.unscreened: list[tuple[str, "regex.Pattern[str]"]] = []
        self.prefiltered = 0
        expressions: list[bytes] = []
        flags: list[int] = []
        for item in patterns:
            pattern = item[1]
            if not screenable(pattern.pattern):
                self.unscreened.append(item)
                continue
            expression = pattern.pattern.encode("ascii")
            for prefilter in (False, True):
                chosen = _flags(pattern, prefilter)
                if _compiles(expression, chosen):
                    self.screened.append(item)
                    expressions.append(expression)
                    flags.append(chosen)
                    self.prefiltered += prefilter
                    break
            else:
                self.unscreened.append(item)
        self.database: Any = None
        if expressions:
            self.database = _hs.Database()
            self.database.compile(expressions=expressions, ids=list(range(len(expressions))),
                                  elements=len(expressions), flags=flags)
        # Scratch space is per thread (the milter runs a thread per session).
        self._local = threading.local()

    def candidates(self, text: str) -> set[int]:
        """Indexes into ``screened`` of the patterns that may match ``text``
        (which must be ASCII: see the module docstring)."""
        found: set[int] = set()
        if self.database is None:
            return found
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            assert _hs is not None
            scratch = self._local.scratch = _hs.Scratch(self.database)
        self.database.scan(text.encode("ascii"), match_event_handler=_collect,
                           context=found, scratch=scratch)
        return found
