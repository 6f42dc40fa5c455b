"""Rule files: loading, validation, site overrides, and compilation.

A rule file is YAML with a top-level ``rules:`` list. Shipped rules load
first, then the site's files; a site rule with a shipped rule's id replaces
it (``enabled: false`` switches it off). Every problem found is reported
with file, line, rule id and field, all at once, so `milterguard check` can
list them and a broken edit never replaces a working rule set.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterable

import regex

from milterguard.content.views import MESSAGE_TARGETS, header_target
from milterguard.errors import ConfigError, ConfigErrors
from milterguard.ruleset.budget import ScanBudget
from milterguard.ruleset.matcher import Match, TargetMatcher
from milterguard.verdict import Action, Reply
from milterguard.yamlsrc import LDict, LList, load_yaml_file

# What the session hands the rules before DATA; the message targets are
# what MessageViews answers (content.views.MESSAGE_TARGETS, header:NAME[:raw]).
ENVELOPE_TARGETS = ("client", "helo", "mail", "rcpt")
ACTIONS = ("reject", "tempfail", "discard", "quarantine", "accept", "tag", "score")
MODES = ("enforce", "observe", "helper")
RULE_KEYS = {"id", "target", "phrases", "regex", "action", "reply", "category",
             "score", "mode", "description", "enabled", "absent", "multiple",
             "all", "any", "none", "case_sensitive", "min_matches"}
_ID_RE = regex.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$")
_HEADER_NAME_RE = regex.compile(r"^[!-9;-~]+$")
_REPLY_RE = regex.compile(r"^([45][0-9][0-9])(?: ([45]\.[0-9]{1,3}\.[0-9]{1,3}))?(?: (.*))?$")

DEFAULT_REPLY = {
    "reject": Reply("550", "5.7.1", "Message rejected by policy"),
    "tempfail": Reply("451", "4.7.1", "Temporarily rejected by policy, try again later"),
}


#: Where a Debian (or other distribution) package puts the shipped rules
#: when it keeps data out of the Python tree.
SYSTEM_RULES_DIR = os.path.join(sys.prefix, "share", "milterguard", "rules")


def shipped_rules_dir() -> str:
    """The shipped rule set: the package's ``data/rules``, else the system copy.

    In a checkout ``milterguard/data/rules`` is a symlink to the top-level
    ``rules/`` folder (the one place rules are edited), so the checkout, an
    editable install and a wheel (where the build copies the files in) all
    read the same files. Returns the first candidate that exists, or the
    package path when none does (load_ruleset then says nothing is there).
    """
    packaged = str(resources.files("milterguard.data").joinpath("rules"))
    for path in (packaged, SYSTEM_RULES_DIR):
        if os.path.isdir(path):
            return os.path.realpath(path)
    return packaged


def parse_rule_reply(text: str, action: str) -> Reply:
    """A rule's ``reply:`` text, "550 5.7.1 text", as a Reply for its action:
    the code class must fit the action (5xx reject, 4xx tempfail); a missing
    enhanced code or text takes the default."""
    m = _REPLY_RE.match(text.strip())
    if not m:
        raise ValueError("must look like '550 5.7.1 text'")
    code, xcode, msg = m.group(1), m.group(2), (m.group(3) or "").strip()
    want = "5" if action == "reject" else "4" if action == "tempfail" else None
    if want and code[0] != want:
        raise ValueError(f"a {action} reply needs a {want}xx code, not {code}")
    if xcode and xcode[0] != code[0]:
        raise ValueError(f"enhanced code {xcode} does not match {code}")
    xcode = xcode or f"{code[0]}.7.1"
    return Reply(code, xcode, msg or DEFAULT_REPLY.get(action, DEFAULT_REPLY["reject"]).text)


def valid_target(target: str) -> bool:
    if target in ENVELOPE_TARGETS or target in MESSAGE_TARGETS:
        return True
    header = header_target(target)
    return header is not None and bool(_HEADER_NAME_RE.match(header[0]))


@dataclass
class Rule:
    id: str
    targets: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    action: str = "reject"
    reply: Reply | None = None
    category: str = "uncategorised"
    score: float = 0.0
    mode: str = "enforce"
    description: str = ""
    absent: bool = False        # the header named by target is missing
    multiple: bool = False      # the header named by target occurs more than once
    all_of: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    none_of: tuple[str, ...] = ()
    case_sensitive: bool = False
    min_matches: int = 1        # distinct phrases/patterns needed for a hit
    file: str = ""
    line: int = 0
    compiled: list[Any] = field(default_factory=list, repr=False)

    @property
    def compound(self) -> bool:
        return bool(self.all_of or self.any_of or self.none_of)

    @property
    def observe(self) -> bool:
        """Never acts: observe rules (recorded) and helpers (not even recorded)."""
        return self.mode in ("observe", "helper")

    @property
    def helper(self) -> bool:
        """A building block for compound rules: seen by them, nowhere else."""
        return self.mode == "helper"

    def compound_hit(self, hit_ids: "set[str] | frozenset[str]") -> bool:
        """Whether this compound rule fires, given the ids of the rules that hit."""
        if self.all_of and not all(r in hit_ids for r in self.all_of):
            return False
        if self.any_of and not any(r in hit_ids for r in self.any_of):
            return False
        return not (self.none_of and any(r in hit_ids for r in self.none_of))

    def presence_hit(self, header_count: Any) -> tuple[str, int] | None:
        """(header, count) if this absent/multiple rule fires, else None.

        ``header_count`` is a callable: header name -> occurrences.
        """
        for target in self.targets:
            name = target.split(":")[1]
            count = header_count(name)
            if (self.absent and count == 0) or (self.multiple and count > 1):
                return name, count
        return None

    @property
    def verdict_action(self) -> Action:
        """The Action a hit of this rule asks for (CONTINUE for scoring)."""
        if self.action == "score":
            return Action.CONTINUE
        return Action(self.action)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _str_list(raw: Any, rule: LDict, key: str, rid: str, errors: list[ConfigError]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, (str, int, float)) for x in raw):
        errors.append(rule.error("must be a string or a list of strings", key, rid))
        return ()
    return tuple(str(x) for x in raw)


def parse_rule(raw: Any, file: str, line: int, errors: list[ConfigError]) -> Rule | None:
    """Validate one rule mapping; append every problem to ``errors``."""
    if not isinstance(raw, LDict):
        errors.append(ConfigError("a rule must be a mapping", file=file, line=line))
        return None
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        errors.append(raw.error("needs an id of letters, digits and . _ : - (at most 80)", "id"))
        return None
    n_errors = len(errors)
    for key in raw:
        if key not in RULE_KEYS:
            errors.append(raw.error(f"unknown field (known: {', '.join(sorted(RULE_KEYS))})", key, rid))
    rule = Rule(id=rid, file=file, line=raw.line)
    rule.targets = _str_list(raw.get("target"), raw, "target", rid, errors)
    for t in rule.targets:
        if not valid_target(t):
            errors.append(raw.error(f"unknown target {t!r}", "target", rid))
    rule.phrases = _str_list(raw.get("phrases"), raw, "phrases", rid, errors)
    rule.regexes = _str_list(raw.get("regex"), raw, "regex", rid, errors)
    rule.all_of = _str_list(raw.get("all"), raw, "all", rid, errors)
    rule.any_of = _str_list(raw.get("any"), raw, "any", rid, errors)
    rule.none_of = _str_list(raw.get("none"), raw, "none", rid, errors)
    for key, attr in (("absent", "absent"), ("multiple", "multiple"),
                      ("case_sensitive", "case_sensitive")):
        value = raw.get(key, False)
        if not isinstance(value, bool):
            errors.append(raw.error("must be true or false", key, rid))
        else:
            setattr(rule, attr, value)
    rule.action = str(raw.get("action", "score" if "score" in raw else "reject"))
    if rule.action not in ACTIONS:
        errors.append(raw.error(f"must be one of {', '.join(ACTIONS)}", "action", rid))
    min_matches = raw.get("min_matches", 1)
    if not isinstance(min_matches, int) or isinstance(min_matches, bool) or min_matches < 1:
        errors.append(raw.error("must be a whole number of at least 1", "min_matches", rid))
    else:
        rule.min_matches = min_matches
    rule.mode = str(raw.get("mode", "enforce"))
    if rule.mode not in MODES:
        errors.append(raw.error("must be enforce, observe or helper", "mode", rid))
    rule.category = str(raw.get("category", "uncategorised"))
    rule.description = str(raw.get("description", ""))
    score = raw.get("score", 0)
    if not isinstance(score, (int, float)) or isinstance(score, bool):
        errors.append(raw.error("must be a number", "score", rid))
    else:
        rule.score = float(score)
    if rule.action == "score" and not rule.score:
        errors.append(raw.error("action score needs a non-zero score", "score", rid))
    if "reply" in raw:
        if rule.action not in ("reject", "tempfail"):
            errors.append(raw.error("a reply only goes with action reject or tempfail", "reply", rid))
        else:
            try:
                rule.reply = parse_rule_reply(str(raw["reply"]), rule.action)
            except ValueError as exc:
                errors.append(raw.error(str(exc), "reply", rid))
    elif rule.action in DEFAULT_REPLY:
        rule.reply = DEFAULT_REPLY[rule.action]

    matchers = bool(rule.phrases or rule.regexes)
    if rule.compound:
        if rule.targets or matchers or rule.absent or rule.multiple:
            errors.append(raw.error("a compound rule (all/any/none) takes no target, phrases or regex", None, rid))
    else:
        if not rule.targets:
            errors.append(raw.error("needs a target (what the rule reads)", "target", rid))
        if rule.absent or rule.multiple:
            if matchers:
                errors.append(raw.error("absent/multiple take no phrases or regex", None, rid))
            if not all(t.startswith("header:") for t in rule.targets):
                errors.append(raw.error("absent/multiple need a header:NAME target", "target", rid))
        elif not matchers:
            errors.append(raw.error("needs phrases or regex (or absent/multiple, or all/any/none)", None, rid))
    flags = regex.V0 | (0 if rule.case_sensitive else regex.IGNORECASE)
    for i, pattern in enumerate(rule.regexes):
        try:
            rule.compiled.append(regex.compile(pattern, flags))
        except (regex.error, ValueError) as exc:
            line_no = raw["regex"].line_of(i) if isinstance(raw.get("regex"), LList) else raw.line_of("regex")
            errors.append(ConfigError(f"invalid regular expression {pattern!r}: {exc}",
                                      file=file, line=line_no, field="regex", rule=rid))
    return rule if len(errors) == n_errors else None


def load_rule_file(path: str, errors: list[ConfigError]) -> list[Rule]:
    """Rules of one file; problems go to ``errors`` (the file's valid rules still load)."""
    try:
        data = load_yaml_file(path)
    except ConfigError as exc:
        errors.append(exc)
        return []
    if data is None:
        return []
    if not isinstance(data, LDict) or not isinstance(data.get("rules"), LList):
        errors.append(ConfigError("needs a top-level 'rules:' list", file=path, line=1))
        return []
    out = []
    items = data["rules"]
    for i, raw in enumerate(items):
        # A rule that only switches a shipped one off needs no other field.
        if isinstance(raw, LDict) and raw.get("enabled") is False and isinstance(raw.get("id"), str):
            out.append(Rule(id=raw["id"], file=path, line=raw.line, mode="disabled"))
            continue
        rule = parse_rule(raw, path, items.line_of(i), errors)
        if rule is not None:
            out.append(rule)
    return out


def rule_files(paths: Iterable[str]) -> list[str]:
    """*.yaml / *.yml files of the given files and directories, in order."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = glob.glob(os.path.join(path, "*.yaml")) + glob.glob(os.path.join(path, "*.yml"))
            files.extend(sorted(found))
        elif os.path.exists(path):
            files.append(path)
    return files


class RuleSet:
    """All active rules, compiled per target. Immutable once built."""

    def __init__(self, rules: list[Rule], sources: list[str],
                 origins: list[tuple[str, str, int]] | None = None) -> None:
        self.rules = {r.id: r for r in rules}
        self.sources = sources
        #: (layer, file or directory as configured, rule files read there):
        #: what `check` shows so an admin sees which copy was loaded.
        self.origins = origins or []
        by_target: dict[str, tuple[list[tuple[str, str]], list[tuple[str, Any]]]] = {}
        self.presence: list[Rule] = []
        self.compounds: list[Rule] = []
        for rule in rules:
            if rule.compound:
                self.compounds.append(rule)
                continue
            if rule.absent or rule.multiple:
                self.presence.append(rule)
                continue
            for target in rule.targets:
                phrases, patterns = by_target.setdefault(target, ([], []))
                phrases.extend((rule.id, p) for p in rule.phrases)
                patterns.extend((rule.id, c) for c in rule.compiled)
        self.matchers = {t: TargetMatcher(p, r) for t, (p, r) in by_target.items()}
        self.header_targets = [t for t in self.matchers if t.startswith("header")]
        self.body_targets = [t for t in self.matchers
                             if t not in ENVELOPE_TARGETS and not t.startswith("header")]

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, target: str, texts: Iterable[str],
              budget: ScanBudget | None = None) -> list[Match]:
        """One Match per rule that hit: with at least its min_matches
        distinct phrases or patterns; the excerpt is the first one's.
        Regexes run within the message's ``budget`` when one is given."""
        matcher = self.matchers.get(target)
        if not matcher:
            return []
        matches = matcher.search(texts, budget)
        if not matches:
            return []
        by_rule: dict[str, list[Match]] = {}
        for m in matches:
            by_rule.setdefault(m.rule_id, []).append(m)
        out = []
        for rule_id, matches in by_rule.items():
            if len(matches) >= self.rules[rule_id].min_matches:
                out.append(matches[0] if len(matches) == 1 else
                           Match(rule_id, matches[0].excerpt,
                                 "|".join(m.phrase for m in matches)))
        return out


def load_ruleset(shipped: bool, site_paths: Iterable[str]) -> RuleSet:
    """Load and compile; raise ConfigErrors listing every problem found.

    Ids must be unique within the shipped set and within the site set; a
    site rule replaces a shipped rule of the same id.
    """
    errors: list[ConfigError] = []
    layers = []
    origins: list[tuple[str, str, int]] = []
    if shipped:
        shipped_dir = shipped_rules_dir()
        files = rule_files([shipped_dir])
        if not files:
            # An install without its rules would accept all spam in silence.
            raise ConfigErrors([ConfigError(
                f"no shipped rule files in {shipped_dir}: the installation is "
                "incomplete (set rules.shipped: false to run on site rules only)",
                field="rules.shipped")])
        layers.append(files)
        origins.append(("shipped", shipped_dir, len(files)))
    site_files: list[str] = []
    for path in site_paths:
        found = rule_files([path])
        origins.append(("site", path, len(found)))
        site_files.extend(found)
    layers.append(site_files)
    merged: dict[str, Rule] = {}
    sources: list[str] = []
    for files in layers:
        seen: dict[str, Rule] = {}
        for path in files:
            sources.append(path)
            for rule in load_rule_file(path, errors):
                if rule.id in seen:
                    errors.append(ConfigError(f"duplicate id, first defined at {seen[rule.id].where}",
                                              file=rule.file, line=rule.line, field="id", rule=rule.id))
                    continue
                seen[rule.id] = rule
                merged[rule.id] = rule
    active = [r for r in merged.values() if r.mode != "disabled"]
    ids = {r.id for r in active}
    for rule in active:
        for ref in rule.all_of + rule.any_of + rule.none_of:
            if ref not in ids:
                errors.append(ConfigError(f"refers to unknown rule {ref!r}", file=rule.file,
                                          line=rule.line, field="all/any/none", rule=rule.id))
            elif ref == rule.id or merged[ref].compound:
                errors.append(ConfigError(f"compound rules may not refer to themselves or to other compound rules ({ref!r})",
                                          file=rule.file, line=rule.line, field="all/any/none", rule=rule.id))
    if errors:
        raise ConfigErrors(errors)
    return RuleSet(active, sources, origins)
