"""Compiled matchers: many phrases or patterns, one pass over the text.

All phrases that read the same target are folded (``content.fold.fold``),
split into words and indexed by their first word, so scanning costs about
the same for ten phrases as for ten thousand (see PhraseMatcher). Regular
expressions run one by one, each with a timeout and against the message's
``ScanBudget``, because a catastrophic pattern must cost one rule a miss
(reported as a finding), never stall the milter.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import regex

from milterguard.content.fold import fold
from milterguard.ruleset import hsscreen
from milterguard.ruleset.budget import ScanBudget

log = logging.getLogger("milterguard.matcher")

#: Seconds one regular expression may run on one text.
REGEX_TIMEOUT = 0.25

# Searches start with concurrent=False: by default the `regex` module
# releases the GIL around each match, and in a milter with a thread per
# connection that turns every rule check into a GIL hand-off; measured in the
# daemon, that more than doubled the CPU cost per message. But a search that
# holds the GIL stops every other session for as long as it runs (2-4 s
# measured with a catastrophic pattern), so one that outlasts HOLD_GIL is
# run again with concurrent=True: the rare slow search lets the others run,
# the common fast one keeps its cost.

#: Seconds a search may run holding the GIL before it is retried without.
HOLD_GIL = 0.01

#: Characters of context kept around a match, for `explain` and the log.
EXCERPT = 40


@dataclass(frozen=True)
class Match:
    rule_id: str
    excerpt: str
    phrase: str = ""   # the folded phrase (or pattern) that matched


#: A word, or one punctuation character: phrases and text split alike, so
#: a phrase matches exactly on word boundaries ("pill" never hits "pills").
#: (The standard library's engine tokenises about twice as fast as `regex`.)
_TOKEN = re.compile(r"\w+|[^\w\s]")
#: The same on ASCII text (folded mail nearly always is): with re.ASCII the
#: engine skips its Unicode class look-ups, about a third faster. Folded
#: text has no \x1c-\x1f (str.split whitespace), the one place where ASCII
#: \s and Unicode \s differ on ASCII characters.
_ASCII_TOKEN = re.compile(r"\w+|[^\w\s]", re.ASCII)


def tokens(folded: str) -> list[str]:
    """Words and punctuation characters of folded text, in order."""
    if folded.isascii():
        return _ASCII_TOKEN.findall(folded)
    return _TOKEN.findall(folded)


class PhraseMatcher:
    """Finds which of many literal phrases occur, on word boundaries.

    Phrases and text are folded alike (case, width, spacing, look-alikes)
    and split into words. Candidates come from set intersections done in C:
    the text's words against the one-word phrases, the text's word pairs
    against the first two words of longer phrases. So the cost per message
    stays nearly flat from ten phrases to tens of thousands; the text is
    walked word by word only when a candidate pair occurs in it.
    """

    def __init__(self, phrases: Iterable[tuple[str, str]]) -> None:
        # token tuple -> rule ids (several rules may share a phrase)
        self.owners: dict[tuple[str, ...], list[str]] = {}
        for rule_id, phrase in phrases:
            key = tuple(_TOKEN.findall(fold(phrase)))
            if key:
                self.owners.setdefault(key, []).append(rule_id)
        self._single: dict[str, tuple[str, ...]] = {}
        # first two words -> the phrases of two or more words starting so
        self._multi: dict[tuple[str, str], list[tuple[str, ...]]] = {}
        for key in self.owners:
            if len(key) == 1:
                self._single[key[0]] = key
            else:
                self._multi.setdefault((key[0], key[1]), []).append(key)
        self._singles = frozenset(self._single)
        self._pairs = frozenset(self._multi)

    def __len__(self) -> int:
        return len(self.owners)

    def search(self, text: str, folded: bool = False) -> list[Match]:
        if not self.owners or not text:
            return []
        if not folded:
            text = fold(text)
        words = tokens(text)
        found = [self._single[t] for t in self._singles.intersection(words)]
        if self._pairs:
            pairs = self._pairs.intersection(zip(words, words[1:]))
            if pairs:
                # Only now walk the text, and only where a candidate pair starts.
                seen: set[tuple[str, ...]] = set()
                for i, pair in enumerate(zip(words, words[1:])):
                    if pair not in pairs:
                        continue
                    for key in self._multi[pair]:
                        if key not in seen and (len(key) == 2 or tuple(words[i:i + len(key)]) == key):
                            seen.add(key)
                            found.append(key)
        out: list[Match] = []
        for key in found:
            excerpt = self._excerpt(text, key)
            phrase = " ".join(key)
            out.extend(Match(rule_id, excerpt, phrase) for rule_id in self.owners[key])
        return out

    @staticmethod
    def _excerpt(text: str, key: tuple[str, ...]) -> str:
        """Context around the first occurrence; only run for hits, so rare."""
        pattern = r"(?<!\w)" + r"\s*".join(regex.escape(t) for t in key) + r"(?!\w)"
        m = regex.search(pattern, text, concurrent=False)
        if not m:
            return " ".join(key)
        start = max(0, m.start() - EXCERPT)
        return text[start:m.end() + EXCERPT]


#: Patterns that cannot safely join a combined alternation: backreferences
#: (their group numbers shift) and global inline flags (they would apply to
#: every other pattern).
_UNCOMBINABLE = regex.compile(r"\\[1-9]|\\g<|\(\?P=|\(\?[a-zA-Z]+\)")


#: A pattern that starts with this many plain characters is found by the
#: engine's literal search, several times faster alone than inside an
#: alternation (which scans every position): html's "display\s*:\s*none"
#: and company cost 2 us each alone and 24 us as one screen of five.
LITERAL_LEAD = 3
#: ... as long as a target has few of them: each costs a call.
MAX_LITERAL_SOLO = 8

_LEAD_CHAR = regex.compile(r"[A-Za-z0-9<>@:;=_,'\"/ -]|\\[.^$*+?()\[\]{}|\\/-]")


def literal_lead(pattern: str) -> int:
    """How many characters a pattern matches literally before anything else."""
    count = pos = 0
    while pos < len(pattern):
        m = _LEAD_CHAR.match(pattern, pos)
        if not m:
            break
        pos = m.end()
        count += 1
    if pos < len(pattern) and pattern[pos] in "*+?{" and count:
        count -= 1   # the last character is quantified: not a fixed prefix
    return count


class RegexMatcher:
    """Per-rule regular expressions over unfolded text, each with a timeout.

    Most texts match none of a target's patterns, so one combined
    alternation of them is tried first: one pass over the text instead of
    one per rule. Only when it matches (or times out) do the patterns run
    one by one to say which rules hit. Patterns that start with a literal
    (a few per target) run alone instead: the engine's literal search finds
    them faster than any alternation.
    """

    def __init__(self, patterns: Sequence[tuple[str, "regex.Pattern[str]"]],
                 compiled: bool | None = None) -> None:
        self.patterns = list(patterns)
        self._python_only(patterns)
        # With Hyperscan (``compiled`` None: when importable), ASCII texts
        # are screened in one pass and only the candidates searched here;
        # other texts, and patterns it cannot screen, take the path above.
        self.screen: hsscreen.HyperscanScreen | None = None
        self.rest: RegexMatcher | None = None
        if compiled is None:
            compiled = hsscreen.AVAILABLE
        if compiled and self.patterns:
            self.screen = hsscreen.HyperscanScreen(self.patterns)
            self.rest = RegexMatcher(self.screen.unscreened, compiled=False)

    def _python_only(self, patterns: Sequence[tuple[str, "regex.Pattern[str]"]]) -> None:
        """The pure-Python plan: literal-led and uncombinable patterns alone,
        the rest behind one combined alternation."""
        self.solo = [p for p in self.patterns if _UNCOMBINABLE.search(p[1].pattern)]
        self.grouped = [p for p in self.patterns if p not in self.solo]
        self._ranked(self.solo + self.grouped)
        led = [p for p in self.grouped if literal_lead(p[1].pattern) >= LITERAL_LEAD]
        if len(led) <= MAX_LITERAL_SOLO:
            self.solo += led
            self.grouped = [p for p in self.grouped if p not in led]
        self.combined = None
        if len(self.grouped) > 1:
            parts = []
            for _, pattern in self.grouped:
                flag = "i" if pattern.flags & regex.IGNORECASE else "-i"
                parts.append(f"(?{flag}:{pattern.pattern})")
            try:
                self.combined = regex.compile("|".join(parts), regex.V0)
            except (regex.error, ValueError, OverflowError):
                self.solo, self.grouped = self.patterns, []
                self._ranked(self.patterns)

    def _ranked(self, order: list[tuple[str, "regex.Pattern[str]"]]) -> None:
        """Matches are reported in this order, whichever way they are found."""
        self._rank: dict[tuple[str, str], int] = {}
        for i, (rule_id, pattern) in enumerate(order):
            self._rank.setdefault((rule_id, pattern.pattern), i)

    def _run(self, patterns: Sequence[tuple[str, "regex.Pattern[str]"]], text: str,
             budget: ScanBudget | None) -> list[Match]:
        out = []
        for rule_id, pattern in patterns:
            try:
                m = timed_search(pattern, text, budget)
            except BudgetSpent:
                continue   # counted in the budget; the session reports it once
            except TimeoutError:
                if budget is not None:
                    budget.timed_out[rule_id] = None
                log.warning("event=regex-timeout rule=%s bytes=%d", rule_id, len(text))
                continue
            if m:
                start = max(0, m.start() - EXCERPT)
                out.append(Match(rule_id, text[start:m.end() + EXCERPT], pattern.pattern))
        return out

    def search(self, text: str, budget: ScanBudget | None = None) -> list[Match]:
        screen = self.screen
        if screen is not None and text and text.isascii() and hsscreen.safe_thread():
            if budget is not None:
                # The compiled pass is regex time too: it counts against the
                # message's budget, and once that is spent nothing runs (each
                # pattern counted as skipped), exactly as on the pure path.
                if budget.spent >= budget.seconds:
                    budget.skipped += len(self.patterns)
                    return []
                start = budget.clock()
                candidates = screen.candidates(text)
                budget.spent += budget.clock() - start
            else:
                candidates = screen.candidates(text)
            found = [screen.screened[i] for i in sorted(candidates)] if candidates else []
            out = self._run(found, text, budget) if found else []
            assert self.rest is not None
            if self.rest.patterns:
                out += self.rest.search(text, budget)
            if len(out) > 1:
                rank = self._rank
                out.sort(key=lambda m: rank[(m.rule_id, m.phrase)])
            return out
        out = self._run(self.solo, text, budget) if self.solo else []
        if self.combined is not None:
            try:
                if timed_search(self.combined, text, budget) is None:
                    return out
            except TimeoutError:
                pass   # undecided: let each pattern answer under its own timeout
        out += self._run(self.grouped, text, budget)
        if len(out) > 1:
            rank = self._rank
            out.sort(key=lambda m: rank[(m.rule_id, m.phrase)])
        return out


class BudgetSpent(TimeoutError):
    """The message's regex budget is spent: the search was not run."""


def timed_search(pattern: "regex.Pattern[str]", text: str,
                 budget: ScanBudget | None) -> "regex.Match[str] | None":
    """``pattern.search(text)`` within REGEX_TIMEOUT and what is left of the
    message's budget; TimeoutError when either runs out.

    The first HOLD_GIL seconds run holding the GIL (cheap); a search that
    needs longer is run again releasing it, so other sessions go on. (Kept
    to plain arithmetic: it runs for every pattern on every text.)
    """
    if budget is None:
        try:
            return pattern.search(text, timeout=HOLD_GIL, concurrent=False)
        except TimeoutError:
            return pattern.search(text, timeout=REGEX_TIMEOUT - HOLD_GIL, concurrent=True)
    limit = budget.seconds - budget.spent
    if limit <= 0:
        budget.skipped += 1
        raise BudgetSpent()
    clock = budget.clock
    start = clock()
    try:
        return pattern.search(text, timeout=HOLD_GIL if limit > HOLD_GIL else limit,
                              concurrent=False)
    except TimeoutError:
        if limit <= HOLD_GIL:
            raise
        if limit > REGEX_TIMEOUT:
            limit = REGEX_TIMEOUT
        return pattern.search(text, timeout=limit - HOLD_GIL, concurrent=True)
    finally:
        budget.spent += clock() - start


class TargetMatcher:
    """Everything that reads one target: its phrases and its patterns."""

    def __init__(self, phrases: Iterable[tuple[str, str]],
                 patterns: Sequence[tuple[str, "regex.Pattern[str]"]],
                 compiled: bool | None = None) -> None:
        self.phrases = PhraseMatcher(phrases)
        self.regexes = RegexMatcher(patterns, compiled)

    def search(self, texts: Iterable[str], budget: ScanBudget | None = None) -> list[Match]:
        """Matches in any of the texts; one per (rule, phrase or pattern).
        Regexes count against ``budget`` (phrases are linear: they always run)."""
        # Most targets have only phrases or only patterns, and most texts
        # match nothing: skip what is empty, build the dict only for hits.
        phrases = self.phrases if self.phrases.owners else None
        regexes = self.regexes if self.regexes.patterns else None
        seen: dict[tuple[str, str], Match] = {}
        for text in texts:
            found = phrases.search(text) if phrases else []
            if regexes:
                found += regexes.search(text, budget)
            for m in found:
                seen.setdefault((m.rule_id, m.phrase), m)
        return list(seen.values()) if seen else []
