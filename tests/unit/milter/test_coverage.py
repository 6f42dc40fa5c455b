"""Issue 12, findings 1, 5 and 8: no content passes unscanned without a trace.

- a charset Python cannot decode with (punycode, undefined, ...) in a body
  part or an RFC 2047 word: the text is read in a fallback decoding, the
  other parts are still scanned, and the failure is a ``scan:decode`` finding;
- a regex budget per message: a catastrophic pattern over 300 headers costs
  about the budget, not 75 s, and the searches it cut are ``scan:budget``;
- MIME nested deeper than ``max_depth``, parts past ``max_parts``, bytes past
  ``max_scan_bytes``, headers past ``max_headers``: findings with the
  configured action, on the message's log line and in the store.
"""

from __future__ import annotations

import dataclasses
import logging
import textwrap

import pytest
import regex

from milterguard.config import load_config
from milterguard.content.views import MessageViews
from milterguard.content.decode import decode_bytes, decode_header_value
from milterguard.errors import ConfigErrors
from milterguard.milter.engine import Engine, Policy
from milterguard.milter.session import Session
from milterguard.ruleset.budget import ScanBudget
from milterguard.ruleset import hsscreen
from milterguard.ruleset.matcher import TargetMatcher
from milterguard.ruleset.rules import RuleSet, parse_rule
from milterguard.verdict import Action

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

RULES = """\
rules:
  - id: gtube
    target: body
    regex: ['XJS\\*C4JDBQADN1\\.NSBN3\\*2IDNEN\\*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL\\*C\\.34X']
    action: reject
  - id: pharmacy-subject
    target: header:Subject
    phrases: [viagra, online pharmacy]
    action: reject
  - id: last-part
    target: body
    phrases: [hidden in the last part]
    action: reject
"""


class FakeStore:
    def __init__(self):
        self.hits = []

    def record(self, hits):
        self.hits.extend(hits)


def make_engine(tmp_path, message_cfg: str = "") -> Engine:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(RULES)
    cfg = tmp_path / "mg.yaml"
    cfg.write_text(f"rules: {{shipped: false, site: [{rules}]}}\n"
                   "allowlist: {networks: []}\n" + textwrap.dedent(message_cfg))
    return Engine(Policy.from_config(load_config(str(cfg), str(tmp_path / "state"))),
                  store=FakeStore())


def send(engine: Engine, headers, body: bytes = b""):
    s = Session(engine)
    s.connect("client.example.com", "198.51.100.7", 25)
    s.helo("client.example.com")
    s.mail("a@example.com", {"i": "Q1"})
    s.rcpt("b@example.net")
    s.data()
    for name, value in headers:
        s.header(name, value)
    verdict = s.eoh()
    if verdict.final:
        return verdict, []
    for i in range(0, len(body), 4096):
        s.body(body[i:i + 4096])
    result = s.eom()
    findings = [f for _, f in s.msg.findings]
    s.close()
    return result.verdict, findings


def ids(findings):
    return [f.rule_id for f in findings]


def multipart(*parts: bytes) -> bytes:
    return b"".join(b"--b\r\n" + p + b"\r\n" for p in parts) + b"--b--\r\n"


MULTI = [("Content-Type", "multipart/mixed; boundary=b")]


# -- finding 1: bypass by charset --------------------------------------------------

@pytest.mark.parametrize("charset", ["punycode", "undefined", "idna", "unicode_escape",
                                     "x-no-such-charset", "base64"])
def test_undecodable_charset_in_a_body_part_is_read_and_the_next_part_too(charset):
    body = multipart(b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n\r\n" + GTUBE,
                     b"Content-Type: text/plain\r\n\r\nhidden in the last part")
    views = MessageViews(MULTI, body)
    texts = views.texts("body")
    assert any(GTUBE.decode() in t for t in texts)
    assert any("hidden in the last part" in t for t in texts)
    assert views.decode_errors, "a charset that failed to decode is reported"


def test_punycode_gtube_body_is_rejected_and_the_failure_recorded(tmp_path):
    engine = make_engine(tmp_path)
    verdict, findings = send(engine, [("Subject", "hello")] + [
        ("Content-Type", "text/plain; charset=punycode")], GTUBE + b"\r\n")
    assert verdict.action == Action.REJECT
    assert "gtube" in ids(findings) and "scan:decode" in ids(findings)
    assert {h.rule_id for h in engine.store.hits} >= {"gtube", "scan:decode"}


@pytest.mark.parametrize("charset", ["punycode", "undefined", "idna"])
def test_rfc2047_word_in_an_undecodable_charset_never_raises(charset):
    value = f"=?{charset}?Q?a_b?= Buy viagra online pharmacy"
    assert "viagra online pharmacy" in decode_header_value(value)
    problems: list[str] = []
    decode_header_value(value, problems)
    assert problems and charset in problems[0]


def test_punycode_subject_is_rejected_at_end_of_headers(tmp_path):
    engine = make_engine(tmp_path)
    verdict, _ = send(engine, [("Subject", "=?punycode?Q?a_b?= Buy viagra online pharmacy")])
    assert verdict.action == Action.REJECT and verdict.stage == "eoh"


def test_decode_bytes_never_raises_on_any_codec_python_knows():
    import encodings.aliases
    names = set(encodings.aliases.aliases.values()) | {"punycode", "undefined", "idna"}
    data = b"ab\xff\xfe\x00c\\u12=?+AGE-"
    for name in sorted(names):
        assert isinstance(decode_bytes(data, name), str)


def test_a_failing_part_is_reported_and_the_walk_goes_on(monkeypatch):
    import milterguard.content.mime as mime
    real = mime.render

    def broken_render(html):
        if "boom" in html:
            raise ValueError("renderer bug")
        return real(html)

    monkeypatch.setattr(mime, "render", broken_render)
    body = multipart(b"Content-Type: text/html\r\n\r\n<p>boom</p>",
                     b"Content-Type: text/plain\r\n\r\nhidden in the last part")
    views = MessageViews(MULTI, body)
    assert any("hidden in the last part" in t for t in views.texts("body"))
    assert any("ValueError" in d for d in views.decode_errors)


# -- finding 8: what is not scanned is a finding -----------------------------------

def nested(depth: int, text: bytes) -> tuple[list, bytes]:
    body = b"Content-Type: text/plain\r\n\r\n" + text
    for level in range(depth):
        body = (b"Content-Type: multipart/mixed; boundary=l%d\r\n\r\n--l%d\r\n" % (level, level)
                + body + b"\r\n--l%d--\r\n" % level)
    head, _, rest = body.partition(b"\r\n\r\n")
    return [("Content-Type", head.split(b": ", 1)[1].decode())], rest


def test_mime_deeper_than_the_limit_is_a_structure_finding(tmp_path):
    engine = make_engine(tmp_path)
    headers, body = nested(12, b"hidden in the last part")
    verdict, findings = send(engine, headers, body)
    assert "scan:structure" in ids(findings)
    assert verdict.action == Action.TAG        # the default action


def test_parts_past_the_limit_act_as_configured(tmp_path):
    engine = make_engine(tmp_path, """\
        message:
          max_parts: 5
          scan_actions: {structure: reject}
        """)
    parts = [b"Content-Type: text/plain\r\n\r\npart %d" % i for i in range(5)]
    verdict, findings = send(engine, MULTI, multipart(*parts, b"\r\nhidden in the last part"))
    assert "last-part" not in ids(findings)
    assert "scan:structure" in ids(findings)
    assert verdict.action == Action.REJECT and verdict.reply.code == "550"


def test_within_limits_nothing_is_reported(tmp_path):
    engine = make_engine(tmp_path)
    headers, body = nested(3, b"plain words")
    verdict, findings = send(engine, headers + [("Subject", "hi")], body)
    assert verdict.action == Action.CONTINUE and findings == []


def test_bytes_past_max_scan_bytes_are_recorded_and_logged(tmp_path, caplog):
    engine = make_engine(tmp_path, "message: {max_scan_bytes: 1000}\n")
    with caplog.at_level(logging.INFO, logger="milterguard.session"):
        verdict, findings = send(engine, [("Subject", "hi")],
                                 b"x" * 2000 + b" hidden in the last part\r\n")
    assert verdict.action == Action.CONTINUE   # default: recorded, delivered
    (trunc,) = [f for f in findings if f.rule_id == "scan:truncated"]
    assert "past max_scan_bytes" in trunc.detail
    assert "scan:truncated" in [h.rule_id for h in engine.store.hits]
    assert any("scan:truncated" in r.getMessage() for r in caplog.records)


def test_headers_past_max_headers_are_truncation(tmp_path):
    engine = make_engine(tmp_path, "message: {max_headers: 10, scan_actions: {truncated: tag}}\n")
    headers = [("X-Pad", str(i)) for i in range(10)] + [("Subject", "viagra")]
    verdict, findings = send(engine, headers)
    assert "pharmacy-subject" not in ids(findings)
    assert "scan:truncated" in ids(findings) and verdict.action == Action.TAG


@pytest.mark.parametrize("cfg, field", [
    ("message: {scan_actions: {structure: accept}}", "structure"),
    ("message: {scan_actions: {strcture: tag}}", "strcture"),
    ("message: {max_parts: 0}", "max_parts"),
    ("message: {regex_time: 1s}", "regex_time"),
])
def test_bad_scan_settings_are_config_errors(tmp_path, cfg, field):
    with pytest.raises(ConfigErrors) as info:
        make_engine(tmp_path, cfg + "\n")
    assert any(e.field == field for e in info.value.errors)


# -- finding 5: regex time per message ---------------------------------------------

class StepClock:
    """Each reading advances by ``step``: every search costs ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_budget_stops_searches_once_spent_and_says_so():
    matcher = TargetMatcher([], [("slow", regex.compile("needle")),
                                 ("other", regex.compile("pin"))])
    budget = ScanBudget(1.0, clock=StepClock(0.1))   # 0.1 s per search
    texts = ["hay %d" % i for i in range(100)] + ["needle"]
    assert matcher.search(texts, budget) == []        # the needle came too late
    assert budget.exceeded and budget.skipped > 150
    assert "searches skipped" in budget.describe()
    fresh = ScanBudget(100.0, clock=StepClock(0.1))
    assert [m.rule_id for m in matcher.search(texts, fresh)] == ["slow"]
    assert not fresh.exceeded


@pytest.mark.skipif(not hsscreen.AVAILABLE, reason="hyperscan not installed")
def test_catastrophic_regex_on_ascii_headers_is_decided_by_the_compiled_pass(tmp_path):
    """With Hyperscan the same pattern over ASCII text is proved not to
    match in one linear pass: every header is read in full, nothing is cut."""
    engine = catastrophic_policy(tmp_path, 0.3)
    s = Session(engine)
    s.connect("client.example.com", "198.51.100.7", 25)
    s.mail("a@example.com", {"i": "Q3"})
    s.rcpt("b@example.net")
    for i in range(300):
        s.header("X-Pad-%d" % i, "a" * 60 + "!")
    s.eoh()
    result = s.eom()
    findings = [f.rule_id for _, f in s.msg.findings]
    assert "scan:budget" not in findings and "evil" not in findings
    assert result.verdict.action != Action.TAG
    assert not s.msg.budget.exceeded and s.msg.budget.spent < 0.3


def catastrophic_policy(tmp_path, regex_time: float):
    """The engine's policy with a rule `check` refuses, as a site might have
    loaded before: the budget is what bounds it."""
    engine = make_engine(tmp_path, f"message: {{regex_time: {regex_time}}}\n")
    errors: list = []
    raw = load_rule_yaml("id: evil\ntarget: headers\nregex: ['(a|aa)+$']\naction: reject\n")
    rule = parse_rule(raw, "evil.yaml", 1, errors)
    assert not errors
    policy = dataclasses.replace(engine.policy, ruleset=RuleSet([rule], []))
    engine.policy = policy
    return engine


def load_rule_yaml(text: str):
    from milterguard.yamlsrc import load_yaml_text
    return load_yaml_text(text, "evil.yaml")


def test_catastrophic_regex_over_300_headers_is_cut_by_the_budget(tmp_path):
    engine = catastrophic_policy(tmp_path, 0.3)
    # Non-ASCII values: the regex module itself reads them (with Hyperscan
    # installed too, see ruleset/hsscreen.py), so the backtracking happens.
    headers = [("X-Pad-%d" % i, "a" * 60 + "\u00e9") for i in range(300)]
    s = Session(engine)
    s.connect("client.example.com", "198.51.100.7", 25)
    s.mail("a@example.com", {"i": "Q2"})
    s.rcpt("b@example.net")
    for name, value in headers:
        s.header(name, value)
    s.eoh()
    result = s.eom()
    findings = [f for _, f in s.msg.findings]
    (budget_finding,) = [f for f in findings if f.rule_id == "scan:budget"]
    assert result.verdict.action == Action.TAG
    assert "searches skipped" in budget_finding.detail
    # Two searches ran into a time limit; the other headers were skipped
    # instead of costing a timeout each.
    assert s.msg.budget.skipped > 250
