"""What the classifier counts: tokens from the decoded views."""

from __future__ import annotations



from tests.classifier_mail import tokens_of


def test_tokens_come_from_decoded_views():
    raw = (b"From: Alice <alice@example.org>\r\nSubject: =?utf-8?b?Q2hlYXAgUGlsbHM=?=\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
           b"\r\n" + __import__("base64").b64encode(
               b"Visit http://shop.example.net/x for bargains aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n")
           + b"\r\n")
    tokens = tokens_of(raw)
    assert {"s:cheap", "s:pills", "visit", "bargains", "u:shop.example.net",
            "u-tail:example.net", "from-dom:example.org", "from-name:alice",
            "h:subject", "h-missing:message-id", "charset:utf-8"} <= tokens
    assert "skip:a30" in tokens          # a long run by first letter and length
    assert not any(t.startswith("http") for t in tokens)


def test_replay_pseudo_headers_are_not_tokens():
    tokens = tokens_of(b"X-Replay-Helo: a.example\r\nSubject: hi there\r\n\r\nbody text\r\n")
    assert not any("replay" in t for t in tokens)
