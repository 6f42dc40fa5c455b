"""Decoded views of one message, as rule targets name them.

Postfix's header_checks and body_checks see raw lines only; spammers hide
their words in RFC 2047 encoded subjects, base64 and quoted-printable bodies
and HTML. ``MessageViews`` gives each rule target its text: raw or decoded
headers, decoded text parts (HTML rendered to what the reader sees), the raw
HTML, URLs and their hosts, attachment names and MIME types.

Every view is computed on first use and cached, so a message that only meets
header rules never pays for MIME decoding. Work is bounded: bytes per part
and per message (``max_bytes``), number of parts and nesting depth. Malformed
input never raises; what was tolerated is listed in ``defects``.
"""

from __future__ import annotations

import binascii
import codecs
import re
from dataclasses import dataclass, field
from functools import lru_cache
from email.message import Message
from typing import Callable, Iterable, Iterator

from milterguard.content.htmltext import render

#: Most MIME parts walked in one message; the rest are not scanned.
MAX_PARTS = 200
#: Deepest multipart / message/rfc822 nesting walked.
MAX_DEPTH = 10
#: Most URLs collected per message.
MAX_URLS = 1000
#: Bytes of a header value looked at when decoding (a huge header is an attack).
MAX_HEADER_BYTES = 64 * 1024
#: Bytes of a MIME part's own header block parsed.
MAX_PART_HEADER_BYTES = 32 * 1024

TARGETS = ("headers", "headers:raw", "body", "body:raw", "html", "urls",
           "url-hosts", "attachment-names", "mime-types")

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
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r?\n")
_URL_TAIL = re.compile(r"""[^\s<>"'`{}|\\^\[\]]{2,2000}""")
_QP_HEADER_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([-\w:.]{1,40})""", re.I)
_MIME_TYPE = re.compile(r"[a-z0-9!#$&.+^_-]+/[a-z0-9!#$&.+^_-]+")


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
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes in a declared charset to text; never raises.

    A missing, unknown or wrong label falls back to UTF-8 and then to
    windows-1252, the two encodings that unlabelled mail is nearly always in.
    """
    codec = lookup_charset(charset)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) and codec not in ("utf-16", "utf-32"):
        codec = "utf-16"
    if codec and codec not in ("cp1252",):
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
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
        except LookupError:
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


def _header_str_to_bytes(value: str) -> bytes | None:
    """Raw 8-bit header bytes, if the milter handed them as escaped str."""
    if value.isascii():
        return None
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def decode_header_value(value: str | bytes) -> str:
    """Unfold and decode RFC 2047 encoded words in any charset; never raises."""
    if isinstance(value, bytes):
        value = decode_bytes(value[:MAX_HEADER_BYTES], None)
    elif "=?" not in value and value.isascii() and len(value) <= MAX_HEADER_BYTES:
        # Nearly every header: nothing to decode, at most a fold to remove.
        return (_FOLD.sub("", value) if "\n" in value else value).strip()
    else:
        value = value[:MAX_HEADER_BYTES]
        raw = _header_str_to_bytes(value)
        if raw is not None and any(0xDC80 <= ord(c) <= 0xDCFF for c in value):
            value = decode_bytes(raw, None)
    value = _FOLD.sub("", value)
    if "=?" not in value:
        return value.strip()
    # Whitespace between two adjacent encoded words is not part of the text.
    value = _BETWEEN_WORDS.sub(r"\1", value)
    return _ENCODED_WORD.sub(_decode_word, value).strip()


def _decode_word(match: re.Match[str]) -> str:
    charset, kind, payload = match.group(1), match.group(2).upper(), match.group(3)
    data = payload.encode("ascii", "surrogateescape") if payload.isascii() \
        else payload.encode("utf-8", "surrogateescape")
    if kind == "B":
        raw = decode_base64(data)
    else:
        raw = _QP_HEADER_HEX.sub(lambda m: bytes([int(m.group(1), 16)]),
                                 data.replace(b"_", b" "))
    return decode_bytes(raw, charset)


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
    except Exception:  # noqa: BLE001
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


class _Params:
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


def _param(value: str | None, name: str) -> str | None:
    """One parameter of a Content-* header value (None when absent)."""
    return _Params(value).get(name)


def _blank_line(data: bytes, limit: int) -> tuple[int, int] | None:
    """(start, end) of the first ``\r?\n\r?\n`` ending within ``limit`` bytes.

    Two bytes.find calls: a regex without a literal prefix is tried at
    every byte of the header block.
    """
    lf_lf = data.find(b"\n\n", 0, limit)
    lf_crlf = data.find(b"\n\r\n", 0, limit)
    if lf_lf < 0 and lf_crlf < 0:
        return None
    if lf_crlf < 0 or 0 <= lf_lf < lf_crlf:
        pos, end = lf_lf, lf_lf + 2
    else:
        pos, end = lf_crlf, lf_crlf + 3
    if pos and data[pos - 1] == 0x0D:
        pos -= 1
    return pos, end


def _header_lines(block: bytes) -> list[bytes]:
    """Lines of a header block, split at \n with a \r before it removed
    (a \r at the very end is kept, as re.split(rb"\r?\n") keeps it)."""
    lines = block.split(b"\n")
    if b"\r" in block:
        last = lines.pop()
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        lines.append(last)
    return lines


def _split_headers(data: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """A MIME part's header block and body. No blank line: all body."""
    head_end = _blank_line(data, MAX_PART_HEADER_BYTES + 4)
    if data.startswith((b"\r\n", b"\n")):
        return [], data[2:] if data.startswith(b"\r\n") else data[1:]
    if head_end is None:
        # No header block at all if the first line does not look like one.
        first = data[:200].split(b"\n", 1)[0]
        if not re.match(rb"^[!-9;-~]{1,76}:", first):
            return [], data
        head_block, body = data[:MAX_PART_HEADER_BYTES], b""
    else:
        head_block, body = data[:head_end[0]], data[head_end[1]:]
    headers: list[tuple[str, str]] = []
    for line in _header_lines(head_block):
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + line.decode("utf-8", "surrogateescape"))
        elif b":" in line:
            name_b, _, value_b = line.partition(b":")
            headers.append((name_b.decode("latin-1").strip(),
                            value_b.decode("utf-8", "surrogateescape").lstrip()))
    return headers, body


def _boundary_lines(body: bytes, marker: bytes) -> Iterator[tuple[int, int, bool]]:
    """(start, end, closing) of each boundary line ``--delim[--][ \t]*\r?\n``.

    A line starts at the beginning of the body or after a newline that the
    previous boundary line did not take; start is that newline (it belongs
    to the delimiter), end is past the line's own newline. bytes.find on the
    marker instead of a regex: a pattern starting with (^|\n) is tried at
    every position of the body.
    """
    size = len(body)
    taken = 0
    pos = body.find(marker)
    while pos >= 0:
        if pos == 0 or (body[pos - 1] == 0x0A and pos - 1 >= taken):
            i = pos + len(marker)
            closing = body.startswith(b"--", i)
            if closing:
                i += 2
            while i < size and body[i] in (0x20, 0x09):
                i += 1
            if i < size and body[i] == 0x0D:
                i += 1
            if i >= size or body[i] == 0x0A:
                taken = min(i + 1, size)
                yield (pos - 1 if pos else 0), taken, closing
                pos = body.find(marker, taken)
                continue
        pos = body.find(marker, pos + 1)


def _content_fields(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The first value of each Content-* field of a part, by lower-case name.

    One pass over the part's header instead of one per field looked up (a
    message's top-level header has dozens of fields).
    """
    fields: dict[str, str] = {}
    for key, value in headers:
        if key[:8].lower() == "content-":
            lname = key.lower()
            if lname not in fields:
                fields[lname] = value
    return fields


def _first(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None


@dataclass
class _Walk:
    """What one pass over the MIME tree collects."""

    texts: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    parts: int = 0
    budget: int = 0


class MessageViews:
    """Lazily computed, cached views of one message for rule targets."""

    def __init__(self, headers: list[tuple[str, str]], body: bytes,
                 max_bytes: int = 2 * 1024 * 1024) -> None:
        self.headers = headers
        self.body = body[:max_bytes] if body else b""
        self.max_bytes = max(1, int(max_bytes))
        self.defects: list[str] = []
        self._cache: dict[str, list[str]] = {}
        self._walk: _Walk | None = None
        # Header positions by lower-case name, and decoded values by
        # position, both filled on first use: a rule on one header decodes
        # that header only.
        self._index: dict[str, list[int]] | None = None
        self._decoded: list[str | None] | None = None

    # -- public API ------------------------------------------------------
    def set_body(self, body: bytes) -> None:
        """Give the body to views built at end of headers (body empty).

        The milter builds one MessageViews per message: header views
        decoded for the header rules are reused at end of message. Views
        that read the body are dropped (they are recomputed on demand).
        """
        self.body = body[:self.max_bytes] if body else b""
        self._walk = None
        self.defects = []   # only the MIME walk records defects
        for target in [t for t in self._cache if not t.startswith("header")]:
            del self._cache[target]

    def texts(self, target: str) -> list[str]:
        """The strings a rule with this target is matched against."""
        cached = self._cache.get(target)
        if cached is None:
            cached = self._compute(target)
            self._cache[target] = cached
        return cached

    def header_count(self, name: str) -> int:
        """How many times a header occurs (0 = absent)."""
        return len(self._header_index().get(name.lower(), ()))

    # -- computing views ---------------------------------------------------
    def _compute(self, target: str) -> list[str]:
        header = _header_target(target)
        if header is not None:
            positions = self._header_index().get(header[0])
            if not positions:
                return []
            if header[1]:
                headers = self.headers
                return [headers[i][1] for i in positions]
            if len(positions) == 1:  # nearly always: no comprehension
                return [self._decoded_value(positions[0])]
            return [self._decoded_value(i) for i in positions]
        method = _VIEW_METHODS.get(target)
        if method is None:
            return []
        return method(self)

    def _header_index(self) -> dict[str, list[int]]:
        index = self._index
        if index is None:
            index = self._index = {}
            for pos, (key, _) in enumerate(self.headers):
                lname = key.lower()
                if lname in index:
                    index[lname].append(pos)
                else:
                    index[lname] = [pos]
        return index

    def _message_content_fields(self) -> dict[str, str]:
        """What _content_fields gives for the message header, from the index."""
        headers = self.headers
        return {name: headers[positions[0]][1]
                for name, positions in self._header_index().items()
                if name.startswith("content-")}

    def _decoded_value(self, pos: int) -> str:
        decoded = self._decoded
        if decoded is None:
            decoded = self._decoded = [None] * len(self.headers)
        value = decoded[pos]
        if value is None:
            value = decoded[pos] = decode_header_value(self.headers[pos][1])
        return value

    def _headers_view(self) -> list[str]:
        return [f"{key}: {self._decoded_value(pos)}" for pos, (key, _) in enumerate(self.headers)]

    def _headers_raw_view(self) -> list[str]:
        return [f"{key}: {value}" for key, value in self.headers]

    def _body_view(self) -> list[str]:
        return self._walked().texts

    def _body_raw_view(self) -> list[str]:
        return [self.body.decode("utf-8", "replace")] if self.body else []

    def _html_view(self) -> list[str]:
        return self._walked().html

    def _names_view(self) -> list[str]:
        return self._walked().names

    def _types_view(self) -> list[str]:
        return _dedupe(self._walked().types)

    def _walked(self) -> _Walk:
        if self._walk is None:
            walk = _Walk(budget=self.max_bytes)
            try:
                self._walk_part(self.headers, self.body, 0, walk, "text/plain")
            except RecursionError:
                self.defects.append("nesting too deep")
            except Exception as exc:  # noqa: BLE001 - a view never fails a message
                self.defects.append(f"walk failed: {type(exc).__name__}")
            self._walk = walk
        return self._walk

    def _walk_part(self, headers: list[tuple[str, str]], body: bytes, depth: int,
                   walk: _Walk, default_type: str) -> None:
        walk.parts += 1
        if walk.parts > MAX_PARTS:
            if walk.parts == MAX_PARTS + 1:
                self.defects.append(f"more than {MAX_PARTS} parts; rest not scanned")
            return
        # The message's own header: its Content-* fields are in the header
        # index when the header rules built it at end of headers; no new pass.
        fields = self._message_content_fields() \
            if headers is self.headers and self._index is not None \
            else _content_fields(headers)
        ctype_header = fields.get("content-type")
        ctype = default_type
        if ctype_header:
            candidate = decode_header_value(ctype_header).split(";", 1)[0].strip().lower()
            if _MIME_TYPE.fullmatch(candidate):
                ctype = candidate
            else:
                self.defects.append(f"bad content-type {candidate[:40]!r}")
        walk.types.append(ctype)
        ctype_params = _Params(ctype_header)
        disposition = fields.get("content-disposition") or ""
        name = _Params(disposition).get("filename") or ctype_params.get("name")
        if name:
            walk.names.append(decode_header_value(name))

        if ctype.startswith("multipart/"):
            boundary = ctype_params.get("boundary")
            if depth >= MAX_DEPTH:
                self.defects.append("multipart nested too deep")
                return
            if not boundary:
                self.defects.append("multipart without boundary")
                self._leaf(fields, body, "text/plain", walk, ctype_params)
                return
            child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            parts = self._split_multipart(body, boundary)
            if parts is None:
                # Boundary never found: show the body the way a lenient reader would.
                self.defects.append("multipart boundary not found")
                self._leaf(fields, body, "text/plain", walk, ctype_params)
                return
            for part in parts:
                if walk.budget <= 0 or walk.parts > MAX_PARTS:
                    break
                sub_headers, sub_body = _split_headers(part)
                self._walk_part(sub_headers, sub_body, depth + 1, walk, child_default)
            return
        # An attached message is walked even when it has a file name: phishing
        # arrives as a forwarded .eml as often as inline.
        if ctype in ("message/rfc822", "message/global"):
            if depth >= MAX_DEPTH:
                self.defects.append("message nested too deep")
                return
            inner = self._transfer_decode(fields, body)
            sub_headers, sub_body = _split_headers(inner)
            # The attached message's subject is text the reader sees.
            subject = _first(sub_headers, "subject")
            if subject:
                walk.texts.append(decode_header_value(subject))
            self._walk_part(sub_headers, sub_body, depth + 1, walk, "text/plain")
            return
        self._leaf(fields, body, ctype, walk, ctype_params)

    def _split_multipart(self, body: bytes, boundary: str) -> list[bytes] | None:
        """Body parts between boundary lines; None when none is found."""
        delim = boundary.encode("utf-8", "surrogateescape")[:200]
        parts: list[bytes] = []
        start: int | None = None
        closed = False
        for line_start, line_end, closing in _boundary_lines(body, b"--" + delim):
            if start is not None:
                end = line_start
                if end > start and body[end - 1:end] == b"\r":
                    end -= 1
                parts.append(body[start:end])
                if len(parts) > MAX_PARTS:
                    break
            if closing:
                closed = True
                break
            start = line_end
        if start is None:
            return None
        if not closed and len(parts) <= MAX_PARTS:
            self.defects.append("multipart not closed")
            parts.append(body[start:])
        return parts

    def _transfer_decode(self, fields: dict[str, str], body: bytes) -> bytes:
        cte = (fields.get("content-transfer-encoding") or "").strip().lower()
        if "base64" in cte:
            return decode_base64(body)
        if "quoted-printable" in cte:
            return decode_qp(body)
        if "uuencode" in cte or cte in ("x-uue", "uue"):
            return decode_uu(body)
        return body

    def _leaf(self, fields: dict[str, str], body: bytes, ctype: str, walk: _Walk,
              ctype_params: _Params) -> None:
        disposition = (fields.get("content-disposition") or "").strip().lower()
        if not ctype.startswith("text/") or disposition.startswith("attachment"):
            return
        if ctype not in ("text/plain", "text/html", "text/enriched", "text/richtext") \
                and not ctype.startswith("text/x-"):
            if ctype not in ("text/xml", "text/rtf"):
                return
        if walk.budget <= 0:
            return
        chunk = body[:walk.budget]
        data = self._transfer_decode(fields, chunk)[:walk.budget]
        walk.budget -= len(chunk)
        charset = ctype_params.get("charset")
        if ctype == "text/html":
            if not charset:
                meta = _META_CHARSET.search(data, 0, 4096)
                if meta:
                    charset = meta.group(1).decode("ascii", "replace")
            html = decode_bytes(data, charset)
            walk.html.append(html)
            text, links = render(html)
            walk.texts.append(text)
            walk.links.extend(links[:MAX_URLS])
        else:
            walk.texts.append(decode_bytes(data, charset))

    def _urls(self) -> list[str]:
        walk = self._walked()
        urls: list[str] = []
        for link in walk.links:
            low = link.lower()
            if low.startswith(("http:", "https:", "ftp:", "www.", "//")):
                urls.append(link)
        for text in walk.texts:
            urls.extend(text_urls(text, MAX_URLS - len(urls)))
            if len(urls) >= MAX_URLS:
                break
        return _dedupe(urls)[:MAX_URLS]

    def _url_hosts(self) -> list[str]:
        hosts = []
        for url in self.texts("urls"):
            host = url_host(url)
            if host:
                hosts.append(host)
        return _dedupe(hosts)


@lru_cache(maxsize=1024)
def _header_target(target: str) -> tuple[str, bool] | None:
    """(lower-case header name, raw?) of a ``header:NAME[:raw]`` target.

    Cached: a rule set names the same few targets for every message.
    """
    if not target.startswith("header:"):
        return None
    rest = target[7:].lower()
    if rest.endswith(":raw"):
        return rest[:-4], True
    return rest, False


_VIEW_METHODS: dict[str, Callable[[MessageViews], list[str]]] = {
    "headers": MessageViews._headers_view,
    "headers:raw": MessageViews._headers_raw_view,
    "body": MessageViews._body_view,
    "body:raw": MessageViews._body_raw_view,
    "html": MessageViews._html_view,
    "urls": MessageViews._urls,
    "url-hosts": MessageViews._url_hosts,
    "attachment-names": MessageViews._names_view,
    "mime-types": MessageViews._types_view,
}


def _searchable_lower(text: str) -> str:
    """A string that text_urls can search instead of text.lower().

    Only the ASCII letters need lowering there: what it looks for ("://",
    "www.", http, https, ftp) is ASCII, no other character lowers to one of
    those, and str.isalnum is the same before and after lowering, except
    for U+0130, which lowers to two characters (it keeps str.lower, to keep
    its positions). bytes.lower on UTF-8 lowers A-Z only and is several
    times cheaper than str.lower on non-ASCII text.
    """
    if text.isascii() or "\u0130" in text:
        return text.lower()
    try:
        return text.encode("utf-8").lower().decode("utf-8")
    except UnicodeError:  # lone surrogates
        return text.lower()


def text_urls(text: str, limit: int = MAX_URLS) -> list[str]:
    """URLs written out in plain text (scheme://... or www....).

    Found with str.find on the markers rather than one regex over the whole
    text: a regex without a literal prefix tries every position, which costs
    a lot on megabytes of text.
    """
    found: list[tuple[int, str]] = []
    low = _searchable_lower(text)
    pos = low.find("://")
    while pos >= 0 and len(found) < limit:
        start = next((pos - len(s) for s in ("https", "http", "ftp") if low.endswith(s, 0, pos)), -1)
        if start >= 0 and (start == 0 or not low[start - 1].isalnum()):
            tail = _URL_TAIL.match(text, pos + 3)
            if tail:
                found.append((start, text[start:tail.end()]))
        pos = low.find("://", pos + 3)
    pos = low.find("www.")
    while pos >= 0 and len(found) < limit:
        if pos == 0 or not (low[pos - 1].isalnum() or low[pos - 1] in "./-@"):
            tail = _URL_TAIL.match(text, pos)
            if tail and "." in tail.group(0)[4:]:
                found.append((pos, tail.group(0)))
        pos = low.find("www.", pos + 4)
    found.sort()
    return [url.rstrip(".,;:!?)'\"") for _, url in found[:limit]]


_URL_HOST = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//(?:[^@/?#\\]*@)?(\[[^\]/]*\]|[^:/?#\\]*)", re.I)


def url_host(url: str) -> str | None:
    """Lower-case host of a URL, IDNA decoded; None if there is none.

    A regex rather than urlsplit: it is several times faster and never
    raises on the malformed URLs spam is full of.
    """
    candidate = url.strip()
    if candidate[:4].lower() == "www.":
        candidate = "//" + candidate
    match = _URL_HOST.match(candidate)
    if not match:
        return None
    host = match.group(1).strip("[]").rstrip(".").lower()
    if not host:
        return None
    if "%" in host:
        from urllib.parse import unquote
        host = unquote(host).lower()
    if "xn--" in host:
        try:
            host = host.encode("ascii").decode("idna")
        except (UnicodeError, ValueError):
            pass
    return host


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
