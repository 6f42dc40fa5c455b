"""The classifier in the daemon: its bands through the session, the background
loader, auto-learning (unit level; `learn` has its own tests)."""

from __future__ import annotations

import textwrap

from milterguard.classifier.runtime import Classifier
from milterguard.classifier.settings import ClassifierSettings
from milterguard.classifier.tokendb import (TokenWriter, load_counts, message_digest,
                                            open_tokendb)
from milterguard.content.views import MessageViews
from milterguard.milter.engine import Engine, Policy
from milterguard.milter.session import Session
from milterguard.replay.message import parse_message
from milterguard.verdict import Action
from tests.dnsfixtures import load_test_config
from tests.classifier_mail import make_message, tokens_of


def learned_engine(tmp_path, bands: str, min_count: int = 20, site: str = "[]") -> Engine:
    config = load_test_config(textwrap.dedent(f"""\
        rules: {{shipped: false, site: {site}}}
        allowlist: {{networks: []}}
        classifier:
          min_spam: {min_count}
          min_ham: {min_count}
          bands: {bands}
        """), str(tmp_path))
    conn = open_tokendb(config.database)
    writer = TokenWriter(conn)
    for i in range(30):
        for kind in ("ham", "spam"):
            raw = make_message(kind, i)
            writer.learn(message_digest(raw), tokens_of(raw), kind)
    writer.commit()
    conn.close()
    classifier = Classifier(config.database)
    classifier.load()
    return Engine(Policy.from_config(config), classifier=classifier)


def run_message(engine: Engine, raw: bytes):
    parsed = parse_message(raw)
    s = Session(engine)
    s.connect("mail.example.com", "198.51.100.7", 25)
    s.helo("mail.example.com")
    s.mail("a@example.net")
    s.rcpt("user@example.com")
    s.data()
    for name, value in parsed.milter_headers():
        s.header(name, value)
    s.eoh()
    s.body(parsed.body)
    return s.eom(), s


BANDS = ("[{id: b-spam, min: 0.99, action: reject}, {id: b-maybe, min: 0.8, score: 5},"
         " {id: b-ham, max: 0.01, score: -2}]")


def test_spam_band_rejects_with_its_id(tmp_path):
    engine = learned_engine(tmp_path, BANDS)
    result, session = run_message(engine, make_message("spam", 900))
    assert result.verdict.action == Action.REJECT
    assert "[b-spam]" in str(result.verdict.reply)
    finding = [f for _, f in session.msg.findings if f.rule_id == "b-spam"][0]
    assert finding.category == "bayes"
    assert float(finding.detail.split()[0][2:]) >= 0.99
    assert "u:offers.example.net=" in finding.detail      # the strongest clues


def test_ham_band_subtracts_and_delivers(tmp_path):
    engine = learned_engine(tmp_path, BANDS)
    result, session = run_message(engine, make_message("ham", 900))
    assert result.verdict.action == Action.CONTINUE
    assert session.msg.score == -2.0
    assert ("X-Milterguard", "b-ham") in result.add_headers


def test_classifier_is_silent_until_it_learned_the_minimum(tmp_path):
    engine = learned_engine(tmp_path, BANDS, min_count=31)
    result, session = run_message(engine, make_message("spam", 900))
    assert result.verdict.action == Action.CONTINUE
    assert session.msg.findings == []


def test_background_loader_makes_the_classifier_ready(tmp_path):
    engine = learned_engine(tmp_path, BANDS)
    fresh = Classifier(engine.classifier.database)
    assert not fresh.ready(engine.policy.classifier)
    fresh.start(0.05)
    try:
        for _ in range(200):
            if fresh.ready(engine.policy.classifier):
                break
            __import__("time").sleep(0.05)
        assert fresh.ready(engine.policy.classifier)
    finally:
        fresh.close()


def test_autolearn_writes_confident_verdicts_when_enabled(tmp_path):
    engine = learned_engine(tmp_path, BANDS)
    settings = engine.policy.classifier
    on = ClassifierSettings(**{**settings.__dict__, "autolearn": True,
                               "autolearn_spam": 0.99, "autolearn_ham": 0.01})
    raw = make_message("spam", 901)
    parsed = parse_message(raw)
    views = MessageViews(parsed.milter_headers(), parsed.body, 1 << 20)
    classifier = engine.classifier
    assert classifier.findings(settings, views)          # autolearn off: nothing queued
    assert classifier._learn_queue.empty()
    classifier.findings(on, views)
    conn = open_tokendb(classifier.database)
    classifier._write_autolearned(conn)
    counts, _ = load_counts(conn)
    conn.close()
    assert counts.spam == 31


def test_a_message_without_known_clues_gets_no_band(tmp_path):
    # p = 0.5 from no evidence at all is no reason to add a band's score.
    engine = learned_engine(tmp_path, "[{id: b-half, min: 0.5, score: 2}]")
    raw = (b"From: someone@example.invalid\r\nTo: user@example.com\r\nSubject: zzyzx qwvbn\r\n"
           b"Message-ID: <n.1@example.com>\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n\r\n"
           b"plover xyzzy frobnicate\r\n")
    score = engine.classifier.score(engine.policy.classifier, MessageViews(
        parse_message(raw).milter_headers(), parse_message(raw).body, 1 << 20))
    assert score.probability == 0.5 and score.clues == []
    result, session = run_message(engine, raw)
    assert session.msg.findings == [] and session.msg.score == 0.0
    result, session = run_message(engine, make_message("spam", 901))
    assert [f.rule_id for _, f in session.msg.findings] == ["b-half"]


def test_band_scores_tag_but_never_reach_the_reject_score(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {id: r-six, target: body, phrases: [the], action: score, score: 6}\n")
    engine = learned_engine(tmp_path, "[{id: b-likely, min: 0.8, score: 5}]", site=f"[{rules}]")
    result, session = run_message(engine, make_message("spam", 902))
    assert session.msg.score == 11.0                       # 6 + 5, shown as is ...
    assert result.verdict.action == Action.TAG             # ... but only 6 count to reject
    assert ("X-Spam-Score", "11.0") in result.add_headers
