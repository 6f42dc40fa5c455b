"""ruleset.regexrisk: patterns that backtrack catastrophically, found by structure and by running them."""

from __future__ import annotations

import pytest
import regex

from milterguard.ruleset.regexrisk import (LONG_TEXT, SHORT_TEXT, adversarial_texts,
                                           backtracking_risks, slow_on)


@pytest.mark.parametrize("pattern", [r"(a+)+", r"(a|a)*", r"(.*)*", r"(\w+\s?)*$",
                                     r"(a|b+)*c", r"^(x+x+)+y", r"(?:\d|\d\d)+!",
                                     r"([a-z]+)*@"])
def test_backtracking_prone_patterns_are_flagged(pattern):
    assert backtracking_risks(pattern), pattern


@pytest.mark.parametrize("pattern", [r"(\w+\s)*", r"(\d+,)*x", r"(ab|ac)*", r"v[i1]agra",
                                     r"^([a-z0-9]+\.)+[a-z]{2,}$", r"(?>a+)+", r"(a++)+",
                                     r"(a|ab)*c", r"\bwire\s+transfer\b",
                                     r"^(localhost|localhost\.localdomain)$"])
def test_sound_patterns_are_not_flagged(pattern):
    assert backtracking_risks(pattern) == [], pattern


def test_dynamic_check_catches_a_pattern_that_really_stalls():
    slow = regex.compile(r"(\w+\s?)*$", regex.I)
    assert slow_on(slow, timeout=0.05) is not None
    assert slow_on(regex.compile(r"(\w+\s)*x", regex.I), timeout=0.05) is None
    # the texts start with the pattern's literal lead-in
    assert all(t.startswith("subject: ") for t in adversarial_texts(r"subject: (a+)+$", True))


def test_adversarial_texts_come_short_and_long_and_end_in_a_misfit() -> None:
    texts = adversarial_texts(r"(\d+-)+x", True)
    assert {len(t) for t in texts} >= {SHORT_TEXT + 1, LONG_TEXT + 1}
    assert all(t.endswith(("\x00", "!\n")) for t in texts)
    assert any(t.startswith("0" * SHORT_TEXT) for t in texts)  # a run of what the repeats take


def test_unparsable_pattern_is_no_risk_and_still_gets_texts() -> None:
    assert backtracking_risks("(unclosed") == []
    assert adversarial_texts("(unclosed", True)
