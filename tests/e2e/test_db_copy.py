"""`milterguard db copy --from SQLITE_PATH --to URL` into a real PostgreSQL."""

from __future__ import annotations

import pytest

from milterguard.cli.main import main
from milterguard.greylist.settings import GreylistSettings
from milterguard.greylist.triplets import Greylist
from milterguard.store import db
from milterguard.store.bans import BANS_SCHEMA, BanEngine, BanPolicy
from milterguard.store.hits import HITS_SCHEMA, insert_hits
from milterguard.config import load_config
from milterguard.verdict import Action, Hit

NOW = 1_800_000_000.0


def _fill_sqlite(path: str, tmp_path) -> None:
    conn = db.open_database(path, [HITS_SCHEMA, BANS_SCHEMA])
    insert_hits(conn, [Hit("helo.rule", "helo", "helo", Action.REJECT,
                           client_addr=f"192.0.2.{i}", ts=NOW - 100 + i) for i in range(1, 6)])
    config = load_config(None, str(tmp_path / "state"))
    engine = BanEngine(conn, BanPolicy.from_config(config), clock=lambda: NOW)
    engine.add("198.51.100.9", "manual test ban", 3600)
    conn.close()
    greylist = Greylist(GreylistSettings(enabled=True), path, clock=lambda: NOW)
    greylist.decide("203.0.113.5", "news@example.org", "alice@example.com")
    greylist.close()


def test_copy_moves_every_table_and_names_the_host(tmp_path, pg_url, capsys):
    source = str(tmp_path / "milterguard.db")
    _fill_sqlite(source, tmp_path)
    assert main(["db", "copy", "--from", source, "--to", pg_url,
                 "--host", "mx1.example.net"]) == 0
    out = capsys.readouterr().out
    assert "hits: 5 rows copied" in out and "bans: 1 rows copied" in out
    conn = db.connect(pg_url)
    try:
        rows = conn.execute("SELECT client_addr, host, ts FROM hits ORDER BY id").fetchall()
        assert [r[0] for r in rows] == [f"192.0.2.{i}" for i in range(1, 6)]
        assert {r[1] for r in rows} == {"mx1.example.net"}
        assert rows[0][2] == NOW - 99                      # timestamps exactly
        assert conn.execute("SELECT addr, reason FROM bans").fetchall() == [
            ("198.51.100.9", "manual test ban")]
        assert conn.execute("SELECT COUNT(*) FROM ban_events").fetchone()[0] == 1
        assert conn.execute("SELECT sender, rcpt FROM greylist_triplets").fetchall() == [
            ("news@example.org", "alice@example.com")]
    finally:
        conn.close()
    # The copied triplet is known in the shared database: the retry passes there.
    greylist = Greylist(GreylistSettings(enabled=True), pg_url, clock=lambda: NOW + 400)
    try:
        assert greylist.decide("203.0.113.5", "news@example.org",
                               "alice@example.com").outcome == "passed"
    finally:
        greylist.close()
    # A second host's file adds its hits; its ban on the same address keeps the first.
    second = str(tmp_path / "mx2.db")
    _fill_sqlite(second, tmp_path)
    assert main(["db", "copy", "--from", second, "--to", pg_url, "--host", "mx2.example.net"]) == 0
    conn = db.connect(pg_url)
    try:
        hosts = dict(conn.execute("SELECT host, COUNT(*) FROM hits GROUP BY host").fetchall())
        assert hosts == {"mx1.example.net": 5, "mx2.example.net": 5}
        assert conn.execute("SELECT COUNT(*) FROM bans").fetchone()[0] == 1
    finally:
        conn.close()


@pytest.mark.parametrize("args, message", [
    (["--from", "/nonexistent/milterguard.db"], "no such file"),
    (["--from", "postgresql://postgres@127.0.0.1/x"], "takes a SQLite file"),
])
def test_copy_refuses_bad_sources_clearly(args, message, pg_url, capsys):
    assert main(["db", "copy", *args, "--to", pg_url]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_copy_brings_the_learned_model_once(tmp_path, pg_url, capsys):
    from milterguard.classifier.tokendb import TokenWriter, load_counts, open_tokendb
    source = str(tmp_path / "milterguard.db")
    conn = open_tokendb(source)
    writer = TokenWriter(conn, clock=lambda: NOW)
    writer.learn("d1", {"pill", "cheap"}, "spam")
    writer.learn("d2", {"minutes", "meeting"}, "ham")
    writer.commit()
    conn.close()
    assert main(["db", "copy", "--from", source, "--to", pg_url, "--host", "mx1"]) == 0
    dst = db.connect(pg_url)
    try:
        counts, serial = load_counts(dst)          # what a daemon loads at start
        assert set(counts.tokens) == {"pill", "cheap", "minutes", "meeting"}
        assert (counts.spam, counts.ham) == (1, 1) and serial >= 1
    finally:
        dst.close()
    capsys.readouterr()
    # A second file's model does not pile onto the first.
    assert main(["db", "copy", "--from", source, "--to", pg_url, "--host", "mx2"]) == 0
    assert "learned tokens: not copied" in capsys.readouterr().out
