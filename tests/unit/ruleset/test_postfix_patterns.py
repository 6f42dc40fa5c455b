"""ruleset.postfix_patterns: one Postfix table pattern rewritten to regex syntax."""

from __future__ import annotations

import pytest
import regex

from milterguard.ruleset.postfix_patterns import (TablePattern, Untranslatable, parse_pattern,
                                                  translate_pcre, translate_posix)


@pytest.mark.parametrize("posix, subject, matches", [
    (r"[\.]x", "\\x", True),           # a backslash is literal inside POSIX brackets
    (r"[\.]x", ".x", True),
    (r"[]a]", "]", True),
    (r"\<foo\>", "a foo b", True),
    (r"\<foo\>", "afoo", False),
    (r"a.b", "a\nb", True),            # no REG_NEWLINE: dot matches newline
    (r"(ab)\1", "abab", True),
])
def test_translate_posix(posix: str, subject: str, matches: bool) -> None:
    pattern, _ = translate_posix(posix)
    assert bool(regex.search(pattern, subject)) is matches


def matches(pattern: TablePattern, subject: str) -> bool:
    return bool(regex.search(pattern.python, subject, flags=regex.V0))


def test_parse_pattern_flags_negation_and_the_rest_of_the_line() -> None:
    pattern, rest = parse_pattern("!/^Subject: Sale/ REJECT no sales", pcre=False, per_line=False)
    assert pattern.negated and rest == "REJECT no sales"
    assert matches(pattern, "subject: SALE")                      # case-insensitive by default
    sensitive, _ = parse_pattern("/^Subject: Sale/i WARN", pcre=False, per_line=False)
    assert not matches(sensitive, "subject: SALE")                # i toggles it off
    other, rest = parse_pattern("#a/b# DISCARD", pcre=False, per_line=False)
    assert matches(other, "x a/b y") and rest == "DISCARD"


def test_per_line_patterns_anchor_at_line_ends() -> None:
    pattern, _ = parse_pattern("/^viagra$/", pcre=False, per_line=True)
    assert matches(pattern, "hello\nviagra\nbye")
    whole, _ = parse_pattern("/^viagra$/", pcre=False, per_line=False)
    assert not matches(whole, "hello\nviagra\nbye")


@pytest.mark.parametrize("line, pcre, why", [
    ("/unterminated REJECT", False, "no closing delimiter"),
    ("/x/q REJECT", False, "unknown regexp flag"),
    ("/x/U REJECT", True, "flag U"),
    ("/a[[.hyphen.]]/ REJECT", False, "collating element"),
    ("   ", False, "no pattern"),
])
def test_what_has_no_equivalent_is_refused(line: str, pcre: bool, why: str) -> None:
    with pytest.raises(Untranslatable, match=why):
        parse_pattern(line, pcre=pcre, per_line=False)


def test_translate_pcre_escapes_and_group_offsets() -> None:
    pattern, groups = translate_pcre(r"(a)\Q.*\E\h(b)\2", group_offset=1)
    assert groups == 2
    # Back-references move past the groups of the conditions put in front.
    assert regex.search("(x)" + pattern, "xa.* bb")
    assert not regex.search("(x)" + pattern, "xaxx bb")
