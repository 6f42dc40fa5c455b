"""Walking replay inputs: directories, and files that are not messages."""

from __future__ import annotations

import os

import pytest

from milterguard.replay.files import collect_files
from tests.unit.replay.samples import write_corpus


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path)


def test_directory_input_skips_non_message_files(corpus):
    files = collect_files([str(corpus)], exclude=[str(corpus / "expected.yaml")])
    assert [os.path.relpath(f, corpus) for f in files] == \
        ["ham/1.eml", "ham/2.eml", "spam/1.eml"]


def test_maildir_and_mbox_messages(tmp_path):
    from milterguard.replay.files import replay_files
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1.host:2,S").write_bytes(b"Subject: a\r\n\r\nx\r\n")
    (maildir / "new" / "2.host").write_bytes(b"Subject: b\r\n\r\ny\r\n")
    (maildir / "tmp" / "3.host").write_bytes(b"Subject: half-delivered\r\n\r\nz\r\n")
    mbox = tmp_path / "box.mbox"
    mbox.write_bytes(b"From a@example.com Mon Mar  2 10:00:00 2026\nSubject: one\n\nbody 1\n\n"
                     b"From b@example.com Mon Mar  2 10:00:01 2026\nSubject: two\n\nbody 2\n")
    files = collect_files([str(maildir), str(mbox)])
    assert [os.path.relpath(f, tmp_path) for f in files] == \
        ["Maildir/cur/1.host:2,S", "Maildir/new/2.host", "box.mbox"]
    # Nothing listens: every message is an error result, under its own name.
    results = list(replay_files(f"unix:{tmp_path}/none.sock", files, timeout=1))
    assert [os.path.relpath(r.file, tmp_path) for r in results] == \
        ["Maildir/cur/1.host:2,S", "Maildir/new/2.host", "box.mbox:1", "box.mbox:2"]
    assert {r.action for r in results} == {"error"}
