"""Message files: envelope pseudo-headers, line endings, mbox separators."""

from __future__ import annotations

import pytest

from milterguard.errors import MilterguardError
from milterguard.replay.message import parse_message


def test_replay_headers_give_the_envelope_and_are_stripped():
    msg = parse_message(
        b"X-Replay-Client: addr=198.51.100.9 name=relay.example.org\r\n"
        b"X-Replay-Mail-From: <>\r\n"
        b"X-Replay-Rcpt-To: a@example.net, b@example.net\r\n"
        b"X-Replay-Rcpt-To: <c@example.net>\r\n"
        b"X-Replay-Macro: {cipher}=TLS_AES_128\r\n"
        b"Subject: hi\r\n\r\nbody\r\n")
    env = msg.envelope
    assert (env.client_addr, env.client_name, env.helo) == \
        ("198.51.100.9", "relay.example.org", "relay.example.org")
    assert env.sender == ""
    assert env.recipients == ["a@example.net", "b@example.net", "c@example.net"]
    assert env.macros == {"cipher": "TLS_AES_128"}
    assert msg.headers == [(b"Subject", b" hi")]


def test_defaults_come_from_from_and_to():
    msg = parse_message(b"From: A <a@example.org>\nTo: b@example.net, "
                               b"C <c@example.net>\n\nx\n")
    env = msg.envelope
    assert (env.client_addr, env.client_name, env.helo) == \
        ("192.0.2.1", "client.example.com", "client.example.com")
    assert env.sender == "a@example.org"
    assert env.recipients == ["b@example.net", "c@example.net"]
    bare = parse_message(b"Subject: x\n\nbody\n").envelope
    assert (bare.sender, bare.recipients) == ("sender@example.com", ["rcpt@example.net"])


def test_any_line_ending_gives_a_crlf_body_and_folded_headers_keep_newlines():
    lf = parse_message(b"Subject: a\n  b\n\nline1\nline2\n")
    crlf = parse_message(b"Subject: a\r\n  b\r\n\r\nline1\r\nline2\r\n")
    noeol = parse_message(b"Subject: a\r\n  b\r\n\r\nline1\r\nline2")
    assert lf.body == crlf.body == noeol.body == b"line1\r\nline2\r\n"
    assert lf.headers == crlf.headers == [(b"Subject", b" a\n  b")]


def test_mbox_separator_and_headerless_line_start_the_body():
    msg = parse_message(b"From a@example.org Mon Jan  1 00:00:00 2024\n"
                               b"Subject: s\nnot a header\nmore\n")
    assert msg.headers == [(b"Subject", b" s")]
    assert msg.body == b"not a header\r\nmore\r\n"


def test_bad_pseudo_header_is_an_error():
    with pytest.raises(MilterguardError):
        parse_message(b"X-Replay-Colour: blue\n\nx\n")
    with pytest.raises(MilterguardError):
        parse_message(b"X-Replay-Macro: novalue\n\nx\n")
