"""The Hyperscan screen: what it screens, and that matching stays the reference's."""

from __future__ import annotations

import pytest
import regex

from milterguard.ruleset import hsscreen
from milterguard.ruleset.matcher import RegexMatcher
from milterguard.ruleset.rules import load_ruleset

needs_hyperscan = pytest.mark.skipif(not hsscreen.AVAILABLE, reason="hyperscan not installed")


def test_screenable_refuses_syntax_hyperscan_reads_differently():
    assert hsscreen.screenable(r"display\s*:\s*none")
    assert hsscreen.screenable(r"\x41\.b")
    assert not hsscreen.screenable(r"a{,2}b")        # a quantifier here, literal to PCRE
    assert not hsscreen.screenable(r"\u00e9")        # escapes outside the shared set
    assert not hsscreen.screenable(r"\hx")
    assert not hsscreen.screenable("caf\u00e9")      # non-ASCII pattern
    assert not hsscreen.screenable(r"\x4")


@needs_hyperscan
def test_unsupported_constructs_are_prefiltered_and_confirmed():
    patterns = [("back", regex.compile(r"(ab)\1")), ("behind", regex.compile(r"(?<!x)yz")),
                ("plain", regex.compile(r"free\s+money", regex.I)),
                ("open", regex.compile(r"q{,2}r"))]
    m = RegexMatcher(patterns, compiled=True)
    assert m.screen is not None
    assert [r for r, _ in m.screen.screened] == ["back", "behind", "plain"]
    assert m.screen.prefiltered == 2
    assert [r for r, _ in m.screen.unscreened] == ["open"]
    assert [x.rule_id for x in m.search("abab xyz r FREE  money")] == ["back", "plain", "open"]
    assert [x.rule_id for x in m.search("abab yz")] == ["back", "behind"]
    assert m.search("abba xyz") == []


@needs_hyperscan
def test_matches_keep_rule_order_and_excerpts_of_the_python_matcher():
    patterns = [("first", regex.compile(r"\bfree\b", regex.I)),
                ("second", regex.compile(r"display\s*:\s*none", regex.I)),
                ("third", regex.compile(r"\bmoney\b")),
                ("fourth", regex.compile(r"visibility\s*:\s*hidden"))]
    fast, reference = RegexMatcher(patterns, compiled=True), RegexMatcher(patterns, compiled=False)
    text = "visibility: hidden; display:NONE; FREE money " + "x" * 80
    assert fast.search(text) == reference.search(text)
    assert [x.rule_id for x in fast.search(text)] == ["first", "second", "third", "fourth"]
    assert fast.search("FREE MONEY") == reference.search("FREE MONEY")   # case rules kept
    assert [x.rule_id for x in fast.search("FREE MONEY")] == ["first"]


@needs_hyperscan
def test_non_ascii_text_takes_the_python_path():
    # U+212A KELVIN SIGN folds to k in the regex module: a screen built on
    # another engine's tables must not be what decides this.
    patterns = [("k", regex.compile(r"\bkelvin\b", regex.I))]
    m = RegexMatcher(patterns, compiled=True)
    assert [x.rule_id for x in m.search("\u212aelvin")] == ["k"]


@needs_hyperscan
def test_shipped_rules_match_alike_on_sample_texts():
    rules = load_ruleset(True, [])
    texts = ["ADV: CHEAP STUFF", "<a@b.example>", "Mon, 1 Jan 2024 10:00:00 +0000",
             "Tue, 2 Jan 2024 10:00:00 +1930", "undisclosed-recipients:;", "$$$ $5 !! !",
             "font-size:0px;\"", "display: none", "a b c d e f", "=?gb2312?B?x?=",
             "localhost", "dsl-12345.example.net", "text/html", "",
             "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"]
    for target, matcher in rules.matchers.items():
        patterns = matcher.regexes.patterns
        if not patterns:
            continue
        reference = RegexMatcher(patterns, compiled=False)
        for text in texts:
            assert matcher.regexes.search(text) == reference.search(text), (target, text)
