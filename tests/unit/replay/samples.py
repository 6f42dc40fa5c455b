"""A replay message file and a small corpus, for the replay tests of both
tiers (tests/unit/replay/, tests/e2e/test_replay_milters.py)."""

from __future__ import annotations

import pathlib

#: Envelope pseudo-headers, a folded header, a body line.
BASIC = b"""\
X-Replay-Client: 192.0.2.7 mail.example.com
X-Replay-Helo: helo.example.com
X-Replay-Auth: alice
X-Replay-Macro: tls_version=TLSv1.3
From: Sender <s@example.org>
To: x@example.net
Subject: hello
X-Folded: one
 two

Body line
"""


def write_corpus(tmp_path: pathlib.Path) -> pathlib.Path:
    """Two ham and one spam message, a README and their expected.yaml."""
    (tmp_path / "ham").mkdir()
    (tmp_path / "spam").mkdir()
    (tmp_path / "ham" / "1.eml").write_bytes(BASIC)
    (tmp_path / "ham" / "2.eml").write_bytes(BASIC.replace(b"\n", b"\r\n"))
    (tmp_path / "spam" / "1.eml").write_bytes(BASIC.replace(b"hello", b"FORBIDDEN"))
    (tmp_path / "README.md").write_text("notes, not mail\n")
    (tmp_path / "expected.yaml").write_text(
        "ham/1.eml: accept\n"
        "ham/2.eml:\n  action: accept\n  stage: eom\n  hits: [test-accept]\n"
        "spam/1.eml:\n  action: reject\n  reply: '550 5.7.1'\n  hits: subject-keyword\n")
    return tmp_path
