"""The classifier: tokens, chi-square combining, the token database, bands,
and its verdict in the session (unit level; learn has its own tests)."""

from __future__ import annotations

import math
import textwrap

import pytest

from tests.classifier_mail import make_message
from milterguard.classifier.model import Counts, Tuning, chi2q, classify, token_prob
from milterguard.classifier.runtime import Classifier
from milterguard.classifier.settings import ClassifierSettings
from milterguard.classifier.tokendb import (TokenWriter, load_counts, message_digest,
                                            open_tokendb)
from milterguard.classifier.tokens import tokenize
from milterguard.config import load_config
from milterguard.content.views import MessageViews
from milterguard.errors import ConfigErrors
from milterguard.milter.engine import Engine, Policy
from milterguard.milter.session import Session
from milterguard.replay.message import parse_message
from milterguard.verdict import Action


def tokens_of(raw: bytes) -> set[str]:
    parsed = parse_message(raw)
    return tokenize(MessageViews(parsed.milter_headers(), parsed.body, 1 << 20))


def trained(n: int = 30) -> Counts:
    counts = Counts()
    for i in range(n):
        counts.add(tokens_of(make_message("ham", i)), "ham")
        counts.add(tokens_of(make_message("spam", i)), "spam")
    return counts


# -- tokens ---------------------------------------------------------------

def test_tokens_come_from_decoded_views():
    raw = (b"From: Alice <alice@example.org>\r\nSubject: =?utf-8?b?Q2hlYXAgUGlsbHM=?=\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
           b"\r\n" + __import__("base64").b64encode(
               b"Visit http://shop.example.net/x for bargains aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n")
           + b"\r\n")
    tokens = tokens_of(raw)
    assert {"s:cheap", "s:pills", "visit", "bargains", "u:shop.example.net",
            "u-tail:example.net", "from-dom:example.org", "from-name:alice",
            "h:subject", "h-missing:message-id", "charset:utf-8"} <= tokens
    assert "skip:a30" in tokens          # a long run by first letter and length
    assert not any(t.startswith("http") for t in tokens)


def test_replay_pseudo_headers_are_not_tokens():
    tokens = tokens_of(b"X-Replay-Helo: a.example\r\nSubject: hi there\r\n\r\nbody text\r\n")
    assert not any("replay" in t for t in tokens)


# -- the maths ------------------------------------------------------------

def test_chi2q_matches_known_values():
    # P(chi2 with 2 dof >= x) = exp(-x/2); with 4 dof: exp(-x/2) * (1 + x/2)
    assert chi2q(3.0, 2) == pytest.approx(math.exp(-1.5))
    assert chi2q(3.0, 4) == pytest.approx(math.exp(-1.5) * 2.5)
    assert chi2q(0.0, 10) == pytest.approx(1.0)
    assert chi2q(2000.0, 300) == pytest.approx(0.0, abs=1e-30)


def test_token_prob_pulls_rare_tokens_towards_unknown():
    counts = Counts(spam=100, ham=100)
    tuning = Tuning()
    assert token_prob(1, 0, counts, tuning) < token_prob(20, 0, counts, tuning) < 1.0
    assert token_prob(0, 20, counts, tuning) < 0.05
    assert token_prob(10, 10, counts, tuning) == pytest.approx(0.5)


def test_classify_separates_unseen_messages():
    counts = trained()
    tuning = Tuning()
    ham = classify(tokens_of(make_message("ham", 500)), counts, tuning)
    spam = classify(tokens_of(make_message("spam", 500)), counts, tuning)
    assert ham.probability < 0.05 < 0.95 < spam.probability
    assert spam.clues and spam.clues[0][1] > 0.9     # strongest spam clue first
    assert classify({"never-seen"}, counts, tuning).probability == 0.5


def test_counts_pack_and_unlearn():
    counts = Counts()
    counts.add({"a", "b"}, "spam")
    counts.add({"a"}, "ham")
    assert counts.get("a") == (1, 1) and counts.get("b") == (1, 0)
    counts.add({"a", "b"}, "spam", -1)
    assert counts.get("a") == (0, 1) and "b" not in counts.tokens
    assert (counts.spam, counts.ham) == (0, 1)


# -- the database ---------------------------------------------------------

def test_learn_is_idempotent_relabels_and_forgets(database):
    conn = open_tokendb(database)      # on SQLite and on PostgreSQL
    writer = TokenWriter(conn)
    assert writer.learn("d1", {"x", "y"}, "spam").learned
    writer.commit()
    assert not writer.learn("d1", {"x", "y"}, "spam").learned     # same label: nothing
    moved = writer.learn("d1", {"x", "y"}, "ham")
    assert moved.learned and moved.relabelled
    writer.commit()
    counts, serial = load_counts(conn)
    assert counts.get("x") == (0, 1) and (counts.spam, counts.ham) == (0, 1)
    assert writer.forget("d1", {"x", "y"}).forgotten
    assert not writer.forget("d2", {"x"}).forgotten               # never learned
    writer.commit()
    counts2, serial2 = load_counts(conn, counts, serial)          # incremental
    assert serial2 > serial and "x" not in counts2.tokens
    assert (counts2.spam, counts2.ham) == (0, 0)


def test_incremental_load_reads_only_changed_rows(database):
    conn = open_tokendb(database)
    writer = TokenWriter(conn)
    writer.learn("d1", {"old"}, "ham")
    writer.commit()
    counts, serial = load_counts(conn)
    writer.learn("d2", {"new"}, "spam")
    writer.commit()
    rows = conn.execute("SELECT COUNT(*) FROM bayes_tokens WHERE serial > ?", (serial,)).fetchone()
    assert rows[0] == 1
    counts, _ = load_counts(conn, counts, serial)
    assert counts.get("old") == (0, 1) and counts.get("new") == (1, 0)


def test_digest_ignores_line_endings_and_delivery_headers():
    one = b"From x@example.com Mon Mar  2 10:00:00 2026\nReturn-Path: <a@example.org>\nSubject: s\n\nbody\n"
    two = b"Delivered-To: b@example.com\r\nSubject: s\r\n\r\nbody  \r\n\r\n"
    assert message_digest(one) == message_digest(two)
    assert message_digest(one) != message_digest(one.replace(b"body", b"other"))


# -- settings and the session ---------------------------------------------

def config_with(tmp_path, text: str):
    cfg = tmp_path / "mg.yaml"
    cfg.write_text(textwrap.dedent(text))
    return load_config(str(cfg), str(tmp_path / "state"))


def test_band_errors_name_file_line_and_field(tmp_path):
    config = config_with(tmp_path, """\
        classifier:
          bands:
            - {id: ok, min: 0.9, action: tag}
            - {id: bad, min: 0.5, max: 0.4, action: score, score: 1}
            - {id: worse, min: 0.1, action: explode}
        """)
    with pytest.raises(ConfigErrors) as info:
        ClassifierSettings.from_config(config)
    text = "\n".join(str(e) for e in info.value.errors)
    assert "mg.yaml:4" in text and "min must be below max" in text
    assert "mg.yaml:5" in text and "action" in text


def learned_engine(tmp_path, bands: str, min_count: int = 20, site: str = "[]") -> Engine:
    config = config_with(tmp_path, f"""\
        rules: {{shipped: false, site: {site}}}
        allowlist: {{networks: []}}
        classifier:
          min_spam: {min_count}
          min_ham: {min_count}
          bands: {bands}
        """)
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
