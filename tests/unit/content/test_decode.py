"""content.decode: charsets, transfer encodings, RFC 2047 words, Content-* parameters."""

from __future__ import annotations

import base64

import pytest

from milterguard.content.decode import (ContentParams, decode_bytes, decode_header_value,
                                        lookup_charset, transfer_decode)


@pytest.mark.parametrize("raw, expected", [
    ("=?utf-8?B?Q2hlYXAgdmlhZ3Jh?=", "Cheap viagra"),
    ("=?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=", "Grüße aus Köln"),
    ("=?koi8-r?B?8NLJ18XU?=", "Привет"),
    ("=?windows-1251?Q?=CF=F0=E8=E2=E5=F2?=", "Привет"),
    ("=?shift_jis?B?g2WDWINn?=", "テスト"),
    ("=?gb2312?B?1tDOxA==?=", "中文"),
    ("=?utf-8*en?Q?lang_suffix?=", "lang suffix"),
    # Whitespace between adjacent encoded words is dropped, not between text.
    ("=?utf-8?Q?a?= =?utf-8?Q?b?= c", "ab c"),
    ("prefix =?utf-8?q?x?=", "prefix x"),
])
def test_rfc2047_in_any_charset(raw: str, expected: str) -> None:
    assert decode_header_value(raw) == expected


def test_bad_encodings_are_tolerated() -> None:
    # Unknown charset, broken base64, invalid utf-8 bytes, unterminated word.
    assert decode_header_value("=?x-nonsense?Q?plain?=") == "plain"
    assert decode_header_value("=?utf-8?B?Q2hlYXA?=") == "Cheap"          # missing padding
    assert decode_header_value("=?utf-8?B?Q2hl!!YXA=?=") == "Cheap"
    assert "caf" in decode_header_value("=?utf-8?Q?caf=E9?=")              # latin-1 byte in utf-8
    assert decode_header_value("=?utf-8?Q?never ends") == "=?utf-8?Q?never ends"


def test_raw_8bit_header_bytes_decode() -> None:
    # pymilter hands undecodable bytes as surrogate escapes.
    value = "Gr\xfc\xdfe".encode("latin-1").decode("utf-8", "surrogateescape")
    assert decode_header_value(value) == "Grüße"
    assert decode_header_value(b"caf\xc3\xa9") == "café"




def test_decode_bytes_fallbacks() -> None:
    assert decode_bytes(b"\xe4", None) == "ä"
    assert decode_bytes("ä".encode(), "latin-1") == "ä"       # utf-8 mislabelled latin-1
    assert decode_bytes(b"\x81ok", "utf-8") == "ok"           # undecodable byte dropped




def test_charset_labels_mail_uses() -> None:
    assert lookup_charset("ISO-8859-1") == "cp1252"      # the superset senders mean
    assert lookup_charset('"utf-8"') == "utf-8"
    assert lookup_charset("ks_c_5601-1987") == "cp949"
    assert lookup_charset("x-no-such-charset") is None
    assert lookup_charset(None) is None


@pytest.mark.parametrize("encoding, body, decoded", [
    ("base64", base64.b64encode(b"hello world"), b"hello world"),
    (" Base64 ", b"aGVs\r\nbG8=", b"hello"),
    ("quoted-printable", b"caf=C3=A9 soft=\r\nbreak", "café softbreak".encode()),
    ("x-uuencode", b"begin 644 f.txt\n%:&5L;&\\`\n`\nend\n", b"hello"),
    ("7bit", b"as =3D is", b"as =3D is"),
    (None, b"as =3D is", b"as =3D is"),
    ("x-unknown", b"kept", b"kept"),
])
def test_transfer_decode(encoding: str | None, body: bytes, decoded: bytes) -> None:
    assert transfer_decode(encoding, body) == decoded


@pytest.mark.parametrize("value, name, expected", [
    ("text/plain; charset=utf-8", "charset", "utf-8"),
    ('text/plain; CHARSET="iso-8859-1"', "charset", "iso-8859-1"),
    ('multipart/mixed; boundary="a;b"; charset=x', "boundary", "a;b"),
    ("text/plain; charset=a; charset=b", "charset", "a"),              # the first wins
    ("attachment; filename; size=3", "filename", ""),                  # bare name
    ("text/plain", "charset", None),
    ("text/plain; format=flowed", "charset", None),
    # RFC 2231 continuations and charsets go to the standard library.
    ("attachment; filename*0=\"long\"; filename*1=\"name.pdf\"", "filename", "longname.pdf"),
    ("attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf", "filename", "résumé.pdf"),
])
def test_content_params(value: str, name: str, expected: str | None) -> None:
    assert ContentParams(value).get(name) == expected


def test_content_params_of_no_header() -> None:
    assert ContentParams(None).get("charset") is None
