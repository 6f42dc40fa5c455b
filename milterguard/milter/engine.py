"""Everything the daemon builds once: policy snapshot, gates, greylist, store.

The rule set and the message settings form a ``Policy`` snapshot that is
replaced as a whole when a rule file or the config changes; a message keeps
the snapshot it started with, so a reload never changes a message mid-way.
A broken edit is logged with file and line and the old snapshot stays.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from milterguard.classifier.settings import ClassifierSettings
from milterguard.clientaddr import IPNetwork
from milterguard.config import Config, load_config
from milterguard.milter.services import (GateChecks, GreylistCheck, HitSink, MessageClassifier,
                                         NoGates, StageMetrics)
from milterguard.errors import ConfigError, ConfigErrors, MilterguardError
from milterguard.ruleset.rules import RuleSet, load_ruleset, parse_rule_reply
from milterguard.verdict import Finding, Hit, Reply
from milterguard.content.views import MessageViews
from milterguard.milter.coverage import DEFAULT_SCAN_ACTIONS, ScanActions
from milterguard.ruleset.budget import ScanBudget
from milterguard.ruleset.lint import lint_errors

log = logging.getLogger("milterguard.engine")

#: Config keys the running daemon cannot take over: a reload that changes
#: one is refused (logged), never half-applied.
RESTART_ONLY = ("socket", "state_dir", "database", "store", "metrics", "logging")
#: ... and, once the classifier runs, the interval it refreshes at.
RESTART_ONLY_WHILE_CLASSIFYING = ("classifier.refresh_interval",)
#: Sections the gates read: a reload that changes one builds new gates.
GATE_KEYS = ("dns", "dnsbl", "uribl", "helo", "envelope", "server")
GREYLIST_KEYS = ("greylist",)
#: Seconds a replaced part stays open for the checks still using it.
RETIRE_GRACE = 30.0


class ReloadRefused(MilterguardError):
    """A reload changed what only a restart can apply."""


@dataclass
class Policy:
    """One consistent view of config and rules, swapped atomically on reload."""

    config: Config
    ruleset: RuleSet
    allow_networks: list[IPNetwork]
    trust_authenticated: bool
    delay_rejects: bool
    tag_header: bool
    reply_rule_ids: bool
    max_scan_bytes: int
    max_headers: int
    tag_score: float
    reject_score: float
    reject_reply: Reply
    subject_prefix: str
    on_internal_error: str
    #: The statistical classifier's bands and limits (its counts live on the Engine).
    classifier: ClassifierSettings = ClassifierSettings()
    #: Connect and HELO only ever answer "continue": their rejects wait for
    #: the first RCPT and no client or HELO rule accepts or discards. The
    #: adapter may then tell the MTA not to wait for those two answers.
    quiet_connect: bool = False
    #: MIME parts and nesting depth scanned per message (content.views).
    max_parts: int = 200
    max_depth: int = 10
    #: Seconds of regex matching per message (ruleset.budget).
    regex_time: float = 1.0
    #: What content that could not be scanned in full does (milter.coverage).
    scan_actions: ScanActions = DEFAULT_SCAN_ACTIONS

    def scan_budget(self) -> ScanBudget:
        """A fresh regex budget for one message."""
        return ScanBudget(self.regex_time)

    @classmethod
    def from_config(cls, config: Config) -> "Policy":
        errors: list[ConfigError] = []
        rules = config.section("rules")
        site = rules.get("site") or []
        if isinstance(site, str):
            site = [site]
        ruleset = None
        try:
            ruleset = load_ruleset(bool(rules.get("shipped", True)), site)
            errors.extend(lint_errors(ruleset))
        except ConfigErrors as exc:
            errors.extend(exc.errors)
        allow = config.section("allowlist")
        networks: list[IPNetwork] = []
        try:
            networks = allow.networks("networks")
        except ConfigError as exc:
            errors.append(exc)
        msg = config.section("message")
        numbers: dict[str, float] = {}
        for key, default in (("max_scan_bytes", 2 << 20), ("max_headers", 1000),
                             ("tag_score", 5.0), ("reject_score", 10.0)):
            value = msg.get(key, default)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                errors.append(msg.error("must be a non-negative number", key))
                value = default
            numbers[key] = value
        try:
            reject_reply = parse_rule_reply(str(msg.get("reject_reply", "550 5.7.1 Message rejected as spam")), "reject")
        except ValueError as exc:
            errors.append(msg.error(str(exc), "reject_reply"))
            reject_reply = Reply("550", "5.7.1", "Message rejected as spam")
        limits: dict[str, float] = {"max_parts": 200, "max_depth": 10, "regex_time": 1.0}
        for key, read in (("max_parts", lambda: msg.integer("max_parts", 200, 1, 100000)),
                          ("max_depth", lambda: msg.integer("max_depth", 10, 1, 100)),
                          ("regex_time", lambda: msg.number("regex_time", 1.0, 0.01, 60,
                                                            "seconds"))):
            try:
                limits[key] = read()
            except ConfigError as exc:
                errors.append(exc)
        scan_actions = ScanActions.from_section(msg, errors)
        on_error = str(msg.get("on_internal_error", "continue"))
        if on_error not in ("continue", "tempfail"):
            errors.append(msg.error("must be continue or tempfail", "on_internal_error"))
        classifier = ClassifierSettings()
        try:
            classifier = ClassifierSettings.from_config(config)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
        except ConfigError as exc:
            errors.append(exc)
        if errors:
            raise ConfigErrors(errors)
        assert ruleset is not None
        delay = bool(config.get("delay_rejects", True))
        return cls(config=config, ruleset=ruleset, allow_networks=networks,
                   trust_authenticated=bool(allow.get("authenticated", True)),
                   delay_rejects=delay,
                   tag_header=bool(msg.get("tag_header", True)),
                   reply_rule_ids=bool(msg.get("reply_rule_ids", True)),
                   max_scan_bytes=int(numbers["max_scan_bytes"]),
                   max_headers=int(numbers["max_headers"]),
                   tag_score=float(numbers["tag_score"]),
                   reject_score=float(numbers["reject_score"]),
                   reject_reply=reject_reply,
                   subject_prefix=str(msg.get("subject_prefix", "")),
                   on_internal_error=on_error, classifier=classifier,
                   quiet_connect=_connect_always_continues(delay, ruleset),
                   max_parts=int(limits["max_parts"]), max_depth=int(limits["max_depth"]),
                   regex_time=limits["regex_time"], scan_actions=scan_actions)

    @property
    def sources(self) -> list[str]:
        return self.config.sources + self.ruleset.sources


def _connect_always_continues(delay_rejects: bool, ruleset: RuleSet) -> bool:
    if not delay_rejects:
        return False
    return not any(rule.action in ("accept", "discard")
                   and any(t in ("client", "helo") for t in rule.targets)
                   for rule in ruleset.rules.values())


def rule_finding(rule: Any, excerpt: str = "") -> Finding:
    """A rule hit as a Finding the session can weigh."""
    return Finding(rule_id=rule.id, category=rule.category, action=rule.verdict_action,
                   reply=rule.reply, score=rule.score if rule.action == "score" else 0.0,
                   detail=excerpt, observe=rule.observe, helper=rule.helper)


class Engine:
    """Holds the current Policy and the long-lived parts the sessions share."""

    def __init__(self, policy: Policy, gates: GateChecks | None = None,
                 greylist: GreylistCheck | None = None,
                 store: HitSink | None = None, clock: Callable[[], float] = time.time,
                 classifier: MessageClassifier | None = None,
                 config_loader: Callable[[], Config] | None = None) -> None:
        self.policy = policy
        self.gates: GateChecks = gates if gates is not None else NoGates()
        self.greylist = greylist
        self.store = store
        self.clock = clock
        #: Learned counts (classifier/runtime.py); None = no classifier.
        self.classifier = classifier
        self._config_loader = config_loader
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._mtimes = self._snapshot_mtimes(policy)
        self.reloads = 0
        self.reload_failures = 0
        #: Gates and greylist were built from the config (not given by a
        #: test): a reload rebuilds them when their settings change.
        self._builds_parts = False
        #: A metrics.Metrics once the Prometheus listener is on; None costs nothing.
        self.metrics: StageMetrics | None = None

    @classmethod
    def from_config(cls, config: Config, with_store: bool = True,
                    policy: Policy | None = None) -> "Engine":
        """Build everything; ``policy`` when the caller validated ``config``
        already (validate_config, the one validation `check` and reloads use)."""
        if policy is None:
            from milterguard.validate import validate_config
            policy = validate_config(config)
        # Imported here: the policy code above must not need DNS or a database.
        from milterguard.gates.gateset import Gates
        from milterguard.greylist.triplets import Greylist
        from milterguard.store.hits import HitStore
        gates = Gates.from_config(config)
        greylist = Greylist.from_config(config)
        store = HitStore.from_config(config) if with_store else None
        engine = cls(policy, gates=gates, greylist=greylist, store=store,
                     config_loader=lambda: load_config(config.path, config.state_dir))
        engine._builds_parts = True
        engine._start_classifier()
        return engine

    def _start_classifier(self) -> None:
        """Load the learned counts in the background once the classifier is
        on (at start, or when a config edit switches it on)."""
        if self.classifier is not None or not self.policy.classifier.enabled:
            return
        from milterguard.classifier.runtime import Classifier
        learned = Classifier(self.policy.config.database, clock=time.time)
        learned.start(self.policy.classifier.refresh_interval)
        self.classifier = learned

    # -- what sessions call ------------------------------------------------

    def greylist_check(self, addr: str, sender: str, rcpt: str) -> Finding | None:
        if self.greylist is None:
            return None
        return self.greylist.check(addr, sender, rcpt)

    def rule_findings(self, policy: Policy, target: str, texts: list[str],
                      budget: ScanBudget | None = None) -> list[Finding]:
        rules = policy.ruleset.rules
        return [rule_finding(rules[m.rule_id], m.excerpt)
                for m in policy.ruleset.match(target, texts, budget)]

    def content_findings(self, policy: Policy, views: MessageViews, part: str,
                         budget: ScanBudget | None = None) -> list[Finding]:
        """Header rules ("headers", at end of headers) or body rules ("body",
        at end of message); their regexes share the message's ``budget``."""
        rs = policy.ruleset
        out: list[Finding] = []
        # A target on a header the message lacks has no texts (most do not,
        # and views decode nothing for them).
        for target in rs.header_targets if part == "headers" else rs.body_targets:
            texts = views.texts(target)
            if texts:
                out += self.rule_findings(policy, target, texts, budget)
        if part == "headers":
            for rule in rs.presence:
                found = rule.presence_hit(views.header_count)
                if found:
                    out.append(rule_finding(rule, f"{found[0]} count={found[1]}"))
        return out

    def link_findings(self, views: MessageViews) -> list[Finding]:
        """URI blocklist answers about the message's links (gates/uribl.py)."""
        if self.gates is None:
            return []
        return self.gates.on_message(views)

    def classifier_findings(self, policy: Policy, views: MessageViews) -> list[Finding]:
        """The classifier's band for this message (none until it has learned enough)."""
        if self.classifier is None or not policy.classifier.enabled:
            return []
        return self.classifier.findings(policy.classifier, views)

    def compound_findings(self, policy: Policy, findings: list[Finding]) -> list[Finding]:
        hit = {f.rule_id for f in findings}
        out = []
        for rule in policy.ruleset.compounds:
            if rule.compound_hit(hit):
                out.append(rule_finding(rule, "all=" + ",".join(rule.all_of or rule.any_of)))
        return out

    def record(self, hits: list[Hit]) -> None:
        if self.store is not None and hits:
            self.store.record(hits)

    # -- reload ------------------------------------------------------------

    @staticmethod
    def _snapshot_mtimes(policy: Policy) -> dict[str, float]:
        """mtimes of every source file and of the rule directories (new files)."""
        out: dict[str, float] = {}
        paths = list(policy.sources)
        rules = policy.config.section("rules")
        site = rules.get("site") or []
        paths += [site] if isinstance(site, str) else list(site)
        from milterguard.ruleset.rules import shipped_rules_dir
        if rules.get("shipped", True):
            paths.append(shipped_rules_dir())
        for path in paths:
            try:
                out[path] = os.stat(path).st_mtime_ns
            except OSError:
                out[path] = -1
        return out

    def reload_if_changed(self) -> bool:
        """Apply changed rule files and config, or keep everything as it was.

        The new config goes through the same validation as `check` and
        `run`. Rules and message settings are swapped as one Policy; changed
        gate (HELO, DNS, DNSBL, URIBL, envelope) and greylist settings get
        new gates or a new greylist, swapped in the same step. A change only
        a restart can apply (socket, database, store, metrics, logging, the
        classifier's refresh interval) refuses the whole reload, with the
        reason logged; switching the classifier on starts it.
        """
        mtimes = self._snapshot_mtimes(self.policy)
        if mtimes == self._mtimes:
            return False
        self._mtimes = mtimes
        old = self.policy.config
        try:
            config = self._config_loader() if self._config_loader else old
            from milterguard.validate import validate_config
            policy = validate_config(config)
            fixed = RESTART_ONLY + (RESTART_ONLY_WHILE_CLASSIFYING if self.classifier else ())
            changed = [k for k in fixed if old.get(k) != config.get(k)]
            if changed:
                raise ReloadRefused(f"{', '.join(changed)} changed: restart milterguard to apply")
            gates, greylist = self._rebuilt_parts(old, config)
        except ConfigErrors as exc:
            self.reload_failures += 1
            for err in exc.errors:
                log.error("event=reload-failed error=%r", str(err))
            log.error("event=reload-failed errors=%d action=kept-previous-config", len(exc.errors))
            return False
        except (MilterguardError, ConfigError) as exc:
            self.reload_failures += 1
            log.error("event=reload-failed error=%r action=kept-previous-config", str(exc))
            return False
        switched_on = policy.classifier.enabled and not self.policy.classifier.enabled
        applied = ["rules", "message"]
        if gates is not None:
            self._retire(self.gates)
            self.gates = gates
            applied.append("gates")
        if greylist is not None:
            greylist.on_outcome = getattr(self.greylist, "on_outcome", None)
            self._retire(self.greylist)
            self.greylist = greylist
            applied.append("greylist")
        self.policy = policy
        if switched_on:
            self._start_classifier()
        self._mtimes = self._snapshot_mtimes(policy)
        self.reloads += 1
        log.info("event=reload rules=%d files=%d applied=%s", len(policy.ruleset),
                 len(policy.ruleset.sources), ",".join(applied))
        return True

    def _rebuilt_parts(self, old: Config, new: Config) -> tuple[Any, Any]:
        """New gates and greylist where their settings changed (None: keep)."""
        if not self._builds_parts:
            return None, None
        gates = greylist = None
        if any(old.get(k) != new.get(k) for k in GATE_KEYS):
            from milterguard.gates.gateset import Gates
            gates = Gates.from_config(new)
        if any(old.get(k) != new.get(k) for k in GREYLIST_KEYS):
            from milterguard.greylist.triplets import Greylist
            greylist = Greylist.from_config(new)
        return gates, greylist

    def _retire(self, part: Any) -> None:
        """Close a replaced part once the checks still using it are done."""
        closer = getattr(part, "close", None)
        if closer is None:
            return
        timer = threading.Timer(RETIRE_GRACE, closer)
        timer.daemon = True
        timer.start()

    def start_watcher(self, interval: float) -> None:
        if interval <= 0 or self._watcher is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.reload_if_changed()
                except Exception:  # never let the watcher die silently
                    log.exception("event=reload-crashed")

        self._watcher = threading.Thread(target=loop, name="milterguard-reload", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        parts: tuple[GateChecks | GreylistCheck | HitSink | MessageClassifier | None, ...] = (
            self.gates, self.greylist, self.store, self.classifier)
        for part in parts:
            if part is None:
                continue
            try:
                part.close()
            except Exception:
                log.exception("event=close-failed part=%s", type(part).__name__)
