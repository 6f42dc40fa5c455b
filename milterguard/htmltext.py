"""HTML rendered to the text a reader sees, with the standard library only.

Spammers hide their words from filters with entities, comments, tags split
inside words, and hide filler text ("hash busters") from the reader with
``display:none`` or a zero font size. Rules must see what the reader sees:
entities decoded, comments/script/style dropped, hidden elements dropped,
block elements turned into line breaks. Links are collected on the way so the
``urls`` view does not parse the HTML a second time.

The parser never raises on malformed markup: unclosed and stray tags are
tolerated the way a browser would roughly tolerate them.
"""

from __future__ import annotations

import re
import time
from html import unescape
from html.parser import HTMLParser

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

# Boundaries an implicit close must not cross.
_SCOPE = frozenset({"table", "div", "td", "th", "blockquote", "ul", "ol",
                    "body", "html"})

_FONT_SIZE = re.compile(r"(?<![-\w])font-size\s*:\s*([0-9]*\.?[0-9]*)\s*(px|pt|em|rem|%)?", re.I)


#: Safety cap on links collected from one part.
MAX_LINKS = 1000


def _style_hides(style: str) -> bool:
    """True when an inline style makes the element invisible to the reader."""
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


class _Renderer(HTMLParser):
    """Collects visible text and links; tolerant of any markup."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        # Open elements: (tag, hidden). ``hidden`` is inherited downwards.
        self.stack: list[tuple[str, bool]] = []
        self.out: list[str] = []
        self.links: list[str] = []
        self.pre_depth = 0
        #: The time budget ran out and the rest was stripped crudely.
        self.truncated = False

    # -- state helpers -------------------------------------------------
    def _hidden(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def _newline(self) -> None:
        if self.out and self.out[-1] != "\n":
            self.out.append("\n")

    def _close_to(self, tag: str, scope: frozenset[str] = frozenset()) -> bool:
        """Pop the stack down to and including the innermost ``tag``."""
        for i in range(len(self.stack) - 1, -1, -1):
            name = self.stack[i][0]
            if name == tag:
                for popped, _ in self.stack[i:]:
                    if popped == "pre":
                        self.pre_depth = max(0, self.pre_depth - 1)
                del self.stack[i:]
                return True
            if name in scope:
                return False
        return False

    # -- HTMLParser callbacks -----------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], self_closing: bool) -> None:
        if tag in _CLOSES_P:
            self._close_to("p", _SCOPE)
        siblings = _SELF_CLOSING_SIBLINGS.get(tag)
        if siblings:
            for sibling in siblings:
                if self._close_to(sibling, _SCOPE):
                    break
        hidden = self._hidden() or tag in _INVISIBLE
        href = None
        for name, value in attrs:
            if name == "hidden":
                hidden = True
            elif name == "style" and value and _style_hides(value):
                hidden = True
            elif name in ("href", "src", "action", "background") and value \
                    and tag not in ("script", "link", "style"):
                href = value
        if href and len(self.links) < MAX_LINKS and (tag != "img" or not hidden):
            self.links.append(href.strip())
        if not hidden:
            if tag in _BLOCK:
                self._newline()
            elif tag in _CELL:
                self.out.append(" ")
            elif tag == "img":
                alt = dict(attrs).get("alt")
                if alt:
                    self.out.append(f" {alt} ")
        if tag in _VOID or self_closing:
            return
        if tag == "pre":
            self.pre_depth += 1
        self.stack.append((tag, hidden))
        # An element stack this deep is an attack, not a layout; keep memory flat.
        if len(self.stack) > 2000:
            del self.stack[1000:1500]

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            if tag == "br" and not self._hidden():
                self._newline()
            return
        was_hidden = self._hidden()
        if self._close_to(tag):
            if not was_hidden and tag in _BLOCK:
                self._newline()
            elif not was_hidden and tag in _CELL:
                self.out.append(" ")

    def handle_data(self, data: str) -> None:
        if self._hidden() or not data:
            return
        if self.pre_depth:
            self.out.append(data)
        else:
            # split/join is much faster than a regex sub on long text; keep a
            # space at either end so words in neighbouring elements stay apart.
            core = " ".join(data.split())
            if data[:1].isspace():
                core = " " + core
            if data[-1:].isspace() and core != " ":
                core += " "
            self.out.append(core)

    # Comments, declarations, processing instructions: never shown.
    def handle_comment(self, data: str) -> None:
        pass

    def handle_decl(self, decl: str) -> None:
        pass

    def handle_pi(self, data: str) -> None:
        pass

    def unknown_decl(self, data: str) -> None:
        pass


def _finish(parts: list[str]) -> str:
    text = "".join(parts)
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


#: Characters handed to html.parser per feed() call.
FEED_CHUNK = 16 * 1024
#: Seconds of html.parser work per document before the crude fallback.
DEFAULT_BUDGET = 0.25

_RUNS_OF_LT = re.compile(r"<{2,}")
_CRUDE_TAG = re.compile(r"<[^<>]{0,4096}>")
_CRUDE_HIDDEN = re.compile(r"<(script|style|title|head)\b[^>]{0,4096}>.{0,200000}?</\1\s*>", re.I | re.S)


def _crude_text(html: str, budget: float) -> str:
    """Tag stripping for what the parser had no time left for.

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

    html.parser is pure Python and slow on pathological markup (hundreds of
    thousands of tags, a megabyte of '<'). It is fed in chunks against a time
    budget; whatever is left when the budget runs out is stripped of tags by
    a linear-time regex, so the text is still scanned and the message never
    takes long.
    """
    parser = _Renderer()
    deadline = time.monotonic() + budget
    pos = 0
    rest = ""
    try:
        while pos < len(html):
            parser.feed(html[pos:pos + FEED_CHUNK])
            pos += FEED_CHUNK
            if pos < len(html) and time.monotonic() > deadline:
                rest = parser.rawdata + html[pos:]
                parser.rawdata = ""
                parser.truncated = True
                break
        else:
            parser.close()
    except Exception:  # noqa: BLE001 - html.parser may assert on odd markup
        rest = (parser.rawdata or "") + html[pos + FEED_CHUNK:]
    text = _finish(parser.out)
    if rest:
        crude = _finish([_crude_text(rest, max(budget, DEFAULT_BUDGET))])
        text = f"{text}\n{crude}" if text and crude else (text or crude)
    return text, parser.links


def html_to_text(html: str) -> str:
    """The text a reader sees in ``html``."""
    return render(html)[0]
