"""What the classifier counts: tokens from the decoded views the rules read.

A message is reduced to a set of short strings. Body words come from the
decoded text parts (HTML rendered as a reader sees it), so encodings hide
nothing; URL hosts, a few header fields and the shape of the header block
add the structure SpamAssassin's and rspamd's header tests weigh (a
Message-ID no real mailer writes, a missing Date, a mailer name). Each
token is counted once per message (presence, as SpamBayes does): a word
repeated a hundred times is no stronger evidence than once.

Tokens are prefixed by where they came from ("s:" subject, "u:" URL host,
"h:" header name...), so "free" in a Subject and "free" in the body are
learned apart. The token text is what the database stores and what
`explain` shows.
"""

from __future__ import annotations

import re
from milterguard.content.views import MessageViews

#: Body and subject words shorter or longer than this are not kept as words.
MIN_WORD = 3
MAX_WORD = 15
#: Longest token stored (a guard against megabyte "words" in the database).
MAX_TOKEN = 60
#: Characters of body text tokenized (the start of a message says most).
MAX_TEXT_CHARS = 100_000

#: Punctuation stripped from either end of a word ("(word)," -> word).
_STRIP = ".,;:!?\"'()[]{}<>*_=|`~-"
_DIGITS = re.compile(r"\d+")
#: A character class first (not an optional "$"): the regex engine then
#: skips to candidate positions instead of trying every one.
_NUMBER = re.compile(r"[$\d][\d,.]*")
_UNFOLD = re.compile(r"\r?\n(?=[ \t])")
_LETTERS = re.compile(r"[^\W\d_]+")
_ADDR = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")

#: Headers whose value is learned whole (normalised): mailer names and the like.
_WHOLE_VALUE = ("x-mailer", "user-agent", "x-mimeole", "x-msmail-priority",
                "x-priority", "precedence", "importance")
#: Headers never learned by name: the replay harness's and our own.
_SKIP_NAMES = ("x-milterguard", "x-spam-flag", "x-spam-score", "x-spam-status")


def _words(text: str, prefix: str, out: set[str]) -> None:
    # One lower() over the whole text, then split and strip in a
    # comprehension: the fewest Python steps per word found (this is most
    # of the classifier's cost per message).
    words = [w.strip(_STRIP) for w in text.lower().split()]
    if prefix:
        out.update([prefix + w for w in words if MIN_WORD <= len(w) <= MAX_WORD])
    else:
        out.update([w for w in words if MIN_WORD <= len(w) <= MAX_WORD])
    for word in words:
        n = len(word)
        if n > MAX_WORD and not ("@" in word or "://" in word or word.startswith("www.")):
            # SpamBayes' trick: a long run (base64 noise, a hash) says
            # something by its first letter and rough length only. Addresses
            # and links have their own tokens.
            out.add(f"{prefix}skip:{word[0]}{n // 10 * 10}")


def _numbers(text: str, out: set[str]) -> None:
    """Numbers by length (and a currency sign): "$5,000,000" and
    "$1,250,000" say the same thing to a filter."""
    for number in _NUMBER.findall(text):
        if number[0] == "$" and not number[1:2].isdigit():
            number = number[1:].lstrip(",.")     # "$" before no digit
            if not number:
                continue
        digits = sum(c.isdigit() for c in number)
        out.add(f"num:{'$' if number[0] == '$' else ''}{digits}")


def _shape(value: str) -> str:
    """Digits and letters collapsed: "20021001.abc123@x" -> "9.a9a9@x"."""
    return _LETTERS.sub("a", _DIGITS.sub("9", value))


def _domain_tail(host: str, labels: int = 2) -> str:
    parts = host.rstrip(".").split(".")
    return ".".join(parts[-labels:])


_RECEIVED_FROM = re.compile(r"\s*from\s+\(?\[?([\w.-]+)")
_RECEIVED_BY = re.compile(r"\bby\s+\(?\[?([\w.-]+)")
#: Received headers read, newest first (the hops our own side added, and
#: the client that handed the message to them).
MAX_RECEIVED = 6


def _count_bucket(n: int) -> str:
    return str(n) if n < 5 else "5-9" if n < 10 else "10+"


def header_tokens(views: MessageViews, out: set[str]) -> None:
    """Header names present, a few fields by word, value or shape."""
    names = set()
    for name, value in views.headers:
        lname = name.lower()
        if lname in _SKIP_NAMES or lname.startswith("x-replay-"):
            continue
        names.add(lname)
        if lname.startswith("x-") and lname not in _WHOLE_VALUE:
            # Extension fields by the shape of their value: a bulk mailer's
            # campaign ids, a list server's sequence numbers.
            out.add(f"xv:{lname}:" + _shape(" ".join(value.lower().split()))[:30])
    for lname in names:
        out.add("h:" + lname[:MAX_TOKEN])
    for must in ("date", "message-id", "from", "to", "subject", "mime-version"):
        if must not in names:
            out.add("h-missing:" + must)
    out.add("rcvd:" + _count_bucket(views.header_count("received")))
    # The path a message took: ham comes from the same few correspondents'
    # servers, spam from anywhere (SpamBayes' "mine received headers").
    # Host names only, cut to their last two labels: addresses and ids
    # change with every message.
    for value in views.texts("header:received:raw")[:MAX_RECEIVED]:
        for prefix, pattern in (("rcvd-from:", _RECEIVED_FROM), ("rcvd-by:", _RECEIVED_BY)):
            match = pattern.match(value) if prefix == "rcvd-from:" else pattern.search(value)
            if match:
                out.add(prefix + _domain_tail(match.group(1).lower())[:MAX_TOKEN])
    for subject in views.texts("header:subject")[:1]:
        _words(subject, "s:", out)
        letters = [c for c in subject if c.isalpha()]
        if len(letters) >= 8 and all(c.isupper() for c in letters):
            out.add("s-shape:caps")
        if not subject.strip():
            out.add("s-shape:empty")
    for value in views.texts("header:from")[:1]:
        low = value.lower()
        for domain in _ADDR.findall(low)[:1]:
            out.add("from-dom:" + domain[:MAX_TOKEN])
            out.add("from-tail:" + _domain_tail(domain))
        name = low.split("<", 1)[0] if "<" in low else ""
        _words(name, "from-name:", out)
    for value in views.texts("header:message-id:raw")[:1]:
        value = _UNFOLD.sub("", value).strip().strip("<>")
        left, _, right = value.rpartition("@")
        out.add("mid-shape:" + _shape(left)[:MAX_TOKEN])
        out.add("mid-host:" + _domain_tail(right.lower())[:MAX_TOKEN])
    reply_to = views.texts("header:reply-to")
    if reply_to:
        mine = _ADDR.search(reply_to[0].lower())
        sender = _ADDR.search((views.texts("header:from") or [""])[0].lower())
        out.add("reply-to:" + ("same-domain" if mine and sender and mine.group(1) == sender.group(1)
                               else "other"))
    to_values = views.texts("header:to:raw")
    out.add("to-count:" + _count_bucket(sum(v.count("@") for v in to_values)))
    for value in views.texts("header:content-type:raw")[:1]:
        low = value.lower()
        out.add("ct:" + low.split(";", 1)[0].strip()[:MAX_TOKEN])
        match = re.search(r'charset\s*=\s*"?([\w.:-]+)', low)
        if match:
            out.add("charset:" + match.group(1)[:MAX_TOKEN])
    for lname in _WHOLE_VALUE:
        # Raw values: these fields are ASCII, and decoding costs more than
        # the rest of the header tokens together.
        for value in views.texts("header:" + lname + ":raw")[:1]:
            out.add(f"{lname}:" + _shape(" ".join(value.lower().split()))[:MAX_TOKEN])
    for value in views.texts("header:date:raw")[:1]:
        zone = value.strip().rsplit(" ", 1)[-1]
        out.add("date-zone:" + (zone if len(zone) <= 6 else "long"))


def body_tokens(views: MessageViews, out: set[str]) -> None:
    """Words of the decoded text, URL hosts, MIME structure."""
    budget = MAX_TEXT_CHARS
    for text in views.texts("body"):
        if budget <= 0:
            break
        _words(text[:budget], "", out)
        _numbers(text[:budget], out)
        budget -= len(text)
    hosts = views.texts("url-hosts")
    for host in hosts:
        if host.replace(".", "").isdigit() or ":" in host:
            out.add("u:ip-literal")
            continue
        out.add("u:" + host[:MAX_TOKEN])
        out.add("u-tail:" + _domain_tail(host))
    out.add("url-count:" + _count_bucket(len(views.texts("urls"))))
    types = views.texts("mime-types")
    for ctype in types:
        out.add("mime:" + ctype[:MAX_TOKEN])
    if views.texts("html") and "text/plain" not in types:
        out.add("mime-shape:html-only")
    for name in views.texts("attachment-names"):
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        out.add("att-ext:" + ext[:10])


def tokenize(views: MessageViews) -> set[str]:
    """Every token of one message (a set: presence, not frequency)."""
    out: set[str] = set()
    header_tokens(views, out)
    if views.body:
        body_tokens(views, out)
    return out

