"""import-postfix: Postfix header/body_checks tables to rule YAML."""

from __future__ import annotations

import os

import regex
import yaml

from milterguard.cli.main import main
from milterguard.ruleset.postfix_import import convert_table
from milterguard.ruleset.rules import load_rule_file

HEADER_TABLE = """\
# header_checks written for this test
/^Subject:.*viagra/          REJECT no pills here
/^Subject: .*important/      DUNNO
/^Subject:.*(cheap|free) +meds/	DISCARD
!/^Date:/                    WARN no date
if /^Received:/
/from [[:alpha:]]+\\.invalid/ HOLD
endif
/^X-Mailer: Foo/i            REJECT case sensitive now
/^Content-Type:.*name="?.*\\.(exe|scr)"?/ REJECT bad attachment
/^Subject:/                  PREPEND X-Seen: yes
/(?i)pcre-only/              REJECT
/^X-Spam:/                   BOGUS
/^From:.*@spam\\.example/     REJECT
  continued reply text
endif
"""


def compiled(rule: dict) -> regex.Pattern[str]:
    # The rule engine compiles case-insensitive unless case_sensitive is set.
    return regex.compile(rule["regex"][0], regex.V0 | regex.IGNORECASE)


def by_line(conv, line: int) -> dict:
    (rule,) = [r for r in conv.rules if r["id"].endswith(f"-{line}")]
    return rule


def test_header_table_conversion() -> None:
    conv = convert_table(HEADER_TABLE.splitlines(), kind="header", source="hc")
    skipped = {s.line: s.reason for s in conv.skipped}
    assert set(skipped) == {11, 12, 13, 16}
    assert "PREPEND" in skipped[11]
    assert "PCRE" in skipped[12]
    assert "unknown action" in skipped[13]
    assert "endif" in skipped[16]

    reject = by_line(conv, 2)
    assert reject["target"] == "headers:raw"
    assert reject["action"] == "reject" and reject["mode"] == "enforce"
    assert reject["reply"] == "550 5.7.1 no pills here"
    assert reject["description"] == "imported from hc:2"
    assert compiled(reject).search("SUBJECT: cheap VIAGRA")       # case-insensitive default
    assert not compiled(reject).search("From: x\nSubject: viagra")  # ^ anchors at the start

    # DUNNO on line 3 excludes matching headers from later rules.
    discard = by_line(conv, 4)
    assert discard["action"] == "discard"
    assert compiled(discard).search("Subject: cheap  meds")
    assert not compiled(discard).search("Subject: important: cheap meds")

    warn = by_line(conv, 5)
    assert warn["mode"] == "observe"
    assert compiled(warn).search("Subject: x")
    assert not compiled(warn).search("Date: today")

    hold = by_line(conv, 7)
    assert hold["action"] == "quarantine"
    assert compiled(hold).search("Received: from host.invalid by mx")
    assert not compiled(hold).search("X-Note: from host.invalid")

    sensitive = by_line(conv, 9)
    assert compiled(sensitive).search("X-Mailer: Foo 1.0")
    assert not compiled(sensitive).search("X-Mailer: FOO 1.0")

    attach = by_line(conv, 10)
    assert compiled(attach).search('Content-Type: application/x; name="run.EXE"')

    continued = by_line(conv, 14)
    assert continued["reply"] == "550 5.7.1 continued reply text"


def test_body_table_is_per_line() -> None:
    table = ["/^Buy now$/ REJECT", "/cheap.*pills/ DISCARD", "/^-- $/ OK", "/x/m HOLD"]
    conv = convert_table(table, kind="body", source="bc")
    assert [r["target"] for r in conv.rules] == ["body:raw"] * 3
    first, second = compiled(conv.rules[0]), compiled(conv.rules[1])
    assert first.search("Hello\r\nBuy now\nbye")
    assert not first.search("Hello Buy now")
    assert second.search("a cheap box of pills")
    assert not second.search("cheap\nbox of pills")               # never across lines


def test_pcre_table() -> None:
    table = ["/^Subject:\\s+\\Qa.b\\E/ REJECT", "/^From:.*\\bfoo\\b/s DISCARD",
             "/^X-A: \\d+/U REJECT", "/^To: .*\\x{41}/ HOLD"]
    conv = convert_table(table, kind="header", pcre=True, source="p")
    assert [s.line for s in conv.skipped] == [3]                  # U has no equivalent
    q = compiled(conv.rules[0])
    assert q.search("Subject: a.b") and not q.search("Subject: axb")
    assert compiled(conv.rules[1]).search("From: x\n foo")
    assert compiled(conv.rules[2]).search("To: bob A")


def test_basic_syntax_with_x_flag() -> None:
    conv = convert_table([r"/a\(b\)\+c/x REJECT", r"/a(b)+c/x REJECT"], kind="header")
    assert compiled(conv.rules[0]).search("abbc")           # GNU BRE: \( \) \+ operate
    assert compiled(conv.rules[1]).search("a(b)+c")
    assert not compiled(conv.rules[1]).search("abbc")


def test_other_delimiters_and_nested_if() -> None:
    table = ["if /^Subject:/", "if !/newsletter/", "#/x/ REJECT", "|a/b| REJECT", "endif", "endif",
             "if /^X/"]
    conv = convert_table(table, kind="header")
    (rule,) = conv.rules
    assert compiled(rule).search("Subject: a/b")
    assert not compiled(rule).search("Subject: newsletter a/b")
    assert not compiled(rule).search("X-Other: a/b")
    assert [s.line for s in conv.skipped] == [7]                  # if without endif


def test_cli_writes_a_loadable_rule_file(tmp_path, capsys) -> None:
    src = tmp_path / "header_checks"
    src.write_text(HEADER_TABLE)
    out = tmp_path / "rules.yaml"
    rc = main(["import-postfix", f"regexp:{src}", "-o", str(out)])
    assert rc == 1                                                # some lines were not converted
    err = capsys.readouterr().err
    assert f"{src}:11: not converted" in err
    text = out.read_text()
    assert "# NOT CONVERTED line 12" in text
    data = yaml.safe_load(text)
    assert len(data["rules"]) == 7
    errors: list = []
    rules = load_rule_file(str(out), errors)
    assert errors == [] and len(rules) == 7

    body = tmp_path / "body_checks.pcre"
    body.write_text("/cheap\\s+pills/ REJECT\n")
    assert main(["import-postfix", str(body), "-o", str(tmp_path / "b.yaml")]) == 0
    loaded = yaml.safe_load((tmp_path / "b.yaml").read_text())
    assert loaded["rules"][0]["target"] == "body:raw"
    assert os.path.exists(tmp_path / "b.yaml")


def test_reject_with_enhanced_status_code_keeps_it() -> None:
    """Issue 12, finding 9: `REJECT 4.7.1 try again later` became
    '550 5.7.1 4.7.1 try again later'; Postfix answers 4xx with 4.7.1."""
    table = ["/^Subject: later/   REJECT 4.7.1 try again later",
             "/^Subject: never/   REJECT 5.7.9 go away",
             "/^Subject: bare/    REJECT 5.7.2"]
    conv = convert_table(table, kind="header", source="hc")
    later, never, bare = (by_line(conv, n) for n in (1, 2, 3))
    assert (later["action"], later["reply"]) == ("tempfail", "450 4.7.1 try again later")
    assert (never["action"], never["reply"]) == ("reject", "550 5.7.9 go away")
    assert (bare["action"], bare["reply"]) == ("reject", "550 5.7.2 Message content rejected")
    # The rules load as written (a tempfail needs a 4xx reply, a reject 5xx).
    from milterguard.ruleset.rules import parse_rule_reply
    assert str(parse_rule_reply(later["reply"], later["action"])) == "450 4.7.1 try again later"
