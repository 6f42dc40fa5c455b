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


# -- issue 12 finding 10: what Postfix hands the milter -----------------------------

def test_a_nul_ends_a_header_value_as_in_postfix():
    from milterguard.replay.message import header_as_postfix_sends
    assert header_as_postfix_sends(b"Subject", b" hello\0 viagra") == b" hello"
    assert header_as_postfix_sends(b"Subject", b" plain") == b" plain"


def test_long_headers_are_cut_where_postfix_cuts_them():
    from milterguard.replay.message import POSTFIX_HEADER_LIMIT, header_as_postfix_sends
    value = header_as_postfix_sends(b"X-Big", b" " + b"a" * 120000)
    assert len(b"X-Big:" + value) == POSTFIX_HEADER_LIMIT
    folded = b"\n ".join([b"b" * 998] * 70)
    value = header_as_postfix_sends(b"X-Fold", b" " + folded)
    assert value.endswith(b"b" * 998) and value.count(b"\n") == 58   # 59 whole lines


def test_missing_headers_are_added_as_postfix_cleanup_adds_them():
    from datetime import datetime, timezone
    from milterguard.replay.conversation import missing_headers
    when = datetime(2026, 11, 30, 9, 27, 14, tzinfo=timezone.utc)
    msg = parse_message(b"X-Replay-Mail-From: <>\nSubject: x\n\nbody\n")
    assert missing_headers(msg, "B69842262B1", when) == [
        (b"Message-Id", b" <20261130092714.B69842262B1@mx.example.net>"),
        (b"Date", b" Mon, 30 Nov 2026 09:27:14 +0000 (UTC)"),
        (b"From", b" MAILER-DAEMON")]
    full = parse_message(b"From: a@example.com\nDate: x\nMessage-ID: <1@example.com>\n\nb\n")
    assert missing_headers(full, "Q", when) == []
    assert missing_headers(parse_message(b"Date: x\n\nb\n"), "Q", when)[-1] == \
        (b"From", b" sender@example.com")
