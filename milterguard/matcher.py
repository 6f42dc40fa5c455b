"""Compiled matchers: many phrases or patterns, one pass over the text.

All phrases that read the same target are folded (``normalize.fold``) and
compiled into one trie-shaped regular expression, so scanning costs about
the same for ten phrases as for ten thousand: at each position the engine
follows one branch of the trie instead of trying every phrase. Regular
expressions run one by one, each with a timeout, because a catastrophic
pattern must cost one rule a miss, never stall the milter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import regex

from milterguard.normalize import fold

log = logging.getLogger("milterguard.matcher")

#: Seconds one regular expression may run on one text.
REGEX_TIMEOUT = 0.25

#: Characters of context kept around a match, for `explain` and the log.
EXCERPT = 40


@dataclass(frozen=True)
class Match:
    rule_id: str
    excerpt: str
    phrase: str = ""   # the folded phrase (or pattern) that matched


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class PhraseMatcher:
    """Finds which of many literal phrases occur, on word boundaries.

    Phrases and text are folded alike (case, width, spacing, look-alikes),
    so "FREE  Offer" matches the phrase "free offer".
    """

    def __init__(self, phrases: Iterable[tuple[str, str]]) -> None:
        # folded phrase -> rule ids (several rules may share a phrase)
        self.owners: dict[str, list[str]] = {}
        for rule_id, phrase in phrases:
            key = fold(phrase)
            if key:
                self.owners.setdefault(key, []).append(rule_id)
        self._trie: dict = {}
        for key in self.owners:
            node = self._trie
            for ch in key:
                node = node.setdefault(ch, {})
            node[""] = True
        self._regex = None
        if self.owners:
            body = self._emit(self._trie)
            self._regex = regex.compile(r"(?<!\w)(?:" + body + r")(?!\w)")

    @classmethod
    def _emit(cls, node: dict) -> str:
        """Turn a trie node into a regex: shared prefixes written once."""
        branches = []
        for ch in sorted(k for k in node if k):
            branches.append(regex.escape(ch) + cls._emit(node[ch]))
        if not branches:
            return ""
        alt = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:
            return "(?:" + alt + ")?"
        return alt

    def _phrases_along(self, matched: str) -> Iterable[str]:
        """Every phrase that is a word-bounded prefix of one regex match.

        The regex reports the longest branch at a position; a shorter phrase
        that ends inside it ("cheap" in "cheap pills") is found here.
        """
        node = self._trie
        for i, ch in enumerate(matched):
            node = node.get(ch)
            if node is None:
                return
            if "" in node and (i + 1 == len(matched) or not _is_word(matched[i + 1])
                               or not _is_word(ch)):
                yield matched[:i + 1]

    def search(self, text: str, folded: bool = False) -> list[Match]:
        if self._regex is None or not text:
            return []
        if not folded:
            text = fold(text)
        found: dict[str, Match] = {}
        try:
            for m in self._regex.finditer(text, overlapped=True, timeout=REGEX_TIMEOUT * 4):
                for phrase in self._phrases_along(m.group()):
                    if phrase in found:
                        continue
                    start = max(0, m.start() - EXCERPT)
                    excerpt = text[start:m.start() + len(phrase) + EXCERPT]
                    for rule_id in self.owners[phrase]:
                        found.setdefault(rule_id + "\0" + phrase, Match(rule_id, excerpt, phrase))
        except TimeoutError:
            log.warning("event=phrase-timeout phrases=%d bytes=%d", len(self.owners), len(text))
        return list(found.values())


class RegexMatcher:
    """Per-rule regular expressions over unfolded text, each with a timeout."""

    def __init__(self, patterns: Sequence[tuple[str, "regex.Pattern[str]"]]) -> None:
        self.patterns = list(patterns)

    def search(self, text: str) -> list[Match]:
        out = []
        for rule_id, pattern in self.patterns:
            try:
                m = pattern.search(text, timeout=REGEX_TIMEOUT)
            except TimeoutError:
                log.warning("event=regex-timeout rule=%s bytes=%d", rule_id, len(text))
                continue
            if m:
                start = max(0, m.start() - EXCERPT)
                out.append(Match(rule_id, text[start:m.end() + EXCERPT], pattern.pattern))
        return out


class TargetMatcher:
    """Everything that reads one target: its phrases and its patterns."""

    def __init__(self, phrases: Iterable[tuple[str, str]],
                 patterns: Sequence[tuple[str, "regex.Pattern[str]"]]) -> None:
        self.phrases = PhraseMatcher(phrases)
        self.regexes = RegexMatcher(patterns)

    def search(self, texts: Iterable[str]) -> list[Match]:
        """Matches in any of the texts; one per (rule, phrase or pattern)."""
        seen: dict[tuple[str, str], Match] = {}
        for text in texts:
            for m in self.phrases.search(text) + self.regexes.search(text):
                seen.setdefault((m.rule_id, m.phrase), m)
        return list(seen.values())
