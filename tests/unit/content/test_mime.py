"""content.mime: the one bounded walk over a message's MIME tree."""

from __future__ import annotations

from milterguard.content.mime import (MAX_DEPTH, MimeWalk, content_fields, split_multipart,
                                      split_part, walk_message)

ALTERNATIVE = (b"preamble, not shown\r\n"
               b"--b1 \r\n"
               b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
               b"caf\xc3\xa9 menu\r\n"
               b"--b1\r\n"
               b"Content-Type: text/html\r\n"
               b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
               b"<p>see <a href=3D\"https://menu.example/\">the menu</a></p>\r\n"
               b"--b1\r\n"
               b"Content-Type: application/pdf; name=\"menu.pdf\"\r\n"
               b"Content-Disposition: attachment\r\n\r\n"
               b"%PDF-1.4 not text\r\n"
               b"--b1--\r\n"
               b"epilogue, not shown\r\n")


def test_one_walk_collects_what_every_view_needs() -> None:
    walk = walk_message([("Content-Type", 'multipart/alternative; boundary="b1"')],
                        ALTERNATIVE, 10_000)
    assert isinstance(walk, MimeWalk)
    assert walk.types == ["multipart/alternative", "text/plain", "text/html", "application/pdf"]
    assert walk.texts[0] == "café menu"   # the line break before a delimiter is its own
    assert "the menu" in walk.texts[1] and len(walk.texts) == 2
    assert walk.html == ['<p>see <a href="https://menu.example/">the menu</a></p>']
    assert walk.links == ["https://menu.example/"]
    assert walk.names == ["menu.pdf"]
    assert walk.defects == []
    assert walk.parts == 4


def test_known_top_fields_replace_a_scan_of_the_message_header() -> None:
    # MessageViews passes the Content-* fields from its header index.
    walk = walk_message([("Content-Type", "text/plain")], b"<b>hi</b>", 100,
                        top_fields={"content-type": "text/html"})
    assert walk.types == ["text/html"] and walk.texts == ["hi"]


def test_defects_are_listed_not_raised() -> None:
    unclosed = walk_message([("Content-Type", "multipart/mixed; boundary=x")],
                            b"--x\n\nfirst\n--x\n\nsecond\n", 100)
    assert unclosed.texts == ["first", "second\n"]
    assert unclosed.defects == ["multipart not closed"]
    missing = walk_message([("Content-Type", "multipart/mixed; boundary=x")], b"no parts", 100)
    assert missing.texts == ["no parts"] and missing.defects == ["multipart boundary not found"]
    bad = walk_message([("Content-Type", "no slash")], b"text", 100)
    assert bad.types == ["text/plain"] and bad.defects == ["bad content-type 'no slash'"]


def test_nesting_is_bounded() -> None:
    body = b"x"
    for level in range(MAX_DEPTH + 2):
        body = (b"--l%d\nContent-Type: multipart/mixed; boundary=l%d\n\n" % (level, level - 1)
                if level else b"--l0\nContent-Type: text/plain\n\n") + body + b"\n--l%d--\n" % level
    walk = walk_message([("Content-Type", f"multipart/mixed; boundary=l{MAX_DEPTH + 1}")],
                        body, 10_000)
    assert walk.texts == []
    assert walk.defects == [f"multipart nested deeper than {MAX_DEPTH}; not scanned"]


def test_split_part() -> None:
    assert split_part(b"A: 1\r\nB: two\r\n  lines\r\n\r\nbody\r\n") == \
        ([("A", "1"), ("B", "two\n  lines")], b"body\r\n")
    assert split_part(b"\r\nonly body") == ([], b"only body")
    assert split_part(b"not a header line\nbody") == ([], b"not a header line\nbody")


def test_split_multipart_takes_the_line_break_before_a_delimiter() -> None:
    defects: list[str] = []
    assert split_multipart(b"--q\r\none\r\n--q\r\ntwo\r\n\r\n--q--\r\n", "q", defects) == \
        [b"one", b"two\r\n"]
    assert defects == []
    assert split_multipart(b"nothing here", "q", defects) is None


def test_content_fields_first_of_each() -> None:
    assert content_fields([("Subject", "s"), ("Content-Type", "a/b"), ("content-type", "c/d"),
                           ("CONTENT-ID", "<1>")]) == {"content-type": "a/b", "content-id": "<1>"}
