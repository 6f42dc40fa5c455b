"""Rule lint: what loads fine but will not do what its author meant.

``load_ruleset`` rejects what cannot work at all (bad syntax, unknown
fields, invalid patterns, duplicate ids). ``lint`` looks at a loaded rule
set for rules that work, but badly:

- a rule shadowed by an earlier one: whenever it hits, the earlier rule
  hits too and asks for an action at least as strong, so it never changes
  a verdict (it is still recorded, hence only a warning);
- phrases that fold to nothing (never match) or to another phrase of the
  same rule (they count once toward ``min_matches``);
- a ``min_matches`` the rule can never reach;
- regular expressions prone to catastrophic backtracking, found twice: on
  the pattern's structure and by running it on adversarial texts with the
  matcher's own timeout (both in ``regexrisk``);
- regular expressions that match the empty string (they hit every text);
- compound rules that can never hit, or only when a rule they need has
  already decided the message;
- duplicate ids, when given a plain list of rules rather than a RuleSet.

Shadowing is judged soundly, never by guesswork: rule B is reported only
if each of B's phrases contains one of A's phrases on word boundaries (so
text that B matches, A matches), A reads every target B reads, A needs a
single match, and neither is referenced by a compound rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence, Union

from milterguard.content.fold import fold
from milterguard.ruleset.matcher import REGEX_TIMEOUT
from milterguard.ruleset.regexrisk import backtracking_risks, slow_on
from milterguard.errors import ConfigError
from milterguard.ruleset.rules import Rule, RuleSet
from milterguard.verdict import STRENGTH, Action

ERROR = "error"
WARNING = "warning"

#: Ordinary text that a pattern should not match with zero characters.
_PLAIN = "Hello world, this is 42 plain words."


@dataclass(frozen=True)
class LintFinding:
    level: str          # "error" or "warning"
    file: str
    line: int
    rule_id: str
    message: str
    code: str = ""      # short, stable key: shadowed, backtracking, ...

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.level}: rule {self.rule_id}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finding(level: str, rule: Rule, code: str, message: str) -> LintFinding:
    return LintFinding(level, rule.file, rule.line, rule.id, message, code)


# ----------------------------------------------------------------- entry

def lint(ruleset: Union[RuleSet, Iterable[Rule]], dynamic: bool = True,
         shadowing: bool = True) -> list[LintFinding]:
    """Every finding for the rules, in rule order (errors and warnings).

    ``dynamic`` also runs each regex on adversarial texts (a few ms per
    sound pattern; up to a second for one that backtracks). ``shadowing``
    compares each rule with every earlier one (quadratic: only warnings).
    """
    rules = list(ruleset.rules.values()) if isinstance(ruleset, RuleSet) else list(ruleset)
    rules = [r for r in rules if r.mode != "disabled"]
    out: list[LintFinding] = []
    out += _duplicate_ids(rules)
    referenced = {ref for r in rules for ref in r.all_of + r.any_of + r.none_of}
    by_id = {r.id: r for r in rules}
    for i, rule in enumerate(rules):
        out += _phrase_findings(rule)
        out += _regex_findings(rule, dynamic)
        if rule.compound:
            out += _compound_findings(rule, by_id)
        elif shadowing and rule.id not in referenced:
            out += _shadow_findings(rule, rules[:i], referenced)
    return out


class LintError(ConfigError):
    """A lint error as a config error; it reads as lint prints it."""

    def __init__(self, finding: LintFinding) -> None:
        self.finding = finding   # before the base class renders the message
        super().__init__(finding.message, file=finding.file, line=finding.line,
                         field=finding.code, rule=finding.rule_id)

    def __str__(self) -> str:
        return str(self.finding)


def lint_errors(ruleset: RuleSet) -> list[ConfigError]:
    """The lint errors, as config errors: what `check` reports as an error,
    `run` and a reload refuse too (a rule set that `check` fails never goes
    live)."""
    return [LintError(f) for f in lint(ruleset, dynamic=True, shadowing=False)
            if f.level == ERROR]


def _duplicate_ids(rules: Sequence[Rule]) -> list[LintFinding]:
    first: dict[str, Rule] = {}
    out = []
    for rule in rules:
        if rule.id in first:
            out.append(_finding(ERROR, rule, "duplicate-id",
                                f"duplicate id, first defined at {first[rule.id].where}"))
        else:
            first[rule.id] = rule
    return out


# --------------------------------------------------------------- phrases

def _phrase_findings(rule: Rule) -> list[LintFinding]:
    out = []
    seen: dict[str, str] = {}
    for phrase in rule.phrases:
        key = fold(phrase)
        if not key:
            out.append(_finding(WARNING, rule, "empty-phrase",
                                f"phrase {phrase!r} folds to nothing and never matches"))
        elif key in seen:
            out.append(_finding(WARNING, rule, "duplicate-phrase",
                                f"phrase {phrase!r} folds to {key!r} like {seen[key]!r}: "
                                "it is the same phrase (and counts once toward min_matches)"))
        else:
            seen[key] = phrase
    distinct = len(seen) + len(set(rule.regexes))
    if not (rule.absent or rule.multiple or rule.compound) and rule.min_matches > distinct:
        out.append(_finding(ERROR, rule, "min-matches",
                            f"min_matches {rule.min_matches} but only {distinct} distinct "
                            "phrases and patterns: the rule can never hit"))
    return out


# ------------------------------------------------------------- shadowing

def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def phrase_contains(outer: str, inner: str) -> bool:
    """Does text matching folded phrase ``outer`` always contain ``inner``
    on word boundaries (the way the matcher looks for phrases)?"""
    start = outer.find(inner)
    while start >= 0:
        end = start + len(inner)
        if ((start == 0 or not _is_word(outer[start - 1]))
                and (end == len(outer) or not _is_word(outer[end]))):
            return True
        start = outer.find(inner, start + 1)
    return False


def _strength(rule: Rule) -> int:
    return STRENGTH[rule.verdict_action]


def _decides_over(a: Rule, b: Rule) -> bool:
    """Does a hit of ``a`` make ``b``'s hit irrelevant to the verdict?"""
    if b.action == "score":
        # Scores add up: only a final action of ``a`` makes them moot.
        return a.action not in ("score", "tag")
    if a.action == "score":
        return False
    return _strength(a) >= _strength(b)


def _covers(a: Rule, b: Rule) -> bool:
    """Whenever ``b`` hits, ``a`` hits too (sound, not complete)."""
    if a.compound or a.observe or a.min_matches != 1:
        return False
    if not set(b.targets) <= set(a.targets):
        return False
    if a.absent or a.multiple or b.absent or b.multiple:
        # Presence rules hit when any of their header targets is absent /
        # repeated; a superset of targets of the same kind always hits too.
        return (a.absent, a.multiple) == (b.absent, b.multiple) and not (a.phrases or a.regexes)
    a_keys = [k for k in (fold(p) for p in a.phrases) if k]
    for phrase in b.phrases:
        key = fold(phrase)
        if key and not any(phrase_contains(key, q) for q in a_keys):
            return False
    # A pattern only surely hits where an identical one (same case rule) does.
    if b.regexes and (a.case_sensitive != b.case_sensitive
                      or not set(b.regexes) <= set(a.regexes)):
        return False
    return bool(b.phrases or b.regexes)


def _shadow_findings(rule: Rule, earlier: Sequence[Rule], referenced: set[str]) -> list[LintFinding]:
    if rule.observe:
        return []
    for a in earlier:
        if a.id in referenced and a.observe:
            continue
        if _covers(a, rule) and _decides_over(a, rule):
            what = ("its score never matters" if rule.action == "score"
                    else f"its action {rule.action} never decides the verdict")
            return [_finding(WARNING, rule, "shadowed",
                             f"shadowed by rule {a.id} ({a.where}, action {a.action}): "
                             f"whenever this rule hits, {a.id} hits too, so {what}")]
    return []


# ------------------------------------------------------------- compounds

def _compound_findings(rule: Rule, by_id: dict[str, Rule]) -> list[LintFinding]:
    out = []
    both = set(rule.all_of) & set(rule.none_of)
    if both:
        out.append(_finding(ERROR, rule, "unreachable-compound",
                            f"{', '.join(sorted(both))} in both all and none: the rule can never hit"))
    both = set(rule.any_of) - set(rule.none_of)
    if rule.any_of and not both:
        out.append(_finding(ERROR, rule, "unreachable-compound",
                            "every rule of any is also in none: the rule can never hit"))
    for ref in rule.all_of:
        need = by_id.get(ref)
        if need is None or need.observe or need.action in ("score", "tag"):
            continue
        if Action(need.action) in (Action.REJECT, Action.TEMPFAIL, Action.DISCARD, Action.ACCEPT,
                                   Action.QUARANTINE):
            out.append(_finding(WARNING, rule, "moot-compound",
                                f"needs rule {ref}, whose own action {need.action} has already "
                                "decided the message whenever this rule could hit"))
    if rule.none_of and not rule.all_of and not rule.any_of:
        out.append(_finding(WARNING, rule, "broad-compound",
                            "only none: hits every message that the listed rules miss"))
    return out


def _regex_findings(rule: Rule, dynamic: bool) -> list[LintFinding]:
    out = []
    for pattern, compiled in zip(rule.regexes, rule.compiled):
        zero = compiled.search(_PLAIN, timeout=REGEX_TIMEOUT) if compiled.search("") else None
        if zero is not None and zero.start() == zero.end():
            out.append(_finding(ERROR, rule, "empty-match",
                                f"regex {pattern!r} matches the empty string anywhere: "
                                "the rule hits every message"))
        elif compiled.fullmatch(""):
            out.append(_finding(WARNING, rule, "empty-match",
                                f"regex {pattern!r} matches the empty string: "
                                "it hits every empty value"))
        for problem in backtracking_risks(pattern, not rule.case_sensitive):
            out.append(_finding(WARNING, rule, "backtracking", f"regex {pattern!r}: {problem}"))
        if dynamic:
            slow = slow_on(compiled)
            if slow:
                out.append(_finding(ERROR, rule, "regex-timeout",
                                    f"regex {pattern!r} ran over the {REGEX_TIMEOUT} s limit on "
                                    f"a text of {slow}: on such mail the rule misses "
                                    "and costs the milter that time"))
    return out
