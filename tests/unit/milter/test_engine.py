"""Hot reload: an edit takes effect, a broken edit keeps the working rules."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from milterguard.config import load_config
from milterguard.milter.engine import Engine, Policy


def make(tmp_path, rules_text):
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "site.yaml").write_text(rules_text)
    cfg = tmp_path / "mg.yaml"
    cfg.write_text(f"rules: {{shipped: false, site: [{rules}]}}\n")
    config = load_config(str(cfg), str(tmp_path / "state"))
    return Engine(Policy.from_config(config),
                  config_loader=lambda: load_config(str(cfg), str(tmp_path / "state"))), rules


def bump(path):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_edit_takes_effect_and_broken_edit_is_kept_out(tmp_path, caplog):
    engine, rules = make(tmp_path, "rules:\n  - {id: one, target: body, phrases: [a]}\n")
    assert engine.reload_if_changed() is False
    path = rules / "site.yaml"
    path.write_text("rules:\n  - {id: one, target: body, phrases: [a]}\n"
                    "  - {id: two, target: body, phrases: [b]}\n")
    bump(path)
    assert engine.reload_if_changed() is True
    assert set(engine.policy.ruleset.rules) == {"one", "two"}

    path.write_text("rules:\n  - {id: three, target: nowhere, phrases: [c]}\n")
    bump(path)
    assert engine.reload_if_changed() is False
    assert set(engine.policy.ruleset.rules) == {"one", "two"}
    assert engine.reload_failures == 1
    assert "site.yaml:2" in caplog.text and "three" in caplog.text

    # A new file in the site directory is noticed too.
    (rules / "extra.yaml").write_text("rules:\n  - {id: four, target: body, phrases: [d]}\n")
    path.write_text("rules:\n  - {id: one, target: body, phrases: [a]}\n")
    bump(path)
    assert engine.reload_if_changed() is True
    assert set(engine.policy.ruleset.rules) == {"one", "four"}


def test_check_command_reports_errors_and_exit_status(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text(textwrap.dedent("""\
        rules:
          - id: r1
            target: body
            regex: ['(']
        """))
    cfg = tmp_path / "mg.yaml"
    cfg.write_text(f"rules: {{shipped: true, site: [{rules}]}}\n")
    env = dict(os.environ, MILTERGUARD_STATE_DIR=str(tmp_path / "state"))
    bad = subprocess.run([sys.executable, "-m", "milterguard", "check", "-c", str(cfg)],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1
    assert f"{rules}/bad.yaml:4: rule r1: field regex: invalid regular expression" in bad.stdout
    (rules / "bad.yaml").write_text("rules:\n  - {id: r1, target: body, regex: ['ok']}\n")
    good = subprocess.run([sys.executable, "-m", "milterguard", "check", "-c", str(cfg)],
                          capture_output=True, text=True, env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("ok:")


def test_run_refuses_to_start_on_errors(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("rules:\n  - {id: r1, target: body}\n")
    cfg = tmp_path / "mg.yaml"
    cfg.write_text(f"rules: {{shipped: false, site: [{rules}]}}\n")
    res = subprocess.run([sys.executable, "-m", "milterguard", "run", "-c", str(cfg),
                          "--state-dir", str(tmp_path / "state"),
                          "--socket", f"unix:{tmp_path}/s.sock"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "bad.yaml:2: rule r1" in res.stderr and "not starting" in res.stderr


def test_config_error_names_file_and_line(tmp_path):
    cfg = tmp_path / "mg.yaml"
    cfg.write_text("message:\n  tag_score: lots\n")
    res = subprocess.run([sys.executable, "-m", "milterguard", "check", "-c", str(cfg)],
                         capture_output=True, text=True,
                         env=dict(os.environ, MILTERGUARD_STATE_DIR=str(tmp_path)))
    assert res.returncode == 1
    assert f"{cfg}:2: field tag_score: must be a non-negative number" in res.stdout


def test_help_lists_every_command():
    res = subprocess.run([sys.executable, "-m", "milterguard", "--help"],
                         capture_output=True, text=True)
    assert res.returncode == 0
    for name in ("run", "check", "replay"):
        assert name in res.stdout


class _Part:
    """A gate set, greylist and store in one: records what the engine calls."""

    def __init__(self, calls, name, fail_close=False):
        self.calls, self.name, self.fail_close = calls, name, fail_close

    def on_connect(self, client):
        self.calls.append((self.name, "connect", client.addr))
        return []

    def check(self, addr, sender, rcpt):
        self.calls.append((self.name, "check", rcpt))
        return None

    def record(self, hits):
        self.calls.append((self.name, "record", len(hits)))

    def close(self):
        self.calls.append((self.name, "close"))
        if self.fail_close:
            raise RuntimeError("broken on close")


def test_parts_are_called_through_their_interfaces_and_all_closed(tmp_path, caplog):
    from milterguard.smtpinfo import ClientInfo
    engine, _ = make(tmp_path, "rules:\n  - {id: one, target: body, phrases: [a]}\n")
    assert engine.gates.on_connect(ClientInfo(addr="192.0.2.1")) == []   # no gates: nothing
    calls = []
    engine = Engine(engine.policy, gates=_Part(calls, "gates", fail_close=True),
                    greylist=_Part(calls, "greylist"), store=_Part(calls, "store"))
    engine.gates.on_connect(ClientInfo(addr="192.0.2.1"))
    assert engine.greylist_check("192.0.2.1", "s@example.org", "r@example.net") is None
    engine.record([])                  # nothing to record: the store is not bothered
    engine.close()
    assert calls == [("gates", "connect", "192.0.2.1"), ("greylist", "check", "r@example.net"),
                     ("gates", "close"), ("greylist", "close"), ("store", "close")]
    assert "event=close-failed part=_Part" in caplog.text


def test_a_config_edit_that_switches_the_classifier_on_starts_it(tmp_path):
    cfg = tmp_path / "mg.yaml"
    cfg.write_text("rules: {shipped: false, site: []}\nclassifier: {enabled: false}\n")
    state = str(tmp_path / "state")
    engine = Engine.from_config(load_config(str(cfg), state), with_store=False)
    try:
        assert engine.classifier is None
        cfg.write_text("rules: {shipped: false, site: []}\n"
                       "classifier: {enabled: true, refresh_interval: 0.2}\n")
        bump(cfg)
        assert engine.reload_if_changed() is True
        assert engine.classifier is not None
    finally:
        engine.close()
