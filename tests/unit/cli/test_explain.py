"""`milterguard explain`: views, hits with excerpts, score and verdict."""

from __future__ import annotations

import json
import textwrap

import pytest

from milterguard.cli.explain import explain_message, format_text
from milterguard.cli.main import main as cli_main
from milterguard.config import load_config
from milterguard.milter.engine import Policy

RULES = """\
rules:
  - id: subj
    target: header:Subject
    phrases: [limited offer]
    action: score
    score: 3
  - id: body-phrase
    target: body
    phrases: [wire the funds]
    action: score
    score: 4
  - id: url-host
    target: url-hosts
    phrases: [funds.example.test]
    action: score
    score: 1
  - id: no-date
    target: header:Date
    absent: true
    action: score
    score: 2
  - id: both
    all: [subj, body-phrase]
    action: tag
  - id: helo-bad
    target: helo
    phrases: [badhelo.example]
    action: reject
    reply: "550 5.7.1 bad helo"
  - id: watch
    target: body
    phrases: [account]
    mode: observe
"""

# Subject "Limited offer" in RFC 2047 base64; the body in quoted-printable HTML.
MESSAGE = b"""\
X-Replay-Client: 198.51.100.20 mx.example.net
X-Replay-Helo: mx.example.net
X-Replay-Mail-From: <alice@example.com>
X-Replay-Rcpt-To: <bob@example.org>
From: Alice <alice@example.com>
To: Bob <bob@example.org>
Subject: =?utf-8?B?TGltaXRlZCBvZmZlcg==?=
Message-ID: <x1@example.com>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<p>Please w=C2=ADire the&nbsp;funds to the account at
<a href=3D"http://funds.example.test/pay">this page</a>.</p>
"""


@pytest.fixture
def policy(tmp_path):
    rdir = tmp_path / "rules.d"
    rdir.mkdir()
    (rdir / "r.yaml").write_text(RULES)
    cfg = tmp_path / "mg.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        rules:
          shipped: false
          site: [{rdir}]
        allowlist:
          networks: []
        """))
    return Policy.from_config(load_config(str(cfg))), str(cfg)


def hits(report, target):
    view = next(v for v in report["views"] if v["target"] == target)
    return {h["rule"]: h for h in view["hits"]}


def test_views_hits_excerpts_score_and_verdict(policy):
    report = explain_message(policy[0], MESSAGE)
    assert report["envelope"]["client_addr"] == "198.51.100.20"
    assert report["envelope"]["helo"] == "mx.example.net"
    subject = next(v for v in report["views"] if v["target"] == "header:Subject")
    assert subject["texts"] == ["Limited offer"]            # decoded RFC 2047
    assert "limited offer" in hits(report, "header:Subject")["subj"]["excerpt"]
    body = hits(report, "body")
    assert "wire the funds" in body["body-phrase"]["excerpt"]    # soft hyphen, &nbsp; gone
    assert body["watch"]["mode"] == "observe"
    assert "url-host" in hits(report, "url-hosts")
    assert report["presence"][0]["rule"] == "no-date"
    assert report["compound"][0]["rule"] == "both"
    # observe rules never score; each rule counts once
    assert report["score"] == 3 + 4 + 1 + 2
    assert report["score_action"] == "reject"
    verdict = report["verdict"]
    assert (verdict["stage"], verdict["action"]) == ("eom", "reject")
    assert "550" in verdict["reply"]
    assert "helo-bad" not in report["rules_hit"]


def test_envelope_rule_and_trusted_client(policy):
    bad = MESSAGE.replace(b"X-Replay-Helo: mx.example.net", b"X-Replay-Helo: badhelo.example")
    report = explain_message(policy[0], bad)
    assert "helo-bad" in hits(report, "helo")
    assert report["verdict"]["action"] == "reject"
    assert "bad helo" in report["verdict"]["reply"]
    trusted = bad.replace(b"X-Replay-Client: 198.51.100.20", b"X-Replay-Auth: alice\nX-Replay-Client: 198.51.100.20")
    report = explain_message(policy[0], trusted)
    helo = next(v for v in report["views"] if v["target"] == "helo")
    assert helo["hits"] == [] and "trusted" in helo["skipped"]


def test_long_texts_are_shortened(policy):
    long_body = MESSAGE + b"<p>" + b"filler words " * 500 + b"</p>\n"
    report = explain_message(policy[0], long_body, chars=100)
    body = next(v for v in report["views"] if v["target"] == "body")
    assert len(body["texts"][0]) < 200 and "more characters" in body["texts"][0]
    text = format_text(report, "m.eml")
    assert "== body (1 text)" in text and "HIT body-phrase" in text
    assert "verdict: reject at eom" in text


def test_cli_text_and_json(policy, tmp_path, capsys):
    path = tmp_path / "m.eml"
    path.write_bytes(MESSAGE)
    # Its own state directory: never the machine's /var/lib/milterguard.
    base = ["explain", str(path), "-c", policy[1], "--state-dir", str(tmp_path / "state")]
    status = cli_main(base)
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "matched 'wire the funds' in:" in out
    assert "score: 10 (tag at 5, reject at 10) -> reject" in out
    assert cli_main(base + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"]["action"] == "reject" and data["file"] == str(path)


def test_cli_reports_broken_rules(policy, tmp_path, capsys):
    (tmp_path / "rules.d" / "bad.yaml").write_text("rules:\n  - {id: x, target: nowhere, phrases: [a]}\n")
    path = tmp_path / "m.eml"
    path.write_bytes(MESSAGE)
    status = cli_main(["explain", str(path), "-c", policy[1], "--state-dir", str(tmp_path / "state")])
    assert status == 1 and "bad.yaml:2" in capsys.readouterr().err


@pytest.mark.parametrize("client, trusted", [
    ("198.51.100.20", True), ("::ffff:198.51.100.20", True), ("[198.51.100.20]", True),
    ("203.0.113.5", False), ("::ffff:203.0.113.5", False), ("unknown", False)])
def test_trusted_as_the_session_decides(tmp_path, client, trusted):
    """explain says "trusted" exactly when the daemon's session skips the
    envelope rules: an allowlisted IPv4 client seen as IPv4-mapped IPv6 too."""
    from milterguard.milter.engine import Engine
    from milterguard.milter.session import Session

    cfg = tmp_path / "mg.yaml"
    cfg.write_text("rules: {shipped: false, site: []}\nallowlist: {networks: [198.51.100.0/24]}\n")
    pol = Policy.from_config(load_config(str(cfg)))
    raw = MESSAGE.replace(b"X-Replay-Client: 198.51.100.20", f"X-Replay-Client: {client}".encode())
    assert explain_message(pol, raw)["envelope"]["trusted"] is trusted
    session = Session(Engine(pol))
    session.connect("client.example", client, 0)
    assert session.trusted is trusted


def test_cli_goes_on_without_a_classifier_database_it_cannot_open(policy, tmp_path, capsys):
    # Before: a database explain may not open (the daemon's, read by an
    # admin without write rights) ended explain in a traceback. A directory
    # in its place cannot be opened by any user, root included.
    state = tmp_path / "state"
    (state / "milterguard.db").mkdir(parents=True)
    path = tmp_path / "m.eml"
    path.write_bytes(MESSAGE)
    status = cli_main(["explain", str(path), "-c", policy[1], "--state-dir", str(state)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "classifier counts not read from" in err
    assert "score: 10 (tag at 5, reject at 10) -> reject" in out
