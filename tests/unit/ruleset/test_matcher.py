"""Phrase automaton and regex matcher."""

from __future__ import annotations

import regex

from milterguard.ruleset.matcher import PhraseMatcher, RegexMatcher, TargetMatcher


def ids(matches):
    return sorted({m.rule_id for m in matches})


def test_phrases_match_on_word_boundaries_case_and_spacing_insensitive():
    pm = PhraseMatcher([("a", "free money"), ("b", "pill")])
    assert ids(pm.search("Get FREE\n   Money now")) == ["a"]
    assert ids(pm.search("pills and spills")) == []
    assert ids(pm.search("one pill.")) == ["b"]


def test_overlapping_and_prefix_phrases_are_all_found():
    pm = PhraseMatcher([("short", "cheap"), ("long", "cheap pills"), ("mid", "pills now")])
    assert ids(pm.search("cheap pills now")) == ["long", "mid", "short"]


def test_phrase_with_punctuation():
    pm = PhraseMatcher([("d", "$100 bonus"), ("e", "100% free")])
    assert ids(pm.search("claim your $100 bonus today, 100% free!")) == ["d", "e"]


def test_shared_phrase_reports_every_owner():
    pm = PhraseMatcher([("x", "lottery"), ("y", "Lottery")])
    assert ids(pm.search("you won the lottery")) == ["x", "y"]


def test_many_phrases_compile_and_match():
    phrases = [("r%d" % i, "word%d token%d" % (i, i)) for i in range(5000)]
    pm = PhraseMatcher(phrases)
    assert ids(pm.search("xx word4999 token4999 yy word12 token12")) == ["r12", "r4999"]
    assert pm.search("word4999 token4998") == []


def test_regex_timeout_is_a_miss_not_a_hang():
    evil = regex.compile(r"(a+)+$")
    rm = RegexMatcher([("evil", evil), ("fine", regex.compile("b"))])
    text = "a" * 5000 + "!b"
    assert ids(rm.search(text)) == ["fine"]


def test_target_matcher_excerpt_has_context():
    tm = TargetMatcher([("p", "secret phrase")], [])
    (m,) = tm.search(["some text before the secret phrase and after"])
    assert "secret phrase" in m.excerpt and "before" in m.excerpt


def test_tokens_on_ascii_and_unicode_text_agree_with_the_unicode_tokenizer():
    import re
    from milterguard.ruleset.matcher import tokens
    unicode_tokens = re.compile(r"\w+|[^\w\s]")
    for text in ["it's 10:00, as usual.", "wire_the funds!!", "café déjà-vu", "a\x1cb",
                 "", "  ", "€5 off", "x.y@z"]:
        if "\x1c" in text:
            text = " ".join(text.split())   # folded text never holds \x1c-\x1f
        assert tokens(text) == unicode_tokens.findall(text)


def test_literal_lead_counts_only_a_fixed_prefix():
    from milterguard.ruleset.matcher import literal_lead

    assert literal_lead(r"display\s*:\s*none") == 7
    assert literal_lead(r"XJS\*C4J") == 7
    assert literal_lead(r"abc*d") == 2          # the c is quantified
    assert literal_lead(r"\bviagra") == 0
    assert literal_lead(r"^\d{1,3}") == 0
    assert literal_lead(r"!\s*!") == 0


def test_literal_led_patterns_run_alone_and_matches_keep_rule_order():
    def c(p: str) -> "regex.Pattern[str]":
        return regex.compile(p, regex.I)

    m = RegexMatcher([("first", c(r"\bfree\b")), ("second", c(r"display\s*:\s*none")),
                      ("third", c(r"\bmoney\b")), ("fourth", c(r"visibility\s*:\s*hidden"))])
    assert [r for r, _ in m.solo] == ["second", "fourth"]
    assert [r for r, _ in m.grouped] == ["first", "third"]
    text = "visibility: hidden; display:none; free money"
    assert [x.rule_id for x in m.search(text)] == ["first", "second", "third", "fourth"]
    assert m.search("nothing to see") == []
