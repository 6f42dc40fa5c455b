"""`milterguard explain FILE.eml`: which rule hit where, and why.

Before a rule goes live an admin wants to see what it reads and what it
matched. ``explain`` loads the config and rules exactly as ``run`` does,
decodes the message into the views rules name, and prints each targeted
view's text (shortened), the rules that hit in it with the matched excerpt,
presence and compound rules, the classifier's probability with its
strongest tokens (when the database has learned counts), the score against
the thresholds, and the verdict the daemon's own session logic reaches. DNSBL, HELO and envelope
gates and greylisting are not run: they need DNS and state, and `replay`
against a running daemon shows them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from milterguard.cli.main import add_config_arguments
from milterguard.clientaddr import client_in_networks
from milterguard.config import load_config
from milterguard.errors import ConfigError, ConfigErrors, MilterguardError
from milterguard.replay.mailboxes import mail_sources
from milterguard.replay.message import Envelope, parse_message
from milterguard.ruleset.rules import ENVELOPE_TARGETS, Rule, RuleSet
from milterguard.content.views import MESSAGE_TARGETS, MessageViews

HELP = """\
Show how the rules see one message: every view that a rule reads (decoded
headers, body text with HTML rendered, URLs, ...), which rules hit where
with the matched excerpt, presence and compound rules, the score and the
resulting verdict. X-Replay-Client, X-Replay-Helo, X-Replay-Mail-From and
X-Replay-Rcpt-To pseudo-headers set the envelope, as for `replay`. Gates
(DNSBL, HELO, sender domain) and greylisting are not run.
"""

#: Characters of each view text shown by default.
SHOW_CHARS = 300
#: Texts of one view shown (a message may have hundreds of URLs).
SHOW_TEXTS = 5
#: Strongest classifier tokens shown.
SHOW_CLUES = 15


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("explain", help="show which rules hit a message, where and why",
                              description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("message", metavar="FILE.eml",
                   help="message file (headers and body); an mbox file or a Maildir "
                        "explains each of its messages")
    add_config_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.add_argument("--chars", type=int, default=SHOW_CHARS, metavar="N",
                   help=f"characters of each view text shown (default {SHOW_CHARS}; 0 = all)")
    p.add_argument("--all-views", action="store_true",
                   help="also show views no rule reads (headers, body, urls, ...)")
    p.set_defaults(func=explain)


# ------------------------------------------------------------- analysis

def _shorten(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    if limit and len(flat) > limit:
        return flat[:limit] + f"... ({len(flat) - limit} more characters)"
    return flat


def _trusted(policy: Any, env: Envelope) -> bool:
    """Whether the session would skip the gates and envelope rules: an
    authenticated client (if trusted), a local one, or one in the allowlist
    in any of the MTA's notations (clientaddr, as the session reads it)."""
    if env.auth and policy.trust_authenticated:
        return True
    if not env.client_addr:
        return True
    return client_in_networks(env.client_addr, policy.allow_networks)


def _rule_info(rule: Rule) -> dict[str, Any]:
    return {"rule": rule.id, "action": rule.action, "score": rule.score,
            "mode": rule.mode, "category": rule.category, "where": rule.where}


def _targets(rs: RuleSet, all_views: bool) -> list[str]:
    """Targets in the order a message meets them: envelope, headers, body."""
    wanted = set(rs.matchers)
    if all_views:
        # Every decoded view; the raw ones repeat what these show.
        wanted |= {t for t in MESSAGE_TARGETS if not t.endswith(":raw")}
    envelope = [t for t in ENVELOPE_TARGETS if t in wanted]
    headers = sorted(t for t in wanted if t.startswith("header"))
    rest = sorted(t for t in wanted if t not in envelope and t not in headers)
    return envelope + headers + rest


def _session_verdict(policy: Any, env: Envelope, headers: list[tuple[str, str]],
                     body: bytes, classifier: Any = None) -> dict[str, Any]:
    """Drive the daemon's own Session (no gates, no greylist, no store)."""
    from milterguard.milter.engine import Engine
    from milterguard.milter.session import Session

    session = Session(Engine(policy, classifier=classifier))
    macros = {"{auth_authen}": env.auth} if env.auth else {}
    out: dict[str, Any] = {"stage": "", "action": "accept", "reply": "", "rejected_recipients": []}

    def final(verdict: Any) -> bool:
        if verdict.final:
            out.update(stage=verdict.stage, action=verdict.action.value,
                       reply=str(verdict.reply) if verdict.reply else "")
        return bool(verdict.final)

    if final(session.connect(env.client_name, env.client_addr, 0, dict(env.macros))):
        return out
    if final(session.helo(env.helo)):
        return out
    if final(session.mail(env.sender or "", macros)):
        return out
    accepted = []
    for rcpt in env.recipients:
        verdict = session.rcpt(rcpt)
        if verdict.final:
            out["rejected_recipients"].append({"rcpt": rcpt, "action": verdict.action.value,
                                               "reply": str(verdict.reply or "")})
        else:
            accepted.append(rcpt)
    if not accepted:
        first = out["rejected_recipients"][0] if out["rejected_recipients"] else {}
        out.update(stage="rcpt", action=first.get("action", "reject"), reply=first.get("reply", ""))
        return out
    session.data({})
    for name, value in headers:
        session.header(name, value)
    if final(session.eoh({})):
        return out
    session.body(body)
    result = session.eom({})
    out["score"] = session.msg.score if session.msg is not None else None
    if not final(result.verdict):
        out["stage"] = "eom"
        out["action"] = result.verdict.action.value if result.verdict.action.value != "continue" else "accept"
        if result.quarantine:
            out["action"] = "quarantine"
    out["added_headers"] = [f"{n}: {v}" for n, v in result.add_headers]
    return out


def _classifier_report(policy: Any, classifier: Any, views: MessageViews) -> dict[str, Any]:
    settings = policy.classifier
    if classifier is None or classifier.counts is None:
        return {"state": "no learned counts"}
    counts = classifier.counts
    out: dict[str, Any] = {"learned_spam": counts.spam, "learned_ham": counts.ham,
                           "tokens": len(counts.tokens)}
    if not settings.enabled:
        out["state"] = "disabled"
        return out
    if not classifier.ready(settings):
        out["state"] = (f"inactive: needs {settings.min_spam} spam and {settings.min_ham} "
                        "ham learned")
        return out
    score = classifier.score(settings, views)
    band = settings.band(score.probability)
    out.update(state="active", probability=score.probability,
               band=band.id if band else None, message_tokens=score.tokens,
               clues=[{"token": t, "spam_prob": round(f, 4)}
                      for t, f in score.clues[:SHOW_CLUES]])
    return out


def explain_message(policy: Any, raw: bytes, chars: int = SHOW_CHARS,
                    all_views: bool = False, classifier: Any = None) -> dict[str, Any]:
    """Everything `explain` shows, as plain data (the --json output)."""
    parsed = parse_message(raw)
    env = parsed.envelope
    headers = parsed.milter_headers()
    views = MessageViews(headers, parsed.body, policy.max_scan_bytes,
                         max_parts=policy.max_parts, max_depth=policy.max_depth)
    rs: RuleSet = policy.ruleset
    trusted = _trusted(policy, env)
    envelope_texts = {"client": [env.client_addr, env.client_name], "helo": [env.helo],
                      "mail": [env.sender or ""]}

    hit_rules: dict[str, Rule] = {}
    view_out = []
    for target in _targets(rs, all_views):
        entry: dict[str, Any] = {"target": target, "hits": []}
        if target in ENVELOPE_TARGETS:
            groups = ([[r] for r in env.recipients] if target == "rcpt"
                      else [envelope_texts[target]])
            texts = [t for g in groups for t in g]
            if trusted:
                entry["skipped"] = "trusted client: envelope rules are not run"
                groups = []
        else:
            texts = views.texts(target)
            groups = [texts]
        entry["text_count"] = len(texts)
        entry["texts"] = [_shorten(t, chars) for t in texts[:SHOW_TEXTS]]
        for group in groups:
            for m in rs.match(target, group):
                rule = rs.rules[m.rule_id]
                hit_rules.setdefault(rule.id, rule)
                entry["hits"].append({**_rule_info(rule), "phrase": m.phrase,
                                      "excerpt": " ".join(m.excerpt.split())})
        view_out.append(entry)

    presence = []
    for rule in rs.presence:
        found = rule.presence_hit(views.header_count)
        if found:
            hit_rules.setdefault(rule.id, rule)
            presence.append({**_rule_info(rule), "header": found[0], "count": found[1]})

    compound = []
    hit_ids = set(hit_rules)
    for rule in rs.compounds:
        if not rule.compound_hit(hit_ids):
            continue
        hit_rules.setdefault(rule.id, rule)
        compound.append({**_rule_info(rule), "all": list(rule.all_of),
                         "any": list(rule.any_of), "none": list(rule.none_of)})

    # Each rule counts once, however many views it hit in (as in the session).
    score = sum(r.score for r in hit_rules.values() if r.action == "score" and not r.observe)
    by_score = ("reject" if score >= policy.reject_score else
                "tag" if score >= policy.tag_score else "none")
    return {
        "envelope": {"client_addr": env.client_addr, "client_name": env.client_name,
                     "helo": env.helo, "mail_from": env.sender, "rcpt_to": env.recipients,
                     "auth": env.auth, "trusted": trusted},
        "views": view_out,
        "presence": presence,
        "compound": compound,
        "score": score,
        "tag_score": policy.tag_score,
        "reject_score": policy.reject_score,
        "score_action": by_score,
        "rules_hit": sorted(hit_rules),
        "defects": list(views.defects),
        # What the scan could not read (the session makes scan:* findings of it).
        "not_scanned": {"truncated": views.truncated, "structure": views.unscanned,
                        "decode": views.decode_errors},
        "classifier": _classifier_report(policy, classifier, views),
        "verdict": _session_verdict(policy, env, headers, parsed.body, classifier),
    }


# ---------------------------------------------------------------- output

def _hit_line(hit: dict[str, Any]) -> str:
    what = f"score {hit['score']:g}" if hit["action"] == "score" else hit["action"]
    if hit["mode"] == "observe":
        what += ", observe only"
    return f"  HIT {hit['rule']} ({what}; {hit['where']})"


def format_text(report: dict[str, Any], name: str) -> str:
    env = report["envelope"]
    lines = [f"message: {name}",
             f"envelope: client={env['client_addr']} ({env['client_name']}) helo={env['helo']} "
             f"from=<{env['mail_from']}> to={','.join('<' + r + '>' for r in env['rcpt_to'])}"
             + ("  [trusted: envelope rules skipped]" if env["trusted"] else ""),
             "note: DNSBL/HELO/sender-domain gates and greylisting are not run by explain"]
    for view in report["views"]:
        lines.append("")
        lines.append(f"== {view['target']} ({view['text_count']} text"
                     f"{'' if view['text_count'] == 1 else 's'})")
        if "skipped" in view:
            lines.append(f"  ({view['skipped']})")
        for text in view["texts"]:
            lines.append(f"  | {text}")
        if view["text_count"] > len(view["texts"]):
            lines.append(f"  | ... and {view['text_count'] - len(view['texts'])} more")
        for hit in view["hits"]:
            lines.append(_hit_line(hit))
            lines.append(f"      matched {hit['phrase']!r} in: {hit['excerpt']}")
        if not view["hits"] and "skipped" not in view:
            lines.append("  (no rule hit)")
    if report["presence"]:
        lines += ["", "== header presence"]
        for hit in report["presence"]:
            lines.append(_hit_line(hit))
            lines.append(f"      {hit['header']} occurs {hit['count']} time(s)")
    if report["compound"]:
        lines += ["", "== compound rules"]
        for hit in report["compound"]:
            lines.append(_hit_line(hit))
            parts = [f"{k}: {','.join(hit[k])}" for k in ("all", "any", "none") if hit[k]]
            lines.append("      " + "; ".join(parts))
    if report["defects"]:
        lines += ["", "decoding defects: " + "; ".join(report["defects"])]
    for kind, reasons in report["not_scanned"].items():
        if reasons:
            lines.append(f"not scanned ({kind}): " + "; ".join(reasons[:5]))
    bayes = report["classifier"]
    lines += ["", "== classifier"]
    if bayes["state"] != "active":
        lines.append(f"  {bayes['state']}")
    else:
        lines.append(f"  spam probability {bayes['probability']:.4f} -> band "
                     f"{bayes['band'] or '(none)'}  ({bayes['message_tokens']} tokens; learned "
                     f"{bayes['learned_spam']} spam, {bayes['learned_ham']} ham)")
        for clue in bayes["clues"]:
            lines.append(f"  {clue['spam_prob']:6.4f}  {clue['token']}")
    verdict = report["verdict"]
    lines += ["",
              f"score: {report['score']:g} (tag at {report['tag_score']:g}, reject at "
              f"{report['reject_score']:g}) -> {report['score_action']}",
              f"rules hit: {', '.join(report['rules_hit']) or '-'}"]
    for rej in verdict["rejected_recipients"]:
        lines.append(f"recipient <{rej['rcpt']}>: {rej['action']} {rej['reply']}")
    lines.append(f"verdict: {verdict['action']} at {verdict['stage'] or '-'}"
                 + (f": {verdict['reply']}" if verdict["reply"] else ""))
    for header in verdict.get("added_headers", []):
        lines.append(f"  adds {header}")
    return "\n".join(lines)


def explain(args: argparse.Namespace) -> int:
    from milterguard.milter.engine import Policy
    try:
        config = load_config(args.config, args.state_dir)
        policy = Policy.from_config(config)
    except ConfigErrors as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        messages = [m for source in mail_sources([args.message]) for m in source.messages()]
    except OSError as exc:
        raise MilterguardError(f"cannot read {args.message}: {exc.strerror}") from exc
    if not messages:
        raise MilterguardError(f"no message in {args.message}")
    classifier = None
    if policy.classifier.enabled and os.path.exists(config.database):
        # Only an existing database: explain must not create one in a state
        # directory it was not meant for.
        from milterguard.classifier.runtime import LOAD_ERRORS, Classifier
        from milterguard.store.engines import describe, error_text
        classifier = Classifier(config.database)
        try:
            classifier.load()
        except LOAD_ERRORS as exc:
            # A database this user may not open (the daemon's, read by an
            # admin without rights) costs the classifier section, not the rules'.
            print(f"milterguard: classifier counts not read from "
                  f"{describe(config.database)}: {error_text(exc)}", file=sys.stderr)
            classifier = None
    reports = []
    for name, raw in messages:
        report = explain_message(policy, raw, max(0, args.chars), args.all_views, classifier)
        report["file"] = name
        reports.append(report)
    if args.json:
        # One message: its object, as always; a mailbox: a list of them.
        print(json.dumps(reports[0] if len(reports) == 1 else reports,
                         ensure_ascii=False, indent=1))
    else:
        print("\n\n".join(format_text(r, r["file"]) for r in reports))
    return 0
