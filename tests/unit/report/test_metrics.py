"""Metrics: counters, the engine wiring (hits, DNSBL, greylist), the HTTP listener."""

from __future__ import annotations

import os
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from milterguard.greylist.settings import GreylistSettings
from milterguard.greylist.triplets import Greylist
from milterguard.report import metrics as mmod
from milterguard.errors import MilterguardError
from milterguard.store.bans import BANS_SCHEMA
from milterguard.store import db
from milterguard.store.hits import HITS_SCHEMA
from milterguard.verdict import Action, Hit
from milterguard.yamlsrc import load_yaml_text

NOW = 1_800_000_000.0


def samples(registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class FakeDnsbl:
    def check(self, addr, deadline=None):
        zone = SimpleNamespace(name="zen")
        return [SimpleNamespace(zone=zone, status="listed", error=""),
                SimpleNamespace(zone=SimpleNamespace(name="slow"), status="unknown",
                                error="timeout")]


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now


def real_greylist(directory, enabled=True):
    """The daemon's own Greylist on a file in ``directory``, delay 5 minutes."""
    settings = GreylistSettings(enabled=enabled, delay=300, auto_allowlist_after=0)
    return Greylist(settings, os.path.join(directory, "grey.db"), clock=Clock())


class FakeEngine:
    def __init__(self, greylist=None):
        self.gates = SimpleNamespace(dnsbl=FakeDnsbl())
        self.greylist = greylist
        self.recorded = []
        self.reloads = 3
        self.reload_failures = 1

    def record(self, hits):
        self.recorded += hits


def test_counters_and_attach(tmp_path):
    path = str(tmp_path / "m.db")
    conn = db.open_database(path, [HITS_SCHEMA, BANS_SCHEMA])
    conn.execute("INSERT INTO bans (addr, created, expires) VALUES ('192.0.2.1', 0, ?)",
                 (NOW + 60,))
    conn.execute("INSERT INTO bans (addr, created, expires) VALUES ('192.0.2.2', 0, ?)",
                 (NOW - 60,))
    conn.close()
    m = mmod.Metrics()
    greylist = real_greylist(str(tmp_path))
    engine = FakeEngine(greylist)
    m.attach(engine, path, clock=lambda: NOW)
    assert engine.metrics is m
    engine.record([Hit("gtube", "gtube", "eom", Action.REJECT),
                   Hit("trial", "pharmacy", "eom", Action.CONTINUE, observe=True)])
    assert len(engine.recorded) == 2            # still reaches the store
    engine.gates.dnsbl.check("192.0.2.9")
    assert greylist.check("192.0.2.9", "s@example.com", "r@example.net").rule_id == "greylist"
    greylist.clock.now += 301
    assert greylist.check("192.0.2.9", "s@example.com", "r@example.net") is None
    assert greylist.check("192.0.2.9", "s@example.com", "r@example.net") is None
    m.message("reject")
    m.message("reject")
    m.message("accept")
    m.stage_latency("eom", 0.003)
    s = samples(m.registry)
    assert s[("milterguard_messages_total", (("action", "reject"),))] == 2
    assert s[("milterguard_messages_total", (("action", "accept"),))] == 1
    assert s[("milterguard_hits_total", (("category", "gtube"), ("observe", "0"), ("rule", "gtube")))] == 1
    assert s[("milterguard_hits_total", (("category", "pharmacy"), ("observe", "1"), ("rule", "trial")))] == 1
    assert s[("milterguard_dnsbl_results_total", (("result", "listed"), ("zone", "zen")))] == 1
    assert s[("milterguard_dnsbl_results_total", (("result", "unknown"), ("zone", "slow")))] == 1
    assert s[("milterguard_dnsbl_timeouts_total", (("zone", "slow"),))] == 1
    assert ("milterguard_dnsbl_timeouts_total", (("zone", "zen"),)) not in s
    assert s[("milterguard_greylist_total", (("outcome", "new"),))] == 1
    assert s[("milterguard_greylist_total", (("outcome", "passed"),))] == 1
    assert s[("milterguard_greylist_total", (("outcome", "known"),))] == 1
    assert s[("milterguard_stage_duration_seconds_count", (("stage", "eom"),))] == 1
    assert s[("milterguard_stage_duration_seconds_bucket", (("le", "0.005"), ("stage", "eom")))] == 1
    assert s[("milterguard_stage_duration_seconds_bucket", (("le", "0.0025"), ("stage", "eom")))] == 0
    assert s[("milterguard_rule_reloads_total", ())] == 3
    assert s[("milterguard_rule_reload_failures_total", ())] == 1
    assert s[("milterguard_active_bans", ())] == 1


def test_greylist_disabled_is_not_asked(tmp_path):
    m = mmod.Metrics()
    engine = FakeEngine(real_greylist(str(tmp_path), enabled=False))
    m.attach(engine, None)
    assert engine.greylist.check("192.0.2.9", "s@example.com", "new@example.net") is None
    assert not any(k[0] == "milterguard_greylist_total" for k in samples(m.registry))


def test_active_bans_without_table(tmp_path):
    m = mmod.Metrics()
    m.attach(FakeEngine(), str(tmp_path / "missing.db"))
    assert samples(m.registry)[("milterguard_active_bans", ())] == 0
    assert not os.path.exists(tmp_path / "missing.db")   # read-only: never created


@pytest.mark.parametrize("text,expected", [
    ('""', None), ('"9899"', ("127.0.0.1", 9899)), ('"127.0.0.2:9000"', ("127.0.0.2", 9000)),
    ('"[::1]:9899"', ("::1", 9899)), ("9899", ("127.0.0.1", 9899))])
def test_listen_setting(text, expected):
    section = load_yaml_text(f"listen: {text}\n", "site.yaml")
    assert section.listen_address("listen") == expected


def test_listen_setting_error_names_file_and_line():
    section = load_yaml_text("x: 1\nlisten: nonsense:port\n", "site.yaml")
    with pytest.raises(MilterguardError) as exc:
        section.listen_address("listen")
    assert "site.yaml:2: field listen" in str(exc.value)


def test_http_listener_on_loopback():
    m = mmod.Metrics()
    port = m.serve("127.0.0.1", 0)
    try:
        m.message("tag")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        assert 'milterguard_messages_total{action="tag"} 1.0' in body
    finally:
        m.close()
