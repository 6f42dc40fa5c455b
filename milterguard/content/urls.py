"""URLs in a message: the links of its HTML and the URLs written in its text.

A rule on ``urls`` or ``url-hosts`` must see the link a reader clicks,
whether it is an ``href`` or typed out as ``www.example.com``. Finding
them stays cheap on megabytes of text (str.find on fixed markers, no
regex scan from every position) and tolerant of the malformed URLs spam is
full of (nothing here raises).
"""

from __future__ import annotations

import re

#: Most URLs collected per message.
MAX_URLS = 1000

_URL_TAIL = re.compile(r"""[^\s<>"'`{}|\\^\[\]]{2,2000}""")
_LINK_SCHEMES = ("http:", "https:", "ftp:", "www.", "//")


def message_urls(links: list[str], texts: list[str]) -> list[str]:
    """A message's URLs, first seen first, at most MAX_URLS: the web links
    among the HTML ``links``, then the URLs written in its ``texts``."""
    urls = [link for link in links if link.lower().startswith(_LINK_SCHEMES)]
    for text in texts:
        urls.extend(text_urls(text, MAX_URLS - len(urls)))
        if len(urls) >= MAX_URLS:
            break
    return list(dict.fromkeys(urls))[:MAX_URLS]


def url_hosts(urls: list[str]) -> list[str]:
    """The distinct hosts of ``urls``, first seen first."""
    hosts = [host for host in map(url_host, urls) if host]
    return list(dict.fromkeys(hosts))


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
