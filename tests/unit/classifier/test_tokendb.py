"""Learned counts in the database: learning, forgetting, incremental loads, digests."""

from __future__ import annotations



from milterguard.classifier.tokendb import (TokenWriter, load_counts, message_digest,
                                            open_tokendb)


def test_learn_is_idempotent_relabels_and_forgets(database):
    conn = open_tokendb(database)      # on SQLite and on PostgreSQL
    writer = TokenWriter(conn)
    assert writer.learn("d1", {"x", "y"}, "spam").learned
    writer.commit()
    assert not writer.learn("d1", {"x", "y"}, "spam").learned     # same label: nothing
    moved = writer.learn("d1", {"x", "y"}, "ham")
    assert moved.learned and moved.relabelled
    writer.commit()
    counts, serial = load_counts(conn)
    assert counts.get("x") == (0, 1) and (counts.spam, counts.ham) == (0, 1)
    assert writer.forget("d1", {"x", "y"}).forgotten
    assert not writer.forget("d2", {"x"}).forgotten               # never learned
    writer.commit()
    counts2, serial2 = load_counts(conn, counts, serial)          # incremental
    assert serial2 > serial and "x" not in counts2.tokens
    assert (counts2.spam, counts2.ham) == (0, 0)


def test_incremental_load_reads_only_changed_rows(database):
    conn = open_tokendb(database)
    writer = TokenWriter(conn)
    writer.learn("d1", {"old"}, "ham")
    writer.commit()
    counts, serial = load_counts(conn)
    writer.learn("d2", {"new"}, "spam")
    writer.commit()
    rows = conn.execute("SELECT COUNT(*) FROM bayes_tokens WHERE serial > ?", (serial,)).fetchone()
    assert rows[0] == 1
    counts, _ = load_counts(conn, counts, serial)
    assert counts.get("old") == (0, 1) and counts.get("new") == (1, 0)


def test_digest_ignores_line_endings_and_delivery_headers():
    one = b"From x@example.com Mon Mar  2 10:00:00 2026\nReturn-Path: <a@example.org>\nSubject: s\n\nbody\n"
    two = b"Delivered-To: b@example.com\r\nSubject: s\r\n\r\nbody  \r\n\r\n"
    assert message_digest(one) == message_digest(two)
    assert message_digest(one) != message_digest(one.replace(b"body", b"other"))
