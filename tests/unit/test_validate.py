"""Issue 12 finding 7: `check` is `run` is reload (milterguard.validate).

Before: `check` said ok to each bad setting below, misspelt keys passed
both commands, an unknown exporter surfaced only at `bans sync`, `run` died
with a traceback on a nameserver that is no address and loaded a rule
`check` called an error, and a reload logged "reload" while ignoring
changed HELO, DNS, DNSBL, envelope and greylist settings.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from milterguard.config import load_config
from milterguard.errors import ConfigErrors
from milterguard.milter.engine import Engine
from milterguard.smtpinfo import ClientInfo
from milterguard.validate import validate_config

BAD = {
    "greylist: {delay: 5x}": ("delay", "duration"),
    "dnsbl: {zones: [{name: z, zone: z.example, codes: [127.0.0.300]}]}": ("codes", "127.0.0"),
    "helo: {reject_non_fqdn: maybe}": ("reject_non_fqdn", "true or false"),
    "dns: {nameservers: [not-an-ip]}": ("nameservers", "not an IP address"),
    "greylist: {enabeld: true}": ("enabeld", "did you mean 'enabled'"),
    "greylst: {enabled: true}": ("greylst", "did you mean 'greylist'"),
    "bans: {exporters: [nftabels]}": ("exporters", "did you mean 'nftables'"),
    "message: {max_scan_byts: 5}": ("max_scan_byts", "did you mean 'max_scan_bytes'"),
    "logging: {level: loud}": ("level", "debug, info"),
    # The daemon's own keys: `run` refused them, `check` said ok.
    "socket_mode: rw-rw----": ("socket_mode", "not a file mode"),
    "socket_group: [postfix]": ("socket_group", "group name"),
    "session_timeout: soon": ("session_timeout", "duration"),
    "stop_timeout: -3": ("stop_timeout", ""),
    "socket: tcp:25": ("socket", ""),
}


def config_file(tmp_path, text: str) -> str:
    path = tmp_path / "mg.yaml"
    head = "" if text.startswith("rules:") else "rules: {shipped: true, site: []}\n"
    path.write_text(head + text + "\n")
    return str(path)


#: Every problem of BAD in one file (one section per line).
ALL_AT_ONCE = """\
greylist: {delay: 5x, enabeld: true}
dnsbl: {zones: [{name: z, zone: z.example, codes: [127.0.0.300]}]}
helo: {reject_non_fqdn: maybe}
dns: {nameservers: [not-an-ip]}
greylst: {enabled: true}
bans: {exporters: [nftabels]}
message: {max_scan_byts: 5}
logging: {level: loud}
socket_mode: rw-rw----
socket_group: [postfix]
session_timeout: soon
stop_timeout: -3
socket: tcp:25"""


@pytest.mark.parametrize("text", list(BAD))
def test_each_bad_setting_is_an_error_with_its_field(tmp_path, text):
    field, words = BAD[text]
    with pytest.raises(ConfigErrors) as info:
        validate_config(load_config(config_file(tmp_path, text), str(tmp_path / "state")))
    (err,) = info.value.errors
    assert err.field == field and words in err.message, str(err)
    assert err.file.endswith("mg.yaml") and err.line == 2


def test_check_lists_every_problem_at_once_and_run_refuses_the_same(tmp_path):
    path = config_file(tmp_path, ALL_AT_ONCE)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    check = subprocess.run([sys.executable, "-m", "milterguard", "check", "-c", path],
                           capture_output=True, text=True, env=env, timeout=120)
    assert check.returncode == 1
    assert check.stderr.strip().endswith(f"{len(BAD)} error(s)"), check.stderr
    run = subprocess.run([sys.executable, "-m", "milterguard", "run", "-c", path,
                          "--state-dir", str(tmp_path / "state"),
                          "--socket", f"unix:{tmp_path}/s.sock"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    for field, _ in BAD.values():
        assert f"field {field}:" in check.stdout and f"field {field}:" in run.stderr, field


def test_a_rule_check_calls_an_error_is_refused_by_run_too(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {id: evil, target: body, regex: ['(a|aa)+$']}\n")
    config = load_config(config_file(tmp_path, f"rules: {{shipped: false, site: [{rules}]}}\n"
                                              "allowlist: {networks: []}"),
                         str(tmp_path / "state"))
    with pytest.raises(ConfigErrors) as info:
        Engine.from_config(config, with_store=False)
    assert [e.field for e in info.value.errors] == ["regex-timeout"]
    assert str(info.value.errors[0]).startswith(f"{rules}:2: error: rule evil:")


# -- reload ------------------------------------------------------------------------

def bump(path) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


SITE = """\
rules: {shipped: false, site: []}
allowlist: {networks: []}
envelope: {reject_unknown_sender_domain: false, reject_null_mx: false}
helo: {reject_unknown: false, reject_non_fqdn: true}
"""


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "mg.yaml"
    path.write_text(SITE)
    (tmp_path / "state").mkdir()
    eng = Engine.from_config(load_config(str(path), str(tmp_path / "state")), with_store=False)
    yield eng, path
    eng.close()


def helo_ids(eng: Engine, helo: str) -> list[str]:
    return [f.rule_id for f in eng.gates.on_helo(ClientInfo(addr="198.51.100.7", helo=helo))]


def test_reload_applies_changed_helo_settings(engine, caplog):
    eng, path = engine
    assert helo_ids(eng, "localhost") == ["helo:non-fqdn"]
    path.write_text(SITE.replace("reject_non_fqdn: true", "reject_non_fqdn: false"))
    bump(path)
    with caplog.at_level(logging.INFO, logger="milterguard.engine"):
        assert eng.reload_if_changed() is True
    assert helo_ids(eng, "localhost") == []
    assert any("event=reload" in r.getMessage() and "gates" in r.getMessage()
               for r in caplog.records)


def test_reload_applies_changed_greylist_settings(engine):
    eng, path = engine
    assert eng.greylist.check("198.51.100.7", "a@example.com", "b@example.net") is None
    outcomes: list[str] = []
    eng.greylist.on_outcome = outcomes.append
    path.write_text(SITE + "greylist: {enabled: true}\n")
    bump(path)
    assert eng.reload_if_changed() is True
    found = eng.greylist.check("198.51.100.7", "a@example.com", "b@example.net")
    assert found is not None and found.rule_id.startswith("greylist")
    assert outcomes, "the metrics hook moved to the new greylist"


@pytest.mark.parametrize("site, reason", [
    (SITE + "store: {queue_size: 10}\n", "store changed: restart"),
    (SITE.replace("reject_non_fqdn: true", "reject_non_fqdn: maybe"), "true or false"),
    (SITE + "greylist: {enabeld: true}\n", "did you mean"),
])
def test_reload_refuses_what_it_cannot_apply_and_says_why(engine, caplog, site, reason):
    eng, path = engine
    before = eng.policy
    path.write_text(site)
    bump(path)
    with caplog.at_level(logging.INFO, logger="milterguard.engine"):
        assert eng.reload_if_changed() is False
    assert eng.policy is before and helo_ids(eng, "localhost") == ["helo:non-fqdn"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("event=reload-failed" in m and reason in m for m in messages), messages
    assert not any(m.startswith("event=reload ") for m in messages)


def test_every_key_of_the_defaults_is_accepted(tmp_path):
    """The defaults file is the schema: writing it out as a site file passes."""
    from milterguard.config import default_config_text
    path = tmp_path / "full.yaml"
    path.write_text(textwrap.dedent(default_config_text()))
    validate_config(load_config(str(path), str(tmp_path / "state")))
