"""HTML rendered to the text a reader sees, with the standard library only.

Spammers hide their words from filters with entities, comments, tags split
inside words, and hide filler text ("hash busters") from the reader with
``display:none`` or a zero font size. Rules must see what the reader sees:
entities decoded, comments/script/style dropped, hidden elements dropped,
block elements turned into line breaks. Links are collected on the way so the
``urls`` view does not parse the HTML a second time.

The markup is cut into tokens (text runs, tags, comments, declarations) by
one compiled regular expression rather than by html.parser: the tokenizer
runs in C, and the Python loop only sees the tokens that matter, which makes
rendering several times cheaper on ordinary mail. Every alternative of the
token pattern is possessive or bounded, so the scan stays linear on hostile
markup, and a time budget hands whatever is left to a crude tag stripper.
It never raises on malformed markup: unclosed and stray tags are tolerated
roughly the way a browser tolerates them (an unterminated comment or tag
runs to the end of the document, as it does on screen).
"""

from __future__ import annotations

import re
import time
from html import unescape
from functools import lru_cache

# Elements whose content is never shown in a mail reader.
_INVISIBLE = frozenset({"script", "style", "title", "template", "head",
                        "object", "applet", "iframe", "svg", "xml"})

# Elements that start a new line when rendered.
_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "br", "center", "dd", "div",
    "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1",
    "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol",
    "p", "pre", "section", "table", "tbody", "thead", "tfoot", "tr", "ul",
    "caption", "body", "html",
})

# Table cells sit side by side: a space, not a line break.
_CELL = frozenset({"td", "th"})

# Elements without content or end tag: never pushed on the open-element stack.
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input",
                   "link", "meta", "param", "source", "track", "wbr",
                   "basefont", "frame", "keygen"})

# A start tag of one of these closes an open <p> (HTML parsing rules), so a
# hidden unclosed <p> cannot hide the visible paragraph after it.
_CLOSES_P = frozenset({
    "address", "article", "aside", "blockquote", "center", "div", "dl",
    "fieldset", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "main", "nav", "ol", "p", "pre", "section", "table", "ul",
})

# Elements that implicitly close an open element of the same kind.
_SELF_CLOSING_SIBLINGS = {"li": {"li"}, "td": {"td", "th"}, "th": {"td", "th"},
                          "tr": {"tr"}, "option": {"option"}, "dt": {"dt", "dd"},
                          "dd": {"dt", "dd"}}

# Tags with any handling beyond push/pop (see _Renderer.start and end).
_SPECIAL: frozenset[str] = frozenset()  # filled below, once all sets exist

# Boundaries an implicit close must not cross.
_SCOPE = frozenset({"table", "div", "td", "th", "blockquote", "ul", "ol",
                    "body", "html"})

_SPECIAL = frozenset(_INVISIBLE | _BLOCK | _CELL | _VOID | _CLOSES_P | set(_SELF_CLOSING_SIBLINGS)
                     | {"pre", "img"})

# What start() does for a tag, as bits looked up once per tag (instead of
# one set test per rule); tags not listed have no bits.
_F_CLOSES_P, _F_SIBLINGS, _F_INVISIBLE, _F_BLOCK, _F_CELL, _F_VOID = 1, 2, 4, 8, 16, 32
_FLAGS: dict[str, int] = {}
for _bit, _tags in ((_F_CLOSES_P, _CLOSES_P), (_F_SIBLINGS, _SELF_CLOSING_SIBLINGS),
                    (_F_INVISIBLE, _INVISIBLE), (_F_BLOCK, _BLOCK), (_F_CELL, _CELL),
                    (_F_VOID, _VOID)):
    for _tag in _tags:
        _FLAGS[_tag] = _FLAGS.get(_tag, 0) | _bit
del _bit, _tags, _tag

_FONT_SIZE = re.compile(r"(?<![-\w])font-size\s*:\s*([0-9]*\.?[0-9]*)\s*(px|pt|em|rem|%)?", re.I)


#: Safety cap on links collected from one part.
MAX_LINKS = 1000


def _style_hides(style: str) -> bool:
    """True when an inline style makes the element invisible to the reader.

    Short styles are cached: newsletters repeat the same few style strings
    on every element. Long ones are rare and not worth the memory.
    """
    if len(style) <= 512:
        return _style_hides_cached(style)
    return _style_hides_uncached(style)


def _style_hides_uncached(style: str) -> bool:
    low = style.lower()
    if "none" in low and re.search(r"display\s*:\s*none", low):
        return True
    if "hidden" in low and re.search(r"visibility\s*:\s*hidden", low):
        return True
    for match in _FONT_SIZE.finditer(low):
        number, unit = match.group(1), (match.group(2) or "px")
        try:
            size = float(number) if number not in ("", ".") else None
        except ValueError:
            size = None
        if size is None:
            continue
        # 1px text is as unreadable as 0px; em/% relative sizes near zero too.
        if (unit in ("px", "pt") and size <= 1) or (unit in ("em", "rem") and size <= 0.1) \
                or (unit == "%" and size <= 10):
            return True
    if "opacity" in low and re.search(r"(?<![-\w])opacity\s*:\s*0*(?:\.0*)?\s*(?:;|$|!)", low):
        return True
    if "overflow" in low and re.search(r"overflow\s*:\s*hidden", low) and \
            re.search(r"(?<![-\w])(?:max-)?(?:height|width)\s*:\s*0+(?:\.0*)?(?:px|pt|em)?\s*(?:;|$|!)", low):
        return True
    return False


_style_hides_cached = lru_cache(maxsize=1024)(_style_hides_uncached)


# The rest of a start tag after its name: attribute text, ended by '>', the
# next '<' or the end of the document. A quote opens a value only right
# after '=' (as in browsers: width="80% x="y"> ends at the '>'); quoted
# values may hold '>' or '<'; an unterminated quote is a plain character so
# that it cannot swallow the document.
_TAG_REST = r"""((?:[^<>"'=]++|=[\t\n\r\f\ ]*+(?:"[^"]{0,4096}+"|'[^']{0,4096}+'|)|["'])*+)(?:>|(?=<)|\Z)"""
_TAG_REST_NOGROUP = _TAG_REST.replace("((?:", "(?:(?:", 1)


def _raw_text(name: str) -> str:
    """A raw-text element (script, style) with its content, to the end tag
    (not included) or the end of the document. Its content is never markup
    and never shown."""
    return (rf"<(?i:{name})(?=[\t\n\r\f />\x00<]|\Z){_TAG_REST_NOGROUP}"
            rf"(?:.*?(?=</(?i:{name})(?:[\t\n\r\f />]|\Z))|.*)")


# One token per match, tried in this order (group numbers = lastindex):
#   1 text run;
#   script or style element with its content (no group: skipped);
#   2/3/4/5 start or end tag: slash, name, attribute text, and the
#     whitespace after it (one token less for the line breaks between tags);
#   6 comment (unterminated: to the end, as a browser shows it);
#   declarations, processing instructions, CDATA, bogus end tags (skipped);
#   7 stray '<' runs, which are text ("a < b").
# Every alternative is possessive, bounded or consumes what it scans, so
# tokenizing is linear in the document.
_TOKEN = re.compile(
    r"([^<]+)"
    rf"|{_raw_text('script')}|{_raw_text('style')}"
    rf"|<(/?)([a-zA-Z][^\t\n\r\f />\x00<]*){_TAG_REST}([\t\n\r\f ]*+)"
    r"|(<!--)(?:.*?-->|.*)"
    r"|<[!?/][^>]*+>?"
    r"|(<<*?)(?=<[a-zA-Z!?/]|[^<]|\Z)",
    re.S)

# Attribute name and optional value inside a start tag.
_ATTR = re.compile(r"""([^\s/>=][^\s/>=]*)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]*))?""")

_SPACE = " \t\n\r\f"

# Attribute names that make a difference to the rendering or the links,
# searched in the lower-cased attribute text: a case-insensitive regex
# search is several times slower. It only decides whether the attributes
# are parsed; an attribute counts when its lower-cased name is one of
# these, and then its lower-cased text is in the lower-cased attribute text.
_WANTED_ATTR = re.compile(r"hidden|style|href|src|action|background|alt")


def _attributes(text: str) -> list[tuple[str, str]]:
    """(lower-case name, unescaped value) of a start tag's attribute text.

    An attribute without a value has the empty value (findall gives ""
    for a group that did not match: no match objects to build).
    """
    out: list[tuple[str, str]] = []
    for name, value in _ATTR.findall(text):
        if value:
            if value[0] in "'\"" and len(value) >= 2 and value[-1] == value[0]:
                value = value[1:-1]
            if "&" in value:
                value = unescape(value)
        out.append((name.lower(), value))
    return out


class _Renderer:
    """Collects visible text and links from a stream of tokens."""

    def __init__(self) -> None:
        # Open elements: (tag, hidden). ``hidden`` is inherited downwards.
        self.stack: list[tuple[str, bool]] = []
        self.out: list[str] = []
        self.links: list[str] = []
        self.pre_depth = 0
        #: Where tokenizing got to (the rest is left to the crude stripper).
        self.pos = 0

    # -- state helpers -------------------------------------------------
    def _newline(self) -> None:
        if self.out and self.out[-1] != "\n":
            self.out.append("\n")

    def _close_to(self, tag: str, scope: frozenset[str] = frozenset()) -> bool:
        """Pop the stack down to and including the innermost ``tag``."""
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            name = stack[i][0]
            if name == tag:
                if self.pre_depth:
                    for popped, _ in stack[i:]:
                        if popped == "pre":
                            self.pre_depth = max(0, self.pre_depth - 1)
                del stack[i:]
                return True
            if name in scope:
                return False
        return False

    # -- tokens ----------------------------------------------------------
    def start(self, tag: str, attr_text: str) -> None:
        flags = _FLAGS.get(tag, 0)
        stack = self.stack
        if stack and flags & (_F_CLOSES_P | _F_SIBLINGS):
            if flags & _F_CLOSES_P:
                self._close_to("p", _SCOPE)
            if flags & _F_SIBLINGS:
                for sibling in _SELF_CLOSING_SIBLINGS[tag]:
                    if self._close_to(sibling, _SCOPE):
                        break
        hidden = (bool(stack) and stack[-1][1]) or bool(flags & _F_INVISIBLE)
        self_closing = False
        alt = None
        if attr_text:
            stripped = attr_text.rstrip(_SPACE)
            # "<br/>" and "<x a='1' />"; not the slash ending an unquoted URL.
            self_closing = stripped.endswith("/") and (
                len(stripped) == 1 or stripped[-2] in " \t\n\r\f\"'")
            # Most attributes (width, face, class...) change nothing here:
            # parse the attribute text only when a name that matters occurs.
            if _WANTED_ATTR.search(attr_text.lower()):
                href = None
                for name, value in _attributes(attr_text):
                    if name == "hidden":
                        hidden = True
                    elif name == "style":
                        if value and _style_hides(value):
                            hidden = True
                    elif name in ("href", "src", "action", "background"):
                        if value and tag not in ("script", "link", "style"):
                            href = value
                    elif name == "alt":
                        alt = value
                if href and len(self.links) < MAX_LINKS and (tag != "img" or not hidden):
                    self.links.append(href.strip())
        if not hidden:
            if flags & _F_BLOCK:
                self._newline()
            elif flags & _F_CELL:
                self.out.append(" ")
            elif tag == "img" and alt:
                self.out.append(f" {alt} ")
        if flags & _F_VOID or self_closing:
            return
        if tag == "pre":
            self.pre_depth += 1
        stack.append((tag, hidden))
        # An element stack this deep is an attack, not a layout; keep memory flat.
        if len(stack) > 2000:
            del stack[1000:1500]

    def end(self, tag: str) -> None:
        # feed() itself pops the common case: an ordinary tag closing the
        # innermost element.
        stack = self.stack
        hidden = bool(stack) and stack[-1][1]
        if tag in _VOID:
            if tag == "br" and not hidden:
                self._newline()
            return
        if self._close_to(tag) and not hidden:
            if tag in _BLOCK:
                self._newline()
            elif tag in _CELL:
                self.out.append(" ")

    def feed(self, html: str, deadline: float) -> int:
        """Render ``html``; return where the time budget stopped it (len = done).

        The hot loop: text runs and tags without attributes are handled
        inline, the rest in ``start``/``end``.
        """
        out = self.out
        stack = self.stack
        start = self.start
        end_tag = self.end
        count = 0
        self.pos = 0
        for match in _TOKEN.finditer(html):
            kind = match.lastindex
            if kind == 1:
                if stack and stack[-1][1]:
                    pass
                else:
                    text = match.group(1)
                    if "&" in text:
                        text = unescape(text)
                    if self.pre_depth:
                        out.append(text)
                    else:
                        # A line break in HTML source is a space on screen;
                        # the rest of the whitespace is collapsed once, in _finish.
                        out.append(text.replace("\n", " ") if "\n" in text else text)
            elif kind == 5:
                slash, tag, attrs, space = match.group(2, 3, 4, 5)
                tag = tag.lower()
                if slash:
                    if stack and stack[-1][0] == tag and tag not in _SPECIAL:
                        stack.pop()  # </b>, </span>...: the innermost element
                    else:
                        end_tag(tag)
                elif attrs or tag in _SPECIAL:
                    start(tag, attrs)
                else:
                    # <b>, <span>, <font>... with no attributes (start's short case).
                    stack.append((tag, bool(stack) and stack[-1][1]))
                    if len(stack) > 2000:
                        del stack[1000:1500]
                if space and not (stack and stack[-1][1]):
                    out.append(space if self.pre_depth else " ")
            elif kind == 7:
                if not (stack and stack[-1][1]):
                    out.append("<")
            count += 1
            if count & 1023 == 0 and time.monotonic() > deadline:
                self.pos = match.end()
                return self.pos
        self.pos = len(html)
        return self.pos


def _finish(parts: list[str]) -> str:
    """Each line's whitespace collapsed to single spaces, empty lines dropped.

    map/filter over built-in methods: the loop runs in C, with no Python
    frame per line.
    """
    lines = map(" ".join, map(str.split, "".join(parts).split("\n")))
    return "\n".join(filter(None, lines))


#: Seconds of tokenizing per document before the crude fallback.
DEFAULT_BUDGET = 0.25

_RUNS_OF_LT = re.compile(r"<{2,}")
_CRUDE_TAG = re.compile(r"<[^<>]{0,4096}>")
_CRUDE_HIDDEN = re.compile(r"<(script|style|title|head)\b[^>]{0,4096}>.{0,200000}?</\1\s*>", re.I | re.S)


def _crude_text(html: str, budget: float) -> str:
    """Tag stripping for what the renderer had no time left for.

    Regex-only and chunked against its own time budget: the rest of an
    adversarial document (megabytes of '<' or entities) is dropped rather
    than allowed to hold up the message.
    """
    deadline = time.monotonic() + budget
    out = []
    chunk = 64 * 1024
    for pos in range(0, len(html), chunk):
        piece = _RUNS_OF_LT.sub("<", html[pos:pos + chunk])
        piece = _CRUDE_TAG.sub(" ", _CRUDE_HIDDEN.sub(" ", piece))
        out.append(unescape(piece) if "&" in piece else piece)
        if time.monotonic() > deadline:
            break
    return "".join(out)


def render(html: str, budget: float = DEFAULT_BUDGET) -> tuple[str, list[str]]:
    """Return (visible text, links) of an HTML document or fragment.

    Tokens are handled against a time budget; whatever is left when it runs
    out (only hostile markup gets there: hundreds of thousands of tags) is
    stripped of tags by a linear-time regex, so the text is still scanned
    and the message never takes long.
    """
    renderer = _Renderer()
    rest = ""
    try:
        stop = renderer.feed(html, time.monotonic() + budget)
        rest = html[stop:]
    except Exception:  # noqa: BLE001 - a view never fails a message
        rest = html[renderer.pos:]
    text = _finish(renderer.out)
    if rest:
        crude = _finish([_crude_text(rest, max(budget, DEFAULT_BUDGET))])
        text = f"{text}\n{crude}" if text and crude else (text or crude)
    return text, renderer.links


def html_to_text(html: str) -> str:
    """The text a reader sees in ``html``."""
    return render(html)[0]
