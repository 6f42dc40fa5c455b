"""Decoded views of one message, as rule targets name them.

Postfix's header_checks and body_checks see raw lines only; spammers hide
their words in RFC 2047 encoded subjects, base64 and quoted-printable bodies
and HTML. ``MessageViews`` gives each rule target its text: raw or decoded
headers, decoded text parts (HTML rendered to what the reader sees), the raw
HTML, URLs and their hosts, attachment names and MIME types.

Every view is computed on first use and cached, so a message that only meets
header rules never pays for MIME decoding. The work itself lives beside
this module: ``decode`` (charsets, RFC 2047, Content-* parameters),
``mime`` (the bounded walk over the parts) and ``urls``. Malformed input
never raises; what was tolerated is listed in ``defects``, and what could
not be read in full in ``unscanned``, ``truncated`` and ``decode_errors``
(the session makes findings of them: nothing is skipped without a trace).

``MESSAGE_TARGETS`` and ``header_target`` are the one definition of what a
rule may read from a message; the rule loader validates against them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from milterguard.content.decode import MAX_HEADER_BYTES, decode_header_value
from milterguard.content.mime import MAX_DEPTH, MAX_PARTS, MimeWalk, walk_message
from milterguard.content.urls import message_urls, url_hosts


class MessageViews:
    """Lazily computed, cached views of one message for rule targets."""

    def __init__(self, headers: list[tuple[str, str]], body: bytes,
                 max_bytes: int = 2 * 1024 * 1024, max_parts: int = MAX_PARTS,
                 max_depth: int = MAX_DEPTH) -> None:
        self.headers = headers
        self.max_bytes = max(1, int(max_bytes))
        self.max_parts = max_parts
        self.max_depth = max_depth
        self.body = b""
        self.defects: list[str] = []
        # What the header views could not read (kept across set_body).
        self._header_problems: list[str] = []
        self._header_cuts: list[str] = []
        self._body_cut = ""
        self._set_body(body)
        self._cache: dict[str, list[str]] = {}
        self._walk: MimeWalk | None = None
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
        self._set_body(body)
        self._walk = None
        self.defects = []   # only the MIME walk records defects
        for target in [t for t in self._cache if not t.startswith("header")]:
            del self._cache[target]

    def _set_body(self, body: bytes) -> None:
        self.body = body[:self.max_bytes] if body else b""
        self._body_cut = (f"body: {len(body) - self.max_bytes} bytes past {self.max_bytes}"
                          if body and len(body) > self.max_bytes else "")

    # What could not be read in full: the session reports each as a finding.
    @property
    def unscanned(self) -> list[str]:
        """MIME parts past max_parts and nesting past max_depth."""
        return self._walked().unscanned if self.body else []

    @property
    def truncated(self) -> list[str]:
        """Header values and body bytes past the limits scanned."""
        cut = list(self._header_cuts)
        if self._body_cut:
            cut.append(self._body_cut)
        if self.body:
            cut += self._walked().truncated
        return cut

    @property
    def decode_errors(self) -> list[str]:
        """Charsets that failed and parts whose decoding failed."""
        walked = self._walked().decode_errors if self.body else []
        return self._header_problems + walked

    def texts(self, target: str) -> list[str]:
        """The strings a rule with this target is matched against.

        Never raises: a view that fails is reported in ``decode_errors``
        and reads as empty, and the other views are still computed."""
        cached = self._cache.get(target)
        if cached is None:
            try:
                cached = self._compute(target)
            except Exception as exc:  # noqa: BLE001 - one view never stops the scan
                self._header_problems.append(f"view {target}: {type(exc).__name__}")
                cached = []
            self._cache[target] = cached
        return cached

    def header_count(self, name: str) -> int:
        """How many times a header occurs (0 = absent)."""
        return len(self._header_index().get(name.lower(), ()))

    # -- computing views ---------------------------------------------------
    def _compute(self, target: str) -> list[str]:
        header = header_target(target)
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
        """What mime.content_fields gives for the message header, from the index."""
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
            name, raw = self.headers[pos]
            if len(raw) > MAX_HEADER_BYTES:
                self._header_cuts.append(f"header {name[:40]}: {len(raw) - MAX_HEADER_BYTES} "
                                         f"bytes past {MAX_HEADER_BYTES}")
            problems: list[str] = []
            value = decoded[pos] = decode_header_value(raw, problems)
            if problems:
                self._header_problems.extend(f"header {name[:40]}: {p}" for p in problems)
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
        return list(dict.fromkeys(self._walked().types))

    def _walked(self) -> MimeWalk:
        walk = self._walk
        if walk is None:
            # The message header's Content-* fields come from the header
            # index when the header rules built it at end of headers.
            top_fields = self._message_content_fields() if self._index is not None else None
            walk = self._walk = walk_message(self.headers, self.body, self.max_bytes, top_fields,
                                             self.max_parts, self.max_depth)
            self.defects.extend(walk.defects)
        return walk

    def _urls_view(self) -> list[str]:
        walk = self._walked()
        return message_urls(walk.links, walk.texts)

    def _url_hosts_view(self) -> list[str]:
        return url_hosts(self.texts("urls"))


@lru_cache(maxsize=1024)
def header_target(target: str) -> tuple[str, bool] | None:
    """(lower-case header name, raw?) of a ``header:NAME[:raw]`` target,
    None for any other target.

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
    "urls": MessageViews._urls_view,
    "url-hosts": MessageViews._url_hosts_view,
    "attachment-names": MessageViews._names_view,
    "mime-types": MessageViews._types_view,
}

#: Every message target besides ``header:NAME[:raw]``, in this order.
MESSAGE_TARGETS = tuple(_VIEW_METHODS)
