"""Rule files: validation errors name file, line, rule and field; overrides work."""

from __future__ import annotations

import contextlib
import io
import textwrap

import pytest

from milterguard.errors import ConfigErrors
from milterguard.ruleset.rules import load_ruleset, parse_rule_reply


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_valid_rules_compile_per_target(tmp_path):
    write(tmp_path, "a.yaml", """\
        rules:
          - id: subj
            target: header:Subject
            phrases: [free money]
          - id: body
            target: [body, header:Subject]
            regex: ['wire\\s+transfer']
            action: score
            score: 2.5
        """)
    rs = load_ruleset(False, [str(tmp_path)])
    assert set(rs.rules) == {"subj", "body"}
    assert set(rs.matchers) == {"header:Subject", "body"}
    assert rs.rules["body"].score == 2.5
    assert rs.rules["subj"].reply.code == "550"


def test_every_error_has_file_line_rule_and_field(tmp_path):
    path = write(tmp_path, "bad.yaml", """\
        rules:
          - id: ok-rule
            target: body
            phrases: [fine]
          - id: bad-action
            target: body
            phrases: [x]
            action: explode
          - id: bad-regex
            target: body
            regex:
              - 'fine'
              - '(unclosed'
          - id: bad-target
            target: bogus
            phrases: [x]
          - id: bad-reply
            target: body
            phrases: [x]
            action: reject
            reply: "451 4.7.1 wrong class"
        """)
    with pytest.raises(ConfigErrors) as info:
        load_ruleset(False, [path])
    text = [str(e) for e in info.value.errors]
    assert any(f"{path}:8: rule bad-action: field action:" in t for t in text), text
    assert any(f"{path}:13: rule bad-regex: field regex:" in t for t in text), text
    assert any(f"{path}:15: rule bad-target: field target:" in t for t in text), text
    assert any(f"{path}:21: rule bad-reply: field reply:" in t and "5xx" in t for t in text), text


def test_duplicate_id_in_one_layer_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", "rules:\n  - {id: x, target: body, phrases: [a]}\n")
    write(tmp_path, "b.yaml", "rules:\n  - {id: x, target: body, phrases: [b]}\n")
    with pytest.raises(ConfigErrors) as info:
        load_ruleset(False, [str(tmp_path)])
    assert "duplicate id" in str(info.value)
    assert "a.yaml:2" in str(info.value)


def test_site_rule_overrides_and_disables_shipped(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    write(site, "override.yaml", """\
        rules:
          - id: gtube
            target: body
            phrases: [site specific]
            action: tempfail
          - id: pharmacy-subject
            enabled: false
        """)
    shipped = load_ruleset(True, [])
    rs = load_ruleset(True, [str(site)])
    assert "pharmacy-subject" in shipped.rules
    assert "pharmacy-subject" not in rs.rules
    assert rs.rules["gtube"].action == "tempfail"
    assert rs.rules["gtube"].phrases == ("site specific",)
    assert len(rs.rules) == len(shipped.rules) - 1


def test_compound_rules_must_refer_to_known_rules(tmp_path):
    write(tmp_path, "a.yaml", """\
        rules:
          - id: a
            target: body
            phrases: [one]
            action: score
            score: 1
          - id: both
            all: [a, missing]
            action: reject
        """)
    with pytest.raises(ConfigErrors) as info:
        load_ruleset(False, [str(tmp_path)])
    assert "unknown rule 'missing'" in str(info.value)


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "broken.yaml", "rules:\n  - id: x\n    phrases: [a\n")
    with pytest.raises(ConfigErrors) as info:
        load_ruleset(False, [path])
    assert info.value.errors[0].file == path
    assert info.value.errors[0].line is not None


@pytest.mark.parametrize("text,code,xcode,msg", [
    ("550 5.7.1 Go away", "550", "5.7.1", "Go away"),
    ("554 Nope", "554", "5.7.1", "Nope"),
])
def test_parse_rule_reply(text, code, xcode, msg):
    r = parse_rule_reply(text, "reject")
    assert (r.code, r.xcode, r.text) == (code, xcode, msg)


def test_parse_rule_reply_rejects_mismatch():
    with pytest.raises(ValueError):
        parse_rule_reply("550 4.7.1 x", "reject")
    with pytest.raises(ValueError):
        parse_rule_reply("hello", "reject")


def test_shipped_rules_are_valid():
    rs = load_ruleset(True, [])
    assert len(rs) > 10
    categories = {r.category for r in rs.rules.values()}
    assert {"gtube", "pharmacy", "phishing", "dangerous-attachment"} <= categories


def test_missing_shipped_rules_are_an_error_unless_switched_off(tmp_path, monkeypatch):
    """An install without its rules must not run (it would accept all spam)."""
    import os
    import subprocess
    import sys

    from milterguard.ruleset import rules as rules_mod
    empty = tmp_path / "no-rules"
    empty.mkdir()
    monkeypatch.setattr(rules_mod, "shipped_rules_dir", lambda: str(empty))
    with pytest.raises(ConfigErrors) as info:
        load_ruleset(True, [])
    assert f"no shipped rule files in {empty}" in str(info.value)
    assert "rules.shipped: false" in str(info.value)
    site = write(tmp_path, "site.yaml", "rules:\n  - {id: x, target: body, phrases: [x]}\n")
    assert len(load_ruleset(False, [site])) == 1
    # Through the command: `check` exits 1 with the message, no traceback.
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; from milterguard.ruleset import rules; "
            f"rules.shipped_rules_dir = lambda: {str(empty)!r}; "
            "from milterguard.cli.main import main; sys.exit(main(['check', '--no-dynamic']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=repo))
    assert proc.returncode == 1
    assert "no shipped rule files in" in proc.stdout and "Traceback" not in proc.stderr


def test_check_names_where_the_rules_came_from(tmp_path):
    from milterguard.cli.main import main
    from milterguard.ruleset.rules import rule_files, shipped_rules_dir
    site_dir = tmp_path / "rules.d"
    site_dir.mkdir()
    write(site_dir, "a.yaml", "rules:\n  - {id: x, target: body, phrases: [x]}\n")
    config = write(tmp_path, "c.yaml", f"rules:\n  site: [{site_dir}, {tmp_path}/absent]\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["check", "-c", config, "--no-dynamic"]) == 0
    lines = out.getvalue().splitlines()
    shipped = len(rule_files([shipped_rules_dir()]))
    assert f"shipped rules: {shipped_rules_dir()} ({shipped} files)" in lines
    assert f"site rules: {site_dir} (1 file)" in lines
    assert f"site rules: {tmp_path}/absent (0 files, not found)" in lines


def test_every_view_target_loads_and_nothing_else(tmp_path):
    """The loader accepts exactly what MessageViews answers (one list)."""
    from milterguard.content.views import MESSAGE_TARGETS, MessageViews
    from milterguard.ruleset.rules import ENVELOPE_TARGETS, valid_target

    for target in ENVELOPE_TARGETS + MESSAGE_TARGETS + (
            "header:Subject", "header:X-Mailer:raw", "header:X-Mailer:RAW"):
        assert valid_target(target), target
    for target in ("bodies", "header:", "header:a b", "header:x:y", "html:raw"):
        assert not valid_target(target), target
    # Upper-case :RAW is read raw by the views, so the loader takes it too.
    views = MessageViews([("X-Mailer", "=?utf-8?q?caf=C3=A9?=")], b"")
    assert views.texts("header:X-Mailer:RAW") == ["=?utf-8?q?caf=C3=A9?="]
    assert views.texts("header:X-Mailer") == ["café"]
