"""`milterguard learn`: files, directories, mbox and Maildir; idempotent;
--forget; the summary; and a daemon-side Classifier reading what it wrote."""

from __future__ import annotations

import os

from tests.classifier_mail import make_message, write_messages
from milterguard.classifier.tokendb import load_counts, open_tokendb
from milterguard.cli.main import main
from milterguard.replay.mailboxes import mail_sources, split_mbox


def counts_in(state):
    conn = open_tokendb(os.path.join(state, "milterguard.db"))
    try:
        return load_counts(conn)[0]
    finally:
        conn.close()


def test_learn_dirs_twice_is_idempotent(tmp_path, capsys):
    write_messages(tmp_path / "spam" / "deeper", "spam", 5)
    write_messages(tmp_path / "ham", "ham", 4)
    state = str(tmp_path / "state")
    args = ["learn", "--state-dir", state, "--spam", str(tmp_path / "spam"),
            "--ham", str(tmp_path / "ham")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "learned 5 spam and 4 ham" in out and "classifier inactive" in out
    assert main(args) == 0
    assert "learned 0 spam and 0 ham" in capsys.readouterr().out
    counts = counts_in(state)
    assert (counts.spam, counts.ham) == (5, 4)


def test_learn_with_the_other_label_moves_and_forget_removes(tmp_path, capsys):
    paths = write_messages(tmp_path / "m", "spam", 3)
    state = str(tmp_path / "state")
    assert main(["learn", "--state-dir", state, "--spam", str(tmp_path / "m")]) == 0
    assert main(["learn", "--state-dir", state, "--ham", str(paths[0])]) == 0
    assert "(1 moved from the other label)" in capsys.readouterr().out
    assert (counts_in(state).spam, counts_in(state).ham) == (2, 1)
    assert main(["learn", "--state-dir", state, "--forget", "--spam", str(tmp_path / "m")]) == 0
    assert "forgot 3 message(s)" in capsys.readouterr().out
    counts = counts_in(state)
    assert (counts.spam, counts.ham, len(counts.tokens)) == (0, 0, 0)


def test_mbox_and_maildir(tmp_path, capsys):
    mbox = tmp_path / "spam.mbox"
    parts = []
    for i in range(3):
        body = make_message("spam", i).replace(b"\r\n", b"\n")
        body += b">From the quoted line\n"
        parts.append(b"From sender@example.net Mon Mar  2 10:00:00 2026\n" + body + b"\n")
    mbox.write_bytes(b"".join(parts))
    messages = list(split_mbox(mbox.read_bytes(), "spam.mbox"))
    assert [n for n, _ in messages] == ["spam.mbox:1", "spam.mbox:2", "spam.mbox:3"]
    assert b"\nFrom the quoted line" in messages[0][1]     # >From unquoted
    assert not messages[1][1].startswith(b"From ")
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1.host:2,S").write_bytes(make_message("ham", 1))
    (maildir / "new" / "2.host").write_bytes(make_message("ham", 2))
    (maildir / "tmp" / "3.host").write_bytes(make_message("ham", 3))   # half-delivered
    assert len(mail_sources([str(maildir)])) == 2
    state = str(tmp_path / "state")
    assert main(["learn", "--state-dir", state, "--spam", str(mbox),
                 "--ham", str(maildir)]) == 0
    assert "learned 3 spam and 2 ham" in capsys.readouterr().out


def test_missing_path_is_a_clear_error(tmp_path, capsys):
    assert main(["learn", "--state-dir", str(tmp_path), "--spam", str(tmp_path / "nope")]) != 0
    err = capsys.readouterr().err
    assert "no such file or directory" in err and "nope" in err
    assert "Traceback" not in err


def test_progress_bar_when_asked(tmp_path, capsys):
    write_messages(tmp_path / "s", "spam", 2)
    assert main(["learn", "--state-dir", str(tmp_path / "st"), "--progress", "always",
                 "--spam", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    assert "2/2 files" in err and "[" in err


def test_explain_shows_probability_and_strongest_tokens(tmp_path, capsys):
    import json
    write_messages(tmp_path / "spam", "spam", 25)
    write_messages(tmp_path / "ham", "ham", 25)
    cfg = tmp_path / "mg.yaml"
    cfg.write_text("rules: {shipped: false, site: []}\n"
                   "classifier: {min_spam: 20, min_ham: 20}\n")
    state = str(tmp_path / "state")
    assert main(["learn", "-c", str(cfg), "--state-dir", state, "--spam", str(tmp_path / "spam"),
                 "--ham", str(tmp_path / "ham")]) == 0
    assert "classifier active" in capsys.readouterr().out
    probe = tmp_path / "probe.eml"
    probe.write_bytes(make_message("spam", 777))
    assert main(["explain", "-c", str(cfg), "--state-dir", state, "--json", str(probe)]) == 0
    report = json.loads(capsys.readouterr().out)
    bayes = report["classifier"]
    assert bayes["state"] == "active" and bayes["band"] == "bayes-spam-certain"
    assert bayes["clues"][0]["spam_prob"] > 0.9
    assert report["verdict"]["action"] == "reject"
    assert main(["explain", "-c", str(cfg), "--state-dir", state, str(probe)]) == 0
    text = capsys.readouterr().out
    assert "== classifier" in text and "band bayes-spam-certain" in text
