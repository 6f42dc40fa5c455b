"""Rule lint: shadowed rules, phrase folding, risky and empty regexes, compounds
(the regex analysis itself: test_regexrisk.py)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import textwrap

import pytest

from milterguard.cli.main import main as cli_main
from milterguard.ruleset.lint import lint, phrase_contains
from milterguard.ruleset.rules import Rule, load_ruleset


def rules_from(tmp_path, text):
    (tmp_path / "r.yaml").write_text(textwrap.dedent(text))
    return load_ruleset(False, [str(tmp_path)])


def by_code(findings, code):
    return [f for f in findings if f.code == code]


def test_shadowed_phrase_rule_is_reported_with_location(tmp_path):
    rs = rules_from(tmp_path, """\
        rules:
          - id: broad
            target: [body, header:Subject]
            phrases: [viagra, "wire transfer"]
            action: reject
          - id: narrow
            target: body
            phrases: ["cheap viagra", "URGENT wire  transfer"]
            action: reject
          - id: scored
            target: body
            phrases: [viagra]
            action: score
            score: 3
        """)
    found = by_code(lint(rs, dynamic=False), "shadowed")
    assert {f.rule_id for f in found} == {"narrow", "scored"}
    narrow = next(f for f in found if f.rule_id == "narrow")
    assert narrow.level == "warning" and "broad" in narrow.message
    assert narrow.file.endswith("r.yaml") and narrow.line == 6
    assert str(narrow).startswith(f"{narrow.file}:6: warning: rule narrow:")
    # The claim holds for the real matcher: text that hits narrow hits broad.
    hits = {m.rule_id for m in rs.match("body", ["Get CHEAP  Viagra now"])}
    assert {"broad", "narrow"} <= hits


@pytest.mark.parametrize("earlier, later", [
    # a weaker action does not shadow a stronger one
    ("{target: body, phrases: [viagra], action: tag}", "{target: body, phrases: [viagra], action: reject}"),
    # a score rule never shadows: scores add up
    ("{target: body, phrases: [viagra], action: score, score: 9}", "{target: body, phrases: [viagra], action: score, score: 1}"),
    # the earlier rule reads fewer targets
    ("{target: body, phrases: [viagra]}", "{target: [body, html], phrases: [viagra]}"),
    # a phrase of the later rule is not covered
    ("{target: body, phrases: [viagra]}", "{target: body, phrases: [viagra, cialis]}"),
    # "via" is not a word of "viagra": no word-bounded containment
    ("{target: body, phrases: [via]}", "{target: body, phrases: [viagra]}"),
    # the earlier rule needs two phrases
    ("{target: body, phrases: [viagra, pills], min_matches: 2}", "{target: body, phrases: [viagra]}"),
    # the earlier rule only observes
    ("{target: body, phrases: [viagra], mode: observe}", "{target: body, phrases: [viagra]}"),
    # the later rule has a pattern the earlier one lacks
    ("{target: body, phrases: [viagra]}", "{target: body, phrases: [viagra], regex: ['v1agra']}"),
])
def test_not_shadowed(tmp_path, earlier, later):
    rs = rules_from(tmp_path, f"rules:\n  - {{id: a, {earlier[1:]}\n  - {{id: b, {later[1:]}\n")
    assert by_code(lint(rs, dynamic=False), "shadowed") == []


def test_rule_used_by_a_compound_is_not_shadowed(tmp_path):
    rs = rules_from(tmp_path, """\
        rules:
          - {id: a, target: body, phrases: [viagra]}
          - {id: b, target: body, phrases: [viagra], action: score, score: 1}
          - {id: c, all: [b], action: tag}
        """)
    assert by_code(lint(rs, dynamic=False), "shadowed") == []


def test_presence_rule_shadowing(tmp_path):
    rs = rules_from(tmp_path, """\
        rules:
          - {id: a, target: [header:Date, header:Message-ID], absent: true, action: reject}
          - {id: b, target: header:Date, absent: true, action: score, score: 2}
          - {id: c, target: header:Date, multiple: true, action: score, score: 2}
        """)
    assert [f.rule_id for f in by_code(lint(rs, dynamic=False), "shadowed")] == ["b"]


def test_phrase_contains_word_boundaries():
    assert phrase_contains("cheap viagra", "viagra")
    assert phrase_contains("viagra", "viagra")
    assert not phrase_contains("viagra", "via")
    assert not phrase_contains("cheap viagras", "viagra")


def test_phrases_folding_to_nothing_or_to_each_other(tmp_path):
    rs = rules_from(tmp_path, """\
        rules:
          - id: p
            target: body
            phrases: ["free offer", "FREE   Offer", "\\u200b", "fr\\u00e9e offer"]
            min_matches: 1
        """)
    found = lint(rs, dynamic=False)
    assert len(by_code(found, "empty-phrase")) == 1
    dup = by_code(found, "duplicate-phrase")
    assert len(dup) == 2 and all("free offer" in f.message for f in dup)


def test_unreachable_min_matches(tmp_path):
    rs = rules_from(tmp_path, """\
        rules:
          - {id: p, target: body, phrases: [one, ONE, two], min_matches: 3}
        """)
    [f] = by_code(lint(rs, dynamic=False), "min-matches")
    assert f.level == "error" and "2 distinct" in f.message


def test_lint_reports_backtracking_and_timeouts_per_rule(tmp_path):
    rs = rules_from(tmp_path, r"""
        rules:
          - {id: bad, target: body, regex: ['(\w+\s?)*$']}
          - {id: good, target: body, regex: ['wire\s+transfer']}
        """)
    found = lint(rs)
    assert {f.rule_id for f in found} == {"bad"}
    assert by_code(found, "backtracking") and by_code(found, "regex-timeout")
    assert by_code(found, "regex-timeout")[0].level == "error"


def test_regex_matching_the_empty_string(tmp_path):
    rs = rules_from(tmp_path, r"""
        rules:
          - {id: everything, target: body, regex: ['(viagra)?']}
          - {id: empty-subject, target: header:Subject, regex: ['^\s*$'], action: score, score: 1}
          - {id: fine, target: body, regex: ['viagra']}
        """)
    found = by_code(lint(rs, dynamic=False), "empty-match")
    levels = {f.rule_id: f.level for f in found}
    assert levels == {"everything": "error", "empty-subject": "warning"}


def test_compound_rules_that_cannot_matter(tmp_path):
    rs = rules_from(tmp_path, """\
        rules:
          - {id: a, target: body, phrases: [viagra], action: score, score: 1}
          - {id: b, target: body, phrases: [cialis], action: reject}
          - {id: never, all: [a], none: [a], action: reject}
          - {id: moot, all: [a, b], action: reject}
          - {id: ok, all: [a], any: [a], action: tag}
        """)
    found = lint(rs, dynamic=False)
    assert [f.rule_id for f in by_code(found, "unreachable-compound")] == ["never"]
    assert [f.rule_id for f in by_code(found, "moot-compound")] == ["moot"]


def test_duplicate_ids_in_a_rule_list():
    rules = [Rule(id="x", targets=("body",), phrases=("a",), file="f.yaml", line=3),
             Rule(id="x", targets=("body",), phrases=("b",), file="g.yaml", line=9)]
    [f] = [f for f in lint(rules, dynamic=False) if f.code == "duplicate-id"]
    assert (f.file, f.line, f.level) == ("g.yaml", 9, "error") and "f.yaml:3" in f.message


def test_shipped_rules_have_no_lint_errors():
    rs = load_ruleset(True, [])
    assert [f for f in lint(rs) if f.level == "error"] == []


def _check(tmp_path, *extra):
    """`milterguard check` in process: (exit status, stdout, stderr)."""
    cfg = tmp_path / "mg.yaml"
    cfg.write_text(f"rules:\n  shipped: false\n  site: [{tmp_path / 'rules.d'}]\n")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli_main(["check", "-c", str(cfg), *extra])
    return subprocess.CompletedProcess(["check"], status, out.getvalue(), err.getvalue())


def test_check_prints_lint_findings_and_exit_codes(tmp_path):
    rdir = tmp_path / "rules.d"
    rdir.mkdir()
    (rdir / "a.yaml").write_text(textwrap.dedent("""\
        rules:
          - {id: broad, target: body, phrases: [viagra]}
          - {id: narrow, target: body, phrases: [cheap viagra]}
        """))
    res = _check(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{rdir / 'a.yaml'}:3: warning: rule narrow: shadowed by rule broad" in res.stdout
    assert _check(tmp_path, "--strict").returncode == 1
    (rdir / "b.yaml").write_text("rules:\n  - {id: all, target: body, regex: ['x*']}\n")
    res = _check(tmp_path)
    assert res.returncode == 1
    assert f"{rdir / 'b.yaml'}:2: error: rule all:" in res.stdout
