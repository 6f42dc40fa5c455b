"""The session state machine, driven without a daemon."""

from __future__ import annotations

import textwrap

import pytest

from milterguard.config import load_config
from milterguard.milter.engine import Engine, Policy
from milterguard.milter.session import Session
from milterguard.verdict import Action, Finding, Reply, Verdict

RULES = """\
rules:
  - id: subj-offer
    target: header:Subject
    phrases: [limited time offer]
    action: reject
    reply: "550 5.7.1 Subject refused"
    category: header-phrase
  - id: body-wire
    target: body
    phrases: [wire the funds]
    action: reject
    category: body-phrase
  - id: body-score-a
    target: body
    phrases: [alpha]
    action: score
    score: 3
  - id: body-score-b
    target: body
    phrases: [beta]
    action: score
    score: 3
  - id: body-observe
    target: body
    phrases: [gamma]
    action: reject
    mode: observe
  - id: sub-epsilon
    target: body
    phrases: [epsilon]
    mode: helper
    action: score
    score: 1
  - id: eps-and-delta
    all: [sub-epsilon, body-six]
    action: reject
  - id: both
    all: [body-score-a, body-score-b]
    action: score
    score: 5
  - id: helo-bad
    target: helo
    phrases: [bad.example]
    action: reject
    category: bad-helo
  - id: body-six
    target: body
    phrases: [delta]
    action: score
    score: 6
  - id: no-msgid
    target: header:Message-ID
    absent: true
    action: score
    score: 1
"""


class FakeStore:
    def __init__(self):
        self.hits = []

    def record(self, hits):
        self.hits.extend(hits)

    def close(self):
        return True


class FakeGreylist:
    def __init__(self, grey_rcpts):
        self.grey = grey_rcpts

    def check(self, addr, sender, rcpt):
        if rcpt in self.grey:
            return Finding("greylist", "greylist", Action.TEMPFAIL,
                           Reply("451", "4.7.1", "Greylisted"))
        return None

    def close(self):
        pass


@pytest.fixture
def engine(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "test.yaml").write_text(RULES)
    cfg = tmp_path / "mg.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        rules: {{shipped: false, site: [{rules}]}}
        allowlist: {{networks: [192.0.2.0/28]}}
        """))
    config = load_config(str(cfg), str(tmp_path / "state"))
    return Engine(Policy.from_config(config), store=FakeStore(),
                  greylist=FakeGreylist({"grey@example.net"}))


def start(engine, addr="198.51.100.7", helo="mail.example.com"):
    s = Session(engine)
    assert s.connect("mail.example.com", addr, 25).action == Action.CONTINUE
    s.helo(helo)
    return s


def message(s, headers, body=b"", rcpts=("rcpt@example.net",), sender="a@example.com"):
    assert s.mail(sender, {"i": "Q1"}).action == Action.CONTINUE
    for r in rcpts:
        s.rcpt(r)
    s.data()
    for name, value in headers:
        v = s.header(name, value)
        assert v.action == Action.CONTINUE
    v = s.eoh()
    if v.final:
        return v, None
    for i in range(0, len(body), 7):   # chunks split anywhere
        s.body(body[i:i + 7])
    res = s.eom()
    return res.verdict, res


BASE = [("From", "a@example.com"), ("Message-ID", "<1@example.com>")]


def test_clean_mail_continues_without_header(engine):
    s = start(engine)
    v, res = message(s, BASE + [("Subject", "hello")], b"just a note\r\n")
    assert v.action == Action.CONTINUE
    assert res.add_headers == []


def test_subject_phrase_rejects_at_eoh_with_rule_reply(engine):
    s = start(engine)
    v, _ = message(s, BASE + [("Subject", "=?utf-8?Q?Limited_time_offer?=")])
    assert v.action == Action.REJECT and v.stage == "eoh"
    assert v.reply.code == "550" and "Subject refused" in v.reply.text
    assert "[subj-offer]" in v.reply.text


def test_body_phrase_split_across_chunks_rejects_at_eom(engine):
    s = start(engine)
    v, _ = message(s, BASE + [("Subject", "hi")], b"please wire\r\nthe   funds today\r\n")
    assert v.action == Action.REJECT and v.stage == "eom"
    hits = engine.store.hits
    assert [h.rule_id for h in hits] == ["body-wire"]
    assert hits[0].queue_id == "Q1" and hits[0].client_addr == "198.51.100.7"


def test_scores_add_up_and_compound_rules_fire(engine):
    s = start(engine)
    v, res = message(s, BASE + [("Subject", "hi")], b"alpha\r\n")
    assert v.action == Action.CONTINUE       # 3 < tag score 5
    assert ("X-Milterguard", "body-score-a") in res.add_headers
    s2 = start(engine)
    v, res = message(s2, BASE + [("Subject", "hi")], b"alpha beta\r\n")
    assert v.action == Action.REJECT         # 3 + 3 + 5 (compound) >= 10
    assert "both" in v.reply.text


def test_tag_threshold_adds_spam_headers_and_subject_prefix(engine):
    s = start(engine)
    v, res = message(s, BASE + [("Subject", "hi")], b"delta\r\n")
    assert v.action == Action.TAG            # 6: between tag (5) and reject (10)
    assert ("X-Spam-Flag", "YES") in res.add_headers
    assert ("X-Spam-Score", "6.0") in res.add_headers
    assert res.change_headers == [("Subject", 1, "[SPAM] hi")]


def test_observe_rules_are_recorded_but_never_act(engine):
    s = start(engine)
    v, res = message(s, BASE + [("Subject", "hi")], b"gamma\r\n")
    assert v.action == Action.CONTINUE
    assert [(h.rule_id, h.observe) for h in engine.store.hits] == [("body-observe", True)]


def test_helo_reject_is_delayed_to_rcpt(engine):
    s = start(engine, helo="bad.example")
    assert s.mail("x@example.com").action == Action.CONTINUE
    v = s.rcpt("r@example.net")
    assert v.action == Action.REJECT and v.stage == "rcpt"
    s.close()
    (hit,) = engine.store.hits
    assert hit.rule_id == "helo-bad" and hit.recipients == ("r@example.net",)
    assert hit.sender == "x@example.com"


def test_greylist_is_per_recipient(engine):
    s = start(engine)
    s.mail("x@example.com")
    assert s.rcpt("grey@example.net").action == Action.TEMPFAIL
    assert s.rcpt("ok@example.net").action == Action.CONTINUE
    assert s.msg.info.recipients == ["ok@example.net"]


def test_allowlisted_client_skips_gates_but_not_content(engine):
    s = start(engine, addr="192.0.2.3", helo="bad.example")
    s.mail("x@example.com")
    assert s.rcpt("grey@example.net").action == Action.CONTINUE
    s.data()
    for h in BASE + [("Subject", "hi")]:
        s.header(*h)
    s.eoh()
    s.body(b"wire the funds")
    assert s.eom().verdict.action == Action.REJECT


@pytest.mark.parametrize("addr", ["::ffff:192.0.2.3", "IPv6:::ffff:192.0.2.3", "[192.0.2.3]"])
def test_allowlist_knows_the_mta_notations_of_an_ipv4_client(engine, addr):
    """A dual-stack listener hands an IPv4 client over as ::ffff:a.b.c.d; it
    is still the allowlisted IPv4 address (the HELO rule would reject it)."""
    s = start(engine, addr=addr, helo="bad.example")
    assert s.trusted
    s.mail("x@example.com")
    assert s.rcpt("grey@example.net").action == Action.CONTINUE


def test_an_ipv6_client_is_not_the_ipv4_network_it_resembles(engine):
    s = start(engine, addr="2001:db8::c000:203", helo="bad.example")
    assert not s.trusted
    s.mail("x@example.com")
    assert s.rcpt("grey@example.net").action == Action.REJECT


def test_several_messages_per_connection_do_not_leak(engine):
    s = start(engine)
    v, _ = message(s, BASE + [("Subject", "hi")], b"wire the funds\r\n")
    assert v.action == Action.REJECT
    v, res = message(s, BASE + [("Subject", "hi")], b"clean\r\n")
    assert v.action == Action.CONTINUE and res.add_headers == []
    # RSET / abort mid-message, then a clean one
    s.mail("a@example.com")
    s.rcpt("r@example.net")
    s.data()
    s.header("Subject", "limited time offer")
    s.abort()
    v, _ = message(s, BASE + [("Subject", "fine")], b"ok\r\n")
    assert v.action == Action.CONTINUE


def test_out_of_order_events_do_not_crash(engine):
    s = Session(engine)
    s.body(b"wire the funds")
    assert s.eom().verdict.action == Action.REJECT
    s.close()


def test_authenticated_client_drops_delayed_reject(engine):
    s = start(engine, helo="bad.example")
    assert s.mail("x@example.com", {"{auth_authen}": "alice"}).action == Action.CONTINUE
    assert s.rcpt("r@example.net").action == Action.CONTINUE
    s.close()
    assert engine.store.hits == []


def test_helper_rules_feed_compounds_but_are_never_recorded(engine):
    s = start(engine)
    v, res = message(s, BASE + [("Subject", "hi")], b"epsilon\r\n")
    assert v.action == Action.CONTINUE and res.add_headers == []
    assert engine.store.hits == []
    s = start(engine)
    v, _ = message(s, BASE + [("Subject", "hi")], b"epsilon delta\r\n")
    assert v.action == Action.REJECT and "eps-and-delta" in v.reply.text
    assert sorted(h.rule_id for h in engine.store.hits) == ["body-six", "eps-and-delta"]


def test_views_of_end_of_headers_serve_the_body_rules(engine):
    # One MessageViews per message: built at eoh, the body added at eom.
    s = start(engine)
    s.mail("a@example.com", {"i": "Q1"})
    s.rcpt("rcpt@example.net")
    s.data()
    for name, value in BASE:
        s.header(name, value)
    s.eoh()
    views = s.msg.views
    assert views is not None
    s.body(b"please wire the funds today\r\n")
    res = s.eom()
    assert res.verdict.action == Action.REJECT
    assert s.msg.views is views


def test_a_header_after_end_of_headers_rebuilds_the_views(engine):
    s = start(engine)
    s.mail("a@example.com", {"i": "Q1"})
    s.rcpt("rcpt@example.net")
    s.data()
    s.header("From", "a@example.com")
    s.eoh()
    first = s.msg.views
    # Out of order (a broken MTA): the late header must still be seen.
    s.header("Message-ID", "<2@example.com>")
    s.body(b"alpha beta\r\n")
    res = s.eom()
    assert res.verdict.action == Action.REJECT   # alpha + beta + both = 11
    assert s.msg.views is not first
    assert s.msg.views.header_count("Message-ID") == 1


def _policy(tmp_path, rules: str, extra: str = "") -> Policy:
    rules_dir = tmp_path / "quiet-rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "r.yaml").write_text(rules)
    cfg = tmp_path / "quiet.yaml"
    cfg.write_text(f"rules: {{shipped: false, site: [{rules_dir}]}}\n{extra}")
    return Policy.from_config(load_config(str(cfg), str(tmp_path / "state")))


def test_connect_is_quiet_only_when_its_verdicts_all_wait_for_rcpt(tmp_path):
    refuse = ("rules:\n  - id: c\n    target: client\n    phrases: ['192.0.2.66']\n"
              "    action: reject\n    category: client\n")
    trust = refuse.replace("action: reject", "action: accept")
    assert _policy(tmp_path, refuse).quiet_connect
    assert not _policy(tmp_path, refuse, "delay_rejects: false\n").quiet_connect
    assert not _policy(tmp_path, trust).quiet_connect


def test_held_verdict_keeps_the_strongest(engine):
    s = start(engine)
    s.hold(Verdict(Action.TEMPFAIL, Reply("451", "4.7.1", "later"), "connect"))
    s.hold(Verdict(Action.REJECT, Reply("554", "5.7.1", "no"), "helo"))
    s.hold(Verdict(Action.TEMPFAIL, Reply("451", "4.7.1", "later"), "helo"))
    assert s.mail("a@example.com", {"i": "Q1"}).action == Action.CONTINUE
    v = s.rcpt("rcpt@example.net")
    assert (v.action, v.reply.code, v.stage) == (Action.REJECT, "554", "rcpt")


def test_control_characters_from_the_client_never_reach_the_log_raw(engine, caplog):
    """Issue 12, finding 9: _kv escaped only backslash, quote and LF."""
    import io
    import logging

    from milterguard.logsetup import EscapingFormatter

    caplog.set_level(logging.INFO, logger="milterguard.session")
    helo = "evil\rforged line\tfield=x\x1b[31mred\x00\x7f\x85end"
    s = start(engine, helo=helo)
    message(s, BASE + [("Subject", "hello")], b"just a note\r\n")
    [record] = [r for r in caplog.records if "stage=eom" in r.getMessage()]
    line = record.getMessage()
    assert 'helo="evil\\rforged line\\tfield=x\\x1b[31mred\\x00\\x7f\\x85end"' in line
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in line)

    # Every other line is escaped where all lines pass, the formatter.
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(EscapingFormatter("%(message)s"))
    logger = logging.getLogger("milterguard.test-escape")
    logger.addHandler(handler)
    try:
        logger.warning("event=x client=%s", "a\r\nb\x1bc\u2028d")
    finally:
        logger.removeHandler(handler)
    assert out.getvalue() == "event=x client=a\\r\\nb\\x1bc\\u2028d\n"
