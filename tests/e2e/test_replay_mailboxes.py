"""`milterguard replay` and `explain` on an mbox file and a Maildir, against
the real daemon: every message gets its own verdict under its own name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(subject: str, body: str) -> bytes:
    return (f"From: a@example.com\nTo: b@example.net\nSubject: {subject}\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.com>\n"
            f"Date: Mon, 2 Mar 2026 10:00:00 +0000\n\n{body}\n").encode()


def test_replay_and_explain_read_mbox_and_maildir(tmp_path, milterguard_factory):
    daemon = milterguard_factory("""
envelope: {reject_unknown_sender_domain: false, reject_null_mx: false}
helo: {reject_unknown: false}
allowlist: {networks: []}
""")
    mbox = tmp_path / "mixed.mbox"
    mbox.write_bytes(b"From a@example.com Mon Mar  2 10:00:00 2026\n" + message("hello", "lunch?")
                     + b"\nFrom a@example.com Mon Mar  2 10:00:01 2026\n"
                     + message("test", GTUBE))
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.host").write_bytes(message("gtube again", GTUBE))
    run = [sys.executable, "-m", "milterguard"]
    out = subprocess.run(run + ["replay", "--socket", daemon.spec, "--json", str(mbox),
                                str(maildir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    results = {os.path.relpath(r["file"], tmp_path): r for r in map(json.loads,
                                                                    out.stdout.splitlines())}
    assert {name: (r["action"], r["hits"]) for name, r in results.items()} == {
        "mixed.mbox:1": ("accept", []),
        "mixed.mbox:2": ("reject", ["gtube"]),
        "Maildir/new/1.host": ("reject", ["gtube"]),
    }
    out = subprocess.run(run + ["explain", "-c", daemon.config, "--state-dir", str(tmp_path / "x"),
                                "--json", str(mbox)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    reports = json.loads(out.stdout)
    assert [r["file"].rsplit("/", 1)[-1] for r in reports] == ["mixed.mbox:1", "mixed.mbox:2"]
    assert [r["verdict"]["action"] for r in reports] == ["accept", "reject"]
