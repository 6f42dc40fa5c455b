"""Differential fuzzing of the Hyperscan screen against the pure-Python matcher.

RegexMatcher with Hyperscan (``compiled=True``) must give exactly what the
`regex`-only matcher (``compiled=False``, the reference) gives: the same
rule ids, patterns, excerpts, in the same order, on random patterns (from a
grammar that mixes what Hyperscan runs exactly, what it only prefilters --
back-references, look-arounds -- and what it must not screen at all, such
as ``{,n}``) and random texts, ASCII and not.
"""

from __future__ import annotations

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from milterguard.ruleset import hsscreen
from milterguard.ruleset.matcher import RegexMatcher

pytestmark = pytest.mark.skipif(not hsscreen.AVAILABLE, reason="hyperscan not installed")

ALPHABET = "abAB1 \n-:@.<>K\u212a\u017fs\u0301\u00e9\u00a0\x1c"

ATOMS = st.sampled_from([
    "a", "b", "A", "1", " ", "-", ":", "@", r"\.", r"\d", r"\w", r"\s", r"\W", r"\S",
    r"\b", r"\B", "[a-b]", "[^a@]", ".", "^", "$", r"\Z", r"\A", "s", "k", r"\x41",
])


def _pattern() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        quantified = st.tuples(inner, st.sampled_from(
            ["*", "+", "?", "{2}", "{1,3}", "{,2}", "*?", "++"])).map("".join)
        group = inner.map(lambda p: f"({p})")
        alternation = st.tuples(inner, inner).map(lambda t: f"(?:{t[0]}|{t[1]})")
        sequence = st.lists(inner, min_size=2, max_size=4).map("".join)
        look = st.tuples(st.sampled_from(["(?=", "(?!", "(?<=", "(?<!"]), inner).map(
            lambda t: f"{t[0]}{t[1]})")
        backref = inner.map(lambda p: f"({p})\\1")
        return st.one_of(quantified, group, alternation, sequence, look, backref)
    return st.recursive(ATOMS, extend, max_leaves=6)


def _compiled(pattern: str, caseless: bool) -> "regex.Pattern[str] | None":
    try:
        return regex.compile(pattern, regex.V0 | (regex.IGNORECASE if caseless else 0))
    except (regex.error, ValueError, OverflowError):
        return None


@given(st.lists(st.tuples(_pattern(), st.booleans()), min_size=1, max_size=6),
       st.lists(st.text(alphabet=ALPHABET, max_size=30), min_size=1, max_size=4))
def test_screened_matcher_equals_the_python_matcher(specs, texts):
    patterns = []
    for i, (source, caseless) in enumerate(specs):
        compiled = _compiled(source, caseless)
        if compiled is not None:
            patterns.append((f"r{i}", compiled))
    if not patterns:
        return
    fast = RegexMatcher(patterns, compiled=True)
    reference = RegexMatcher(patterns, compiled=False)
    assert fast.screen is not None and reference.screen is None
    for text in texts + [t.encode("ascii", "ignore").decode() for t in texts]:
        assert fast.search(text) == reference.search(text), (text, [p.pattern for _, p in patterns])
