"""The HTML report in headless Chromium (Debian package ``chromium``).

The page is rendered from a store holding a hit whose HELO is a script
tag; Chromium takes a screenshot (a non-trivial PNG) and dumps the DOM,
which must show the HELO as text and contain no script element.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile

import pytest

from milterguard.cli import main as cli
from milterguard.cli import report as cmd_report
from milterguard.store.bans import BANS_SCHEMA
from milterguard.store import db
from milterguard.store.hits import HITS_SCHEMA, insert_hits
from milterguard.verdict import Action, Hit

NOW = 1_800_000_000.0
EVIL_HELO = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(profile: str, *args: str) -> subprocess.CompletedProcess:
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}", *args]
    # Chromium starts helper processes in its own process group; kill the
    # group if it hangs so nothing outlives the test.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.fixture
def report(tmp_path, monkeypatch) -> str:
    state = str(tmp_path / "state")
    os.makedirs(state)
    conn = db.open_database(os.path.join(state, "milterguard.db"), [HITS_SCHEMA, BANS_SCHEMA])
    hits = []
    for i in range(40):
        hits.append(Hit(rule_id=["dnsbl:zen", "helo:non-fqdn", "gtube", "pharmacy-subject"][i % 4],
                        category=["dnsbl", "bad-helo", "gtube", "pharmacy"][i % 4],
                        stage=["connect", "helo", "eom", "eoh"][i % 4], action=Action.REJECT,
                        client_addr=f"198.51.100.{i % 9}", helo="mail.example.org",
                        ts=NOW - 80000 + i * 1900))
    hits.append(Hit(rule_id="helo:non-fqdn", category="bad-helo", stage="helo",
                    action=Action.REJECT, client_addr="192.0.2.66", helo=EVIL_HELO,
                    sender="<img src=x onerror=alert(2)>@example.com", ts=NOW - 30))
    insert_hits(conn, hits)
    conn.execute("INSERT INTO bans (addr, category, reason, created, expires, hit_count)"
                 " VALUES ('192.0.2.66', 'bad-helo', ?, ?, ?, 5)",
                 ("5 hits: " + EVIL_HELO, NOW - 20, NOW + 3600))
    conn.close()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rules: {site: []}\n")
    out = str(tmp_path / "report.html")
    monkeypatch.setattr(cmd_report, "clock", lambda: NOW)
    assert cli.main(["report", "--html", out, "-c", str(cfg), "--state-dir", state,
                     "--since", "1d"]) == 0
    return out


def png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_report_renders_in_chromium(report, tmp_path):
    profile = tempfile.mkdtemp(prefix="mg-chromium-")
    try:
        shot = str(tmp_path / "report.png")
        proc = chromium(profile, f"--screenshot={shot}", "--window-size=1200,1600",
                        "file://" + report)
        assert os.path.exists(shot), proc.stderr[-2000:]
        assert png_size(shot) == (1200, 1600)
        # A blank page compresses to a few kB; charts and tables do not.
        assert os.path.getsize(shot) > 30_000
        if os.environ.get("MG_KEEP_SCREENSHOT"):
            shutil.copy(shot, os.environ["MG_KEEP_SCREENSHOT"])

        dom = chromium(profile, "--dump-dom", "file://" + report).stdout
        assert "<svg" in dom and "Incidents by vector and category" in dom
        # The HELO is text in a cell, escaped again when serialised; no element.
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
        assert not re.search(r"<script\b", dom, re.I)
        assert not re.search(r"<img\b", dom, re.I)
        assert "192.0.2.66" in dom
    finally:
        shutil.rmtree(profile, ignore_errors=True)
