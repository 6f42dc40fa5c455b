"""The HTML report: self-contained, escaped, with charts, the table and the bans."""

from __future__ import annotations

import os
import re

from milterguard.cli import main as cli
from milterguard.cli import report as cmd_report
from milterguard.store.bans import BANS_SCHEMA
from milterguard.store import db
from milterguard.store.hits import HITS_SCHEMA, insert_hits
from milterguard.verdict import Action, Hit

NOW = 1_800_000_000.0
EVIL = "<script>alert(1)</script>"


def _fill(database: str) -> None:
    c = db.open_database(database, [HITS_SCHEMA, BANS_SCHEMA])
    insert_hits(c, [
        Hit(rule_id="helo:non-fqdn", category="bad-helo", stage="helo", action=Action.REJECT,
            client_addr="192.0.2.66", helo=EVIL, sender='"><img src=x>@example.com',
            detail="<b>bold</b>", ts=NOW - 120),
        Hit(rule_id="dnsbl:zen", category="dnsbl", stage="connect", action=Action.REJECT,
            client_addr="192.0.2.67", ts=NOW - 60),
    ])
    c.execute("INSERT INTO bans (addr, category, reason, created, expires)"
              " VALUES ('192.0.2.66', 'bad-helo', ?, ?, ?)",
              ("TXT <iframe src=x>", NOW - 30, NOW + 3600))
    c.close()


def test_report_page(tmp_path, monkeypatch, capsys, database):
    """The same page from a SQLite file and from PostgreSQL (``database``)."""
    state = str(tmp_path / "state")
    os.makedirs(state)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f'rules: {{site: []}}\ndatabase: "{database}"\n')
    _fill(database)
    out = str(tmp_path / "r.html")
    monkeypatch.setattr(cmd_report, "clock", lambda: NOW)
    assert cli.main(["report", "--html", out, "-c", str(cfg), "--state-dir", state,
                     "--since", "1d"]) == 0
    page = open(out, encoding="utf-8").read()
    # self-contained, no scripts
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<img" not in page and "<iframe" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "TXT &lt;iframe src=x&gt;" in page
    # charts and table
    assert page.count("<svg") == 2 and "<polyline" in page
    assert "Percentage of all incidents" in page
    assert "<td>helo</td>" in page and "<td>dnsbl</td>" in page
    assert "50.0%" in page
    assert "192.0.2.66" in page
    assert not os.path.exists(out + ".tmp")


def test_report_empty_store(tmp_path, monkeypatch):
    state = str(tmp_path / "state")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rules: {site: []}\n")
    out = str(tmp_path / "r.html")
    monkeypatch.setattr(cmd_report, "clock", lambda: NOW)
    assert cli.main(["report", "--html", out, "-c", str(cfg), "--state-dir", state]) == 0
    page = open(out, encoding="utf-8").read()
    assert "No hits in this period." in page and "No incidents" in page
