"""MessageViews: every rule target over messages written for these tests."""

from __future__ import annotations

import base64
import os

import pytest

from milterguard.content import decode, mime, views as views_mod
from milterguard.content.views import MessageViews

DATA = os.path.join(os.path.dirname(__file__), "data", "views")


def split(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Headers as the milter hands them (folded, str) and the body."""
    raw = raw.replace(b"\r\n", b"\n")
    head, _, body = raw.partition(b"\n\n")
    headers: list[tuple[str, str]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + line.decode("utf-8", "surrogateescape"))
        elif b":" in line:
            name, _, value = line.partition(b":")
            headers.append((name.decode(), value.decode("utf-8", "surrogateescape").strip()))
    return headers, body


def load(name: str, max_bytes: int = 1 << 20) -> MessageViews:
    with open(os.path.join(DATA, name), "rb") as fh:
        return MessageViews(*split(fh.read()), max_bytes)


# -- headers -------------------------------------------------------------------

def test_header_views_decoded_raw_and_counts() -> None:
    headers = [("Subject", "=?utf-8?B?Q2hlYXA=?=\n\t=?utf-8?B?IHdhdGNoZXM=?="),
               ("Received", "from a.example"), ("Received", "from b.example")]
    v = MessageViews(headers, b"", 1000)
    assert v.texts("header:subject") == ["Cheap watches"]
    assert v.texts("header:SUBJECT:raw") == [headers[0][1]]
    assert v.texts("header:Received") == ["from a.example", "from b.example"]
    assert v.texts("headers")[0] == "Subject: Cheap watches"
    assert v.texts("headers:raw")[0].startswith("Subject: =?utf-8?B?")
    assert v.header_count("received") == 2
    assert v.header_count("message-id") == 0
    assert v.texts("header:x-absent") == []


def test_folding_is_removed() -> None:
    v = MessageViews([("Subject", "first line\r\n second line")], b"", 100)
    assert v.texts("header:subject") == ["first line second line"]


def test_huge_header_is_bounded() -> None:
    # Only the first MAX_HEADER_BYTES are decoded (a hang would be caught by
    # the suite's per-test timeout, not by timing it here).
    word = "=?utf-8?B?" + base64.b64encode(b"x" * 3000).decode() + "?="
    huge = word + " " + "y" * 2_000_000
    text = MessageViews([("Subject", huge)], b"", 1000).texts("header:subject")[0]
    assert text == "x" * 3000 + " " + "y" * (decode.MAX_HEADER_BYTES - len(word) - 1)


# -- body ------------------------------------------------------------------------

def test_base64_body_single_part() -> None:
    body = base64.encodebytes("Grüße, buy cheap watches".encode("utf-8"))
    headers = [("Content-Type", "text/plain; charset=utf-8"),
               ("Content-Transfer-Encoding", "base64")]
    v = MessageViews(headers, body, 10000)
    assert v.texts("body") == ["Grüße, buy cheap watches"]
    assert v.texts("body:raw")[0].strip() == body.decode().strip()


def test_quoted_printable_body_with_soft_breaks() -> None:
    body = b"Caf=E9 cheap wat=\r\nches =3D deal\r\n"
    headers = [("Content-Type", 'text/plain; charset="iso-8859-1"'),
               ("Content-Transfer-Encoding", "Quoted-Printable")]
    assert MessageViews(headers, body, 1000).texts("body") == ["Café cheap watches = deal\r\n"]


def test_no_content_type_is_plain_text_and_8bit_falls_back() -> None:
    v = MessageViews([], "naïve ünïcode".encode("utf-8"), 1000)
    assert v.texts("body") == ["naïve ünïcode"]
    v = MessageViews([("Content-Type", "text/plain; charset=us-ascii")], b"caf\xe9", 1000)
    assert v.texts("body") == ["café"]           # mislabelled latin-1
    v = MessageViews([("Content-Type", "text/plain; charset=bogus-42")], b"caf\xc3\xa9", 1000)
    assert v.texts("body") == ["café"]


def test_utf16_body() -> None:
    body = "hello wörld".encode("utf-16")
    v = MessageViews([("Content-Type", "text/plain; charset=utf-16")], body, 1000)
    assert v.texts("body") == ["hello wörld"]


def test_html_body_rendered_and_raw_kept() -> None:
    html = ('<html><head><style>p{}</style></head><body><p>V&#105;a<!-- x -->gra '
            '&amp; c\u200bheap</p><div style="display:none">hash buster words</div>'
            '<a href="https://Shop.Example.COM/buy">here</a></body></html>')
    v = MessageViews([("Content-Type", "text/html; charset=utf-8")], html.encode(), 10000)
    (text,) = v.texts("body")
    assert "Viagra & c\u200bheap" in text
    assert "hash buster" not in text and "p{}" not in text
    assert v.texts("html") == [html]
    assert v.texts("urls") == ["https://Shop.Example.COM/buy"]
    assert v.texts("url-hosts") == ["shop.example.com"]


def test_html_meta_charset_used_when_header_has_none() -> None:
    html = '<meta charset="windows-1251"><p>'.encode() + "Привет".encode("cp1251")
    v = MessageViews([("Content-Type", "text/html")], html, 1000)
    assert v.texts("body") == ["Привет"]


def test_nested_multipart_and_rfc822() -> None:
    v = load("nested.eml")
    body = v.texts("body")
    assert "Grüße from the plain part, see https://docs.example.org/q3?x=1" in body
    assert "Hello from the HTML part\nclick" in body
    assert "Inner subject ä" in body
    assert "The forwarded message body." in body
    joined = "\n".join(body)
    assert "preamble" not in joined and "epilogue" not in joined
    assert "%PDF" not in joined                    # attachments are not body text
    assert v.texts("attachment-names") == ["tool.exe", "résumé.pdf"]
    assert v.texts("mime-types") == ["multipart/mixed", "multipart/alternative", "text/plain",
                                     "text/html", "message/rfc822", "application/octet-stream",
                                     "application/pdf"]
    assert v.texts("urls") == ["http://Links.Example.com/path", "https://docs.example.org/q3?x=1"]
    assert v.texts("url-hosts") == ["links.example.com", "docs.example.org"]
    assert v.texts("header:subject") == ["Quarterly report – draft"]
    assert v.defects == []


def test_broken_boundary_is_shown_as_text() -> None:
    v = load("broken_boundary.eml")
    assert any("cheap watches" in t for t in v.texts("body"))
    assert "multipart boundary not found" in v.defects


def test_unclosed_multipart_keeps_last_part() -> None:
    v = load("unclosed.eml")
    body = v.texts("body")
    assert body[0].strip() == "first part"
    assert "second part" in body[1]
    assert "multipart not closed" in v.defects


def test_digest_parts_default_to_rfc822() -> None:
    body = (b"--d\n\nSubject: one\n\nfirst digest body\n--d\n\nSubject: two\n\nsecond\n--d--\n")
    v = MessageViews([("Content-Type", 'multipart/digest; boundary="d"')], body, 1000)
    assert "first digest body" in v.texts("body")
    assert "two" in v.texts("body")


def test_uuencoded_part() -> None:
    import binascii
    line = binascii.b2a_uu(b"uuencoded secret text")
    body = b"begin 644 x.txt\n" + line + b"`\nend\n"
    v = MessageViews([("Content-Type", "text/plain"), ("Content-Transfer-Encoding", "x-uuencode")],
                     body, 1000)
    assert v.texts("body") == ["uuencoded secret text"]


# -- limits ------------------------------------------------------------------------

def test_bytes_scanned_are_capped() -> None:
    body = b"A" * 5000 + b" needle"
    v = MessageViews([("Content-Type", "text/plain")], body, 1000)
    assert len(v.texts("body")[0]) == 1000
    assert "needle" not in v.texts("body:raw")[0]


def test_parts_and_depth_are_capped() -> None:
    parts = b"".join(b"--p\nContent-Type: text/plain\n\npart %d\n" % i for i in range(1000)) + b"--p--\n"
    v = MessageViews([("Content-Type", "multipart/mixed; boundary=p")], parts, 1 << 20)
    assert len(v.texts("body")) < mime.MAX_PARTS
    assert any("parts" in d for d in v.defects)

    # 50 levels of nesting, each with its own boundary.
    body = b"deep text\n"
    for level in range(50):
        body = (b"--l%d\nContent-Type: multipart/mixed; boundary=l%d\n\n" % (level, level - 1)
                if level else b"--l0\nContent-Type: text/plain\n\n") + body + b"--l%d--\n" % level
    v = MessageViews([("Content-Type", "multipart/mixed; boundary=l49")], body, 1 << 20)
    assert v.texts("body") == []
    assert any("deep" in d for d in v.defects)


def test_views_are_lazy_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = views_mod.walk_message

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(views_mod, "walk_message", counting)
    v = MessageViews([("Subject", "x"), ("Content-Type", "text/plain")], b"body", 100)
    v.texts("header:subject")
    v.texts("headers")
    assert calls == []                         # header rules do not decode the body
    first = v.texts("body")
    assert v.texts("body") is first
    v.texts("urls")
    assert len(calls) == 1


@pytest.mark.parametrize("body", [
    b"", b"\x00\xff" * 100, b"--\n--\n", b"=?=?=?", b"<" * 5000, b"begin 644\n" + b"M" * 200,
])
@pytest.mark.parametrize("ctype", [
    "multipart/mixed; boundary=", "multipart/mixed", "text/html; charset=\"", "message/rfc822",
    "text/plain; charset=utf-7", "garbage", "multipart/alternative; boundary=\"--\"",
])
def test_malformed_input_never_raises(body: bytes, ctype: str) -> None:
    v = MessageViews([("Content-Type", ctype), ("Content-Transfer-Encoding", "base64")], body, 4096)
    for target in views_mod.MESSAGE_TARGETS + ("header:content-type", "header:x:raw"):
        assert isinstance(v.texts(target), list)


def test_unknown_target_is_empty() -> None:
    assert MessageViews([], b"x", 10).texts("nonsense") == []


def test_attached_eml_with_a_name_is_walked() -> None:
    body = (b"--o\nContent-Type: message/rfc822; name=\"fwd.eml\"\n"
            b"Content-Disposition: attachment; filename=\"fwd.eml\"\n\n"
            b"Subject: inner\nContent-Type: text/plain\n\nverify your account now\n--o--\n")
    v = MessageViews([("Content-Type", "multipart/mixed; boundary=o")], body, 10000)
    assert "verify your account now" in v.texts("body")
    assert v.texts("attachment-names") == ["fwd.eml"]


def test_set_body_keeps_header_views_and_recomputes_body_views():
    headers = [("Subject", "=?utf-8?q?caf=C3=A9?="), ("Content-Type", "text/plain")]
    v = MessageViews(headers, b"")
    assert v.texts("header:Subject") == ["café"]
    assert v.texts("body") == MessageViews(headers, b"").texts("body")
    v.set_body(b"hello body\r\n")
    assert v.texts("header:Subject") == ["café"]
    assert v.texts("body") == MessageViews(headers, b"hello body\r\n").texts("body")
    assert v.texts("body:raw") == ["hello body\r\n"]


def test_message_content_fields_come_from_the_header_index() -> None:
    headers = [("Received", "x"), ("CONTENT-TYPE", "text/html; charset=utf-8"),
               ("Content-Transfer-Encoding", "base64"), ("content-type", "text/plain"),
               ("Contentious", "no"), ("Content-Disposition", "inline")]
    body = b"PGI+aGk8L2I+\r\n"
    views = MessageViews(headers, body)
    assert views.texts("body") == ["hi"]           # no header index: the plain pass
    views = MessageViews(headers, b"")
    assert views.texts("header:received") == ["x"]  # end of headers builds the index
    views.set_body(body)
    assert views._message_content_fields() == mime.content_fields(headers)
    assert views.texts("body") == ["hi"]
    assert views.texts("mime-types") == ["text/html"]
