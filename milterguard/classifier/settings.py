"""The ``classifier`` config section: when the classifier acts and how.

A score band maps a range of the spam probability to what a rule would
do: an id (logged, recorded, counted in stats like a rule id), a category,
and an action or a score that adds to the rules' scores. A band's positive
score can lift a message to the tag score, never to the reject score: an
unsure classifier tags, and only the certain band (an explicit
``action: reject``) rejects on the classifier's word. The defaults:
certain spam rejects, likely spam scores the tag threshold, certain ham
subtracts (so one weak rule does not tag a message the site's own mail
says is ham). Part of the Policy snapshot: a config edit re-reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from milterguard.classifier.model import Tuning
from milterguard.errors import ConfigError, ConfigErrors
from milterguard.ruleset.rules import parse_rule_reply
from milterguard.verdict import Action, Finding, Reply
from milterguard.yamlsrc import LDict

BAND_ACTIONS = ("reject", "tempfail", "quarantine", "tag", "score")
_BAND_KEYS = {"id", "min", "max", "action", "score", "reply", "category", "mode"}


@dataclass(frozen=True)
class Band:
    """Probabilities in [low, high) get this finding."""

    id: str
    low: float
    high: float
    action: str
    score: float
    reply: Reply | None
    category: str
    observe: bool

    def finding(self, detail: str) -> Finding:
        action = Action.CONTINUE if self.action == "score" else Action(self.action)
        return Finding(rule_id=self.id, category=self.category, action=action,
                       reply=self.reply, score=self.score if self.action == "score" else 0.0,
                       detail=detail, observe=self.observe, tag_only=True)


@dataclass(frozen=True)
class ClassifierSettings:
    enabled: bool = False
    min_spam: int = 200
    min_ham: int = 200
    tuning: Tuning = field(default_factory=Tuning)
    bands: tuple[Band, ...] = ()
    refresh_interval: float = 5.0
    autolearn: bool = False
    autolearn_spam: float = 0.9999
    autolearn_ham: float = 0.0001

    def band(self, probability: float) -> Band | None:
        for band in self.bands:
            if band.low <= probability < band.high:
                return band
        return None

    @classmethod
    def from_config(cls, config: Any) -> "ClassifierSettings":
        section = config.section("classifier")
        errors: list[ConfigError] = []

        # Every field is read even after a bad one, so the admin sees all
        # errors at once; a bad field's default only stands in until then.
        def number(where: LDict, key: str, default: float, low: float, high: float,
                   unit: str = "") -> float:
            try:
                return where.number(key, default, low, high, unit)
            except ConfigError as exc:
                errors.append(exc)
                return default

        def flag(where: LDict, key: str, default: bool) -> bool:
            try:
                return where.flag(key, default)
            except ConfigError as exc:
                errors.append(exc)
                return default

        enabled = flag(section, "enabled", True)
        min_spam = number(section, "min_spam", 200, 0, 1e9, "messages")
        min_ham = number(section, "min_ham", 200, 0, 1e9, "messages")
        strength = number(section, "unknown_strength", 0.45, 0.01, 100)
        min_strength = number(section, "min_strength", 0.25, 0.0, 0.5)
        max_tokens = number(section, "max_tokens", 150, 1, 10000, "tokens")
        refresh = number(section, "refresh_interval", 5.0, 0.1, 86400, "seconds")
        auto = section.get("autolearn")
        if auto is None:
            auto = LDict()
        if not isinstance(auto, LDict):
            errors.append(section.error("must be a mapping", "autolearn"))
            auto = LDict()
        auto_on = flag(auto, "enabled", False)
        auto_spam = number(auto, "spam_above", 0.9999, 0.5, 1.0)
        auto_ham = number(auto, "ham_below", 0.0001, 0.0, 0.5)
        bands: list[Band] = []
        raw_bands = section.get("bands", [])
        if not isinstance(raw_bands, list):
            errors.append(section.error("must be a list of bands", "bands"))
            raw_bands = []
        seen: set[str] = set()
        for item in raw_bands:
            try:
                band = _parse_band(section, item)
            except ConfigError as exc:
                errors.append(exc)
                continue
            if band.id in seen:
                errors.append(item.error("a second band with this id", "id", band.id))
            seen.add(band.id)
            bands.append(band)
        if errors:
            raise ConfigErrors(errors)
        return cls(enabled=enabled, min_spam=int(min_spam), min_ham=int(min_ham),
                   tuning=Tuning(unknown_strength=strength, min_strength=min_strength,
                                 max_tokens=int(max_tokens)),
                   bands=tuple(bands), refresh_interval=float(refresh),
                   autolearn=auto_on, autolearn_spam=auto_spam, autolearn_ham=auto_ham)


def _parse_band(section: LDict, item: Any) -> Band:
    if not isinstance(item, LDict):
        raise section.error("each band must be a mapping (id, min, max, action or score)",
                            "bands")
    bid = item.get("id")
    if not isinstance(bid, str) or not bid or any(c.isspace() or c == "," for c in bid):
        raise item.error("must be an id (letters, digits, . _ : -)", "id")
    for key in item:
        if key not in _BAND_KEYS:
            raise item.unknown_key(key, _BAND_KEYS, bid)
    low = item.number("min", 0.0, 0.0, 1.0, rule=bid)
    high = item.number("max", 1.0, 0.0, 1.0, rule=bid)
    if high >= 1.0:
        high = 1.0 + 1e-9    # max: 1 includes a probability of exactly 1
    if low >= high:
        raise item.error("min must be below max", "min", bid)
    action = item.get("action", "score" if "score" in item else "tag")
    if action not in BAND_ACTIONS:
        raise item.error(f"must be one of {', '.join(BAND_ACTIONS)}", "action", bid)
    score = item.number("score", 0.0, -1000, 1000, rule=bid)
    reply = None
    if action in ("reject", "tempfail"):
        default = "550 5.7.1 Message rejected as spam" if action == "reject" else \
            "451 4.7.1 Please try again later"
        try:
            reply = parse_rule_reply(str(item.get("reply", default)), action)
        except ValueError as exc:
            raise item.error(str(exc), "reply", bid) from None
    category = item.get("category", "bayes")
    if not isinstance(category, str) or not category:
        raise item.error("must be a non-empty string", "category", bid)
    mode = item.get("mode", "enforce")
    if mode not in ("enforce", "observe"):
        raise item.error("must be enforce or observe", "mode", bid)
    return Band(bid, low, high, action, score, reply, category, mode == "observe")
