"""The MIME tree of one message, walked once for everything rules read.

One pass over the parts collects the text a reader sees (text parts decoded,
HTML rendered to text, the subject of an attached message), the raw HTML,
the links found while rendering, attachment names and MIME types. The walk
is bounded: bytes decoded per message (``budget``), number of parts and
nesting depth. Malformed structure never raises; what was tolerated is
listed in ``MimeWalk.defects``.

What the walk could not read is never dropped silently: parts past the
limit and nesting past it are listed in ``unscanned``, text past the byte
budget in ``truncated``, charsets that failed and parts whose decoding
failed in ``decode_errors`` (the session turns each into a finding). A
failure in one part is reported and the walk goes on with the next one.

Splitting is done with bytes.find rather than the email package: the
standard library parses every part into objects the rules never need, and
it is several times slower on the multipart mail spam is made of.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from milterguard.content.decode import (
    ContentParams, decode_bytes, decode_header_value, transfer_decode)
from milterguard.content.htmltext import render
from milterguard.content.urls import MAX_URLS

#: Most MIME parts walked in one message; the rest are not scanned.
MAX_PARTS = 200
#: Deepest multipart / message/rfc822 nesting walked.
MAX_DEPTH = 10
#: Bytes of a MIME part's own header block parsed.
MAX_PART_HEADER_BYTES = 32 * 1024

_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([-\w:.]{1,40})""", re.I)
_MIME_TYPE = re.compile(r"[a-z0-9!#$&.+^_-]+/[a-z0-9!#$&.+^_-]+")


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


def split_part(data: bytes) -> tuple[list[tuple[str, str]], bytes]:
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


def content_fields(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
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
class MimeWalk:
    """What one pass over the MIME tree collects."""

    texts: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    #: Content not read: parts past max_parts, nesting past max_depth.
    unscanned: list[str] = field(default_factory=list)
    #: Text parts cut or skipped because the byte budget ran out.
    truncated: list[str] = field(default_factory=list)
    #: Charsets that failed, parts whose decoding raised (read in a fallback
    #: decoding, or skipped, and the walk went on).
    decode_errors: list[str] = field(default_factory=list)
    parts: int = 0
    budget: int = 0
    max_parts: int = MAX_PARTS
    max_depth: int = MAX_DEPTH

    def not_scanned(self, reason: str) -> None:
        self.unscanned.append(reason)
        self.defects.append(reason)


def walk_message(headers: list[tuple[str, str]], body: bytes, budget: int,
                 top_fields: dict[str, str] | None = None,
                 max_parts: int = MAX_PARTS, max_depth: int = MAX_DEPTH) -> MimeWalk:
    """Walk a message given as its header fields and body; never raises.

    ``top_fields`` are the message header's Content-* fields when the
    caller already has them (MessageViews' header index), so the message
    header is not scanned a second time. ``budget`` bounds the bytes of
    text decoded, ``max_parts`` and ``max_depth`` the tree.
    """
    walk = MimeWalk(budget=budget, max_parts=max_parts, max_depth=max_depth)
    _walk_guarded(headers, body, 0, walk, "text/plain", top_fields)
    return walk


def _walk_guarded(headers: list[tuple[str, str]], body: bytes, depth: int,
                  walk: MimeWalk, default_type: str,
                  known_fields: dict[str, str] | None = None) -> None:
    """One part, whatever happens in it: a failure is reported, and the
    caller goes on with the next part (a part that fails must not hide the
    parts after it, as a bare UnicodeError from a codec once did)."""
    part = walk.parts + 1
    try:
        _walk_part(headers, body, depth, walk, default_type, known_fields)
    except RecursionError:
        walk.not_scanned(f"part {part}: nesting too deep")
    except Exception as exc:  # noqa: BLE001 - a view never fails a message
        walk.decode_errors.append(f"part {part}: {type(exc).__name__} while decoding")
        walk.defects.append(f"walk failed: {type(exc).__name__}")


def _walk_part(headers: list[tuple[str, str]], body: bytes, depth: int,
               walk: MimeWalk, default_type: str,
               known_fields: dict[str, str] | None = None) -> None:
    defects = walk.defects
    walk.parts += 1
    if walk.parts > walk.max_parts:
        if walk.parts == walk.max_parts + 1:
            walk.not_scanned(f"more than {walk.max_parts} parts; rest not scanned")
        return
    fields = known_fields if known_fields is not None else content_fields(headers)
    ctype_header = fields.get("content-type")
    ctype = default_type
    if ctype_header:
        candidate = decode_header_value(ctype_header).split(";", 1)[0].strip().lower()
        if _MIME_TYPE.fullmatch(candidate):
            ctype = candidate
        else:
            defects.append(f"bad content-type {candidate[:40]!r}")
    walk.types.append(ctype)
    ctype_params = ContentParams(ctype_header)
    disposition = fields.get("content-disposition") or ""
    name = ContentParams(disposition).get("filename") or ctype_params.get("name")
    if name:
        walk.names.append(decode_header_value(name))

    if ctype.startswith("multipart/"):
        boundary = ctype_params.get("boundary")
        if depth >= walk.max_depth:
            walk.not_scanned(f"multipart nested deeper than {walk.max_depth}; not scanned")
            return
        if not boundary:
            defects.append("multipart without boundary")
            _leaf(fields, body, "text/plain", walk, ctype_params)
            return
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        parts = split_multipart(body, boundary, defects, walk.max_parts)
        if parts is None:
            # Boundary never found: show the body the way a lenient reader would.
            defects.append("multipart boundary not found")
            _leaf(fields, body, "text/plain", walk, ctype_params)
            return
        for part in parts:
            if walk.parts > walk.max_parts:
                walk.not_scanned(f"more than {walk.max_parts} parts; rest not scanned")
                break
            if walk.budget <= 0:
                walk.truncated.append("parts past the bytes scanned per message")
                break
            sub_headers, sub_body = split_part(part)
            _walk_guarded(sub_headers, sub_body, depth + 1, walk, child_default)
        return
    # An attached message is walked even when it has a file name: phishing
    # arrives as a forwarded .eml as often as inline.
    if ctype in ("message/rfc822", "message/global"):
        if depth >= walk.max_depth:
            walk.not_scanned(f"attached message nested deeper than {walk.max_depth}; not scanned")
            return
        inner = transfer_decode(fields.get("content-transfer-encoding"), body)
        sub_headers, sub_body = split_part(inner)
        # The attached message's subject is text the reader sees.
        subject = _first(sub_headers, "subject")
        if subject:
            walk.texts.append(decode_header_value(subject))
        _walk_guarded(sub_headers, sub_body, depth + 1, walk, "text/plain")
        return
    _leaf(fields, body, ctype, walk, ctype_params)


def split_multipart(body: bytes, boundary: str, defects: list[str],
                    max_parts: int = MAX_PARTS) -> list[bytes] | None:
    """Body parts between boundary lines; None when none is found.

    An unclosed multipart keeps its last part and records a defect.
    """
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
            if len(parts) > max_parts:
                break
        if closing:
            closed = True
            break
        start = line_end
    if start is None:
        return None
    if not closed and len(parts) <= max_parts:
        defects.append("multipart not closed")
        parts.append(body[start:])
    return parts


def _leaf(fields: dict[str, str], body: bytes, ctype: str, walk: MimeWalk,
          ctype_params: ContentParams) -> None:
    """A part that holds content: its text if a reader sees it as text."""
    disposition = (fields.get("content-disposition") or "").strip().lower()
    if not ctype.startswith("text/") or disposition.startswith("attachment"):
        return
    if ctype not in ("text/plain", "text/html", "text/enriched", "text/richtext") \
            and not ctype.startswith("text/x-"):
        if ctype not in ("text/xml", "text/rtf"):
            return
    if walk.budget <= 0:
        walk.truncated.append(f"part {walk.parts}: past the bytes scanned per message")
        return
    if len(body) > walk.budget:
        walk.truncated.append(f"part {walk.parts}: cut at the bytes scanned per message")
    chunk = body[:walk.budget]
    data = transfer_decode(fields.get("content-transfer-encoding"), chunk)[:walk.budget]
    walk.budget -= len(chunk)
    charset = ctype_params.get("charset")
    if ctype == "text/html":
        if not charset:
            meta = _META_CHARSET.search(data, 0, 4096)
            if meta:
                charset = meta.group(1).decode("ascii", "replace")
        html = _decode_text(data, charset, walk)
        walk.html.append(html)
        text, links = render(html)
        walk.texts.append(text)
        walk.links.extend(links[:MAX_URLS])
    else:
        walk.texts.append(_decode_text(data, charset, walk))


def _decode_text(data: bytes, charset: str | None, walk: MimeWalk) -> str:
    """A text part's bytes as text; a charset that failed is reported."""
    problems: list[str] = []
    text = decode_bytes(data, charset, problems)
    if problems:
        walk.decode_errors.extend(f"part {walk.parts}: {p}" for p in problems)
    return text
