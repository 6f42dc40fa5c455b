"""Text out of mail's encodings: charsets, transfer encodings, RFC 2047
header words and the parameters of Content-* fields.

Spammers hide their words in RFC 2047 encoded subjects, base64 and
quoted-printable bodies and mislabelled charsets; what a rule matches must
be the text a reader sees. Everything here decodes what senders actually
write, not only what the RFCs allow: a wrong or unknown label falls back to
what such mail is nearly always in, junk in base64 is skipped, and nothing
raises on malformed input.
"""

from __future__ import annotations

import binascii
import codecs
import re
from email.message import Message
from functools import lru_cache

#: Bytes of a header value looked at when decoding (a huge header is an attack).
MAX_HEADER_BYTES = 64 * 1024

# Charset labels that mail uses but Python does not know, or where a
# superset decodes what senders actually wrote (as browsers do).
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "us-ascii": "cp1252", "ascii": "cp1252", "ansi_x3.4-1968": "cp1252",
    "iso-8859-8-i": "iso-8859-8", "iso-8859-6-i": "iso-8859-6",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "euc-kr": "cp949",
    "x-sjis": "cp932", "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932",
    "windows-874": "cp874", "tis-620": "cp874", "x-mac-roman": "mac_roman",
    "unicode-1-1-utf-7": "utf-7", "x-unicode20utf8": "utf-8", "utf8": "utf-8",
    "x-user-defined": "cp1252", "unknown-8bit": "cp1252", "default": "cp1252",
    "_autodetect_all": "cp1252", "x-unknown": "cp1252", "unknown": "cp1252",
    "big5": "big5hkscs", "cp-850": "cp850", "x-euc-jp": "euc_jp",
}

_ENCODED_WORD = re.compile(
    r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?]*?)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)[ \t\r\n]+(?==\?[^?\s]{1,75}\?[bBqQ]\?)")
# A header's line breaks: removing them unfolds a folded header (RFC 5322 2.2.3).
_HEADER_LINE_BREAK = re.compile(r"\r?\n(?=[ \t])|\r?\n")
_QP_HEADER_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


#: Codecs Python decodes with that are no charset a mail reader knows.
#: Decoding by them shows the rules other text than the reader sees (or
#: raises: punycode and undefined raise a bare UnicodeError), so a part
#: labelled so is read like one with an unknown label.
_NOT_MAIL_CHARSETS = frozenset({"punycode", "idna", "undefined", "unicode-escape",
                                "raw-unicode-escape", "charmap"})


@lru_cache(maxsize=256)
def lookup_charset(label: str | None) -> str | None:
    """A Python codec name for a MIME charset label, or None if unknown.

    Cached: a handful of labels (utf-8, iso-8859-1...) make up nearly all
    mail, and the answer depends on the label only.
    """
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    # RFC 2231 language suffix: utf-8*en
    name = name.split("*", 1)[0]
    name = _CHARSET_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # bytes-to-bytes codecs (base64, zlib, rot13...) are no text encodings.
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_MAIL_CHARSETS:
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None, problems: list[str] | None = None) -> str:
    """Bytes in a declared charset to text; never raises.

    A missing, unknown or wrong label falls back to UTF-8 and then to
    windows-1252, the two encodings that unlabelled mail is nearly always in.
    A label that is unknown or did not decode the bytes cleanly is noted in
    ``problems`` when given (the caller reports it: a decoding failure is a
    finding, not a silent fallback).
    """
    codec = lookup_charset(charset)
    if codec is None and charset and problems is not None and charset.strip("\"' "):
        problems.append(f"unknown charset {charset[:40]!r}")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) and codec not in ("utf-16", "utf-32"):
        codec = "utf-16"
    if codec and codec not in ("cp1252",):
        try:
            return data.decode(codec)
        except Exception as exc:  # noqa: BLE001 - any codec failure: fall back, never stop
            if problems is not None:
                problems.append(f"charset {charset!r} did not decode ({type(exc).__name__})")
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if codec and codec != "cp1252":
        # The label was right for most bytes: keep what decodes, and drop the
        # rest so that a stray byte cannot split a word in two.
        try:
            return data.decode(codec, errors="replace").replace("\ufffd", "")
        except Exception:  # noqa: BLE001 - a broken codec: cp1252 below, never stop
            pass
    return data.decode("cp1252", errors="replace").replace("\ufffd", "")


def decode_base64(data: bytes) -> bytes:
    """Tolerant base64: junk characters skipped, missing padding added."""
    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    extra = len(clean) % 4
    if extra == 1:
        clean = clean[:-1]
    elif extra:
        clean += b"=" * (4 - extra)
    try:
        return binascii.a2b_base64(clean)
    except (binascii.Error, ValueError):
        return b""


def decode_qp(data: bytes) -> bytes:
    """Quoted-printable; invalid escapes are kept as they are."""
    try:
        return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        return data


def decode_uu(data: bytes) -> bytes:
    """x-uuencode body: the lines between ``begin`` and ``end``."""
    out = []
    inside = False
    for line in data.splitlines():
        if not inside:
            inside = line.startswith(b"begin ")
            continue
        if line.strip() in (b"end", b"`"):
            break
        try:
            out.append(binascii.a2b_uu(line))
        except (binascii.Error, ValueError):
            continue
    return b"".join(out)


def transfer_decode(encoding: str | None, body: bytes) -> bytes:
    """A part's body decoded by its Content-Transfer-Encoding value;
    identity (7bit, 8bit, binary, unknown) returns the body as it is."""
    cte = (encoding or "").strip().lower()
    if "base64" in cte:
        return decode_base64(body)
    if "quoted-printable" in cte:
        return decode_qp(body)
    if "uuencode" in cte or cte in ("x-uue", "uue"):
        return decode_uu(body)
    return body


def _header_str_to_bytes(value: str) -> bytes | None:
    """Raw 8-bit header bytes, if the milter handed them as escaped str."""
    if value.isascii():
        return None
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def decode_header_value(value: str | bytes, problems: list[str] | None = None) -> str:
    """Unfold and decode RFC 2047 encoded words in any charset; never raises.
    Charsets that failed to decode are noted in ``problems`` when given."""
    if isinstance(value, bytes):
        value = decode_bytes(value[:MAX_HEADER_BYTES], None)
    elif "=?" not in value and value.isascii() and len(value) <= MAX_HEADER_BYTES:
        # Nearly every header: nothing to decode, at most a fold to remove.
        return (_HEADER_LINE_BREAK.sub("", value) if "\n" in value else value).strip()
    else:
        value = value[:MAX_HEADER_BYTES]
        raw = _header_str_to_bytes(value)
        if raw is not None and any(0xDC80 <= ord(c) <= 0xDCFF for c in value):
            value = decode_bytes(raw, None)
    value = _HEADER_LINE_BREAK.sub("", value)
    if "=?" not in value:
        return value.strip()
    # Whitespace between two adjacent encoded words is not part of the text.
    value = _BETWEEN_WORDS.sub(r"\1", value)
    return _ENCODED_WORD.sub(lambda m: _decode_word(m, problems), value).strip()


def _decode_word(match: re.Match[str], problems: list[str] | None) -> str:
    charset, kind, payload = match.group(1), match.group(2).upper(), match.group(3)
    data = payload.encode("ascii", "surrogateescape") if payload.isascii() \
        else payload.encode("utf-8", "surrogateescape")
    if kind == "B":
        raw = decode_base64(data)
    else:
        raw = _QP_HEADER_HEX.sub(lambda m: bytes([int(m.group(1), 16)]),
                                 data.replace(b"_", b" "))
    return decode_bytes(raw, charset, problems)


# -- Content-* parameters (RFC 2045 and 2231) --------------------------------

def _stdlib_params(value: str) -> Message:
    """A Message holding one Content-* header, for its parameter parsing."""
    msg = Message()
    try:
        msg["Content-Type"] = value
    except Exception:  # noqa: BLE001 - never fail on a header
        pass
    return msg


def _stdlib_param(value: str, name: str) -> str | None:
    """One parameter the way email.message.get_param reads it (RFC 2231 too)."""
    try:
        got = _stdlib_params(value).get_param(name, header="content-type")
        if isinstance(got, tuple):  # RFC 2231 (charset, language, value)
            from email.utils import collapse_rfc2231_value
            got = collapse_rfc2231_value(got)
        if got is None:
            return None
        return str(got)
    except Exception:  # noqa: BLE001 - a malformed parameter is an absent one
        return None


# Characters that send a header to the standard library's parser: RFC 2231
# names (name*0*=...), escapes inside quotes, angle-bracketed values.
_ODD_PARAMS = re.compile(r'[*\\<]')


@lru_cache(maxsize=512)
def _parse_params(value: str) -> dict[str, str] | None:
    """Parameters of a Content-Type/-Disposition value; None when it needs
    the standard library (non-ASCII, RFC 2231, escapes).

    Gives what email.message.get_param gives on the plain headers nearly all
    mail has, at a fraction of the cost: split on ';' outside quotes, names
    case-insensitive, the first occurrence of a name wins, one pair of
    quotes removed, a bare name has the empty value. Cached: the same few
    values ("text/plain; charset=utf-8") occur in most messages; callers
    never modify the dict.
    """
    if not value.isascii() or _ODD_PARAMS.search(value):
        return None
    params: dict[str, str] = {}
    for piece in _split_semicolons(value):
        name, eq, val = piece.partition("=")
        name = name.strip().lower()
        val = val.strip()
        if len(val) > 1 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1]
        if name not in params:
            params[name] = val if eq else ""
    return params


def _split_semicolons(value: str) -> list[str]:
    """Split on ';' that are not inside double quotes."""
    if '"' not in value:
        return value.split(";")
    pieces = []
    start = 0
    quoted = False
    for pos, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            pieces.append(value[start:pos])
            start = pos + 1
    pieces.append(value[start:])
    return pieces


class ContentParams:
    """Parameter look-up on one Content-* header, parsed at most once."""

    __slots__ = ("value", "parsed")

    def __init__(self, value: str | None) -> None:
        self.value = value or ""
        self.parsed: dict[str, str] | None = None

    def get(self, name: str) -> str | None:
        value = self.value
        if "=" not in value:
            return None
        if self.parsed is None:
            self.parsed = _parse_params(value)
            if self.parsed is None:  # odd header: the stdlib each time (rare)
                return _stdlib_param(value, name)
        return self.parsed.get(name)
