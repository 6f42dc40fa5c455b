"""Synthetic ham and spam for the classifier tests: two vocabularies and a
shared one, mixed by a seeded generator, so the tests need no corpus."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from milterguard.classifier.model import Counts

HAM_WORDS = ("meeting agenda quarterly report budget review minutes project "
             "schedule deadline draft attached proposal committee colleague "
             "thanks regards tomorrow office conference").split()
SPAM_WORDS = ("winner prize lottery claim cheap pills discount guaranteed "
              "urgent bonus casino unclaimed inheritance exclusive refinance "
              "viagra replica bargain millions").split()
COMMON_WORDS = ("the and you for with this that have from your will please "
                "about time more").split()


def make_message(kind: str, n: int, seed: int = 0) -> bytes:
    """A plain message of ``kind`` (ham/spam), different for each ``n``."""
    rnd = random.Random(f"{kind}-{n}-{seed}")
    own = HAM_WORDS if kind == "ham" else SPAM_WORDS
    words = [rnd.choice(own if rnd.random() < 0.5 else COMMON_WORDS) for _ in range(40)]
    subject = " ".join(rnd.choice(own) for _ in range(3))
    sender = "colleague@example.org" if kind == "ham" else f"promo{n}@example.net"
    host = "intranet.example.org" if kind == "ham" else "offers.example.net"
    return (f"From: {sender}\r\nTo: user@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{kind}.{n}.{seed}@example.com>\r\n"
            f"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n\r\n"
            + " ".join(words) + f"\r\nhttp://{host}/page{n}\r\n").encode()


def write_messages(directory, kind: str, count: int, seed: int = 0) -> list:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = directory / f"{kind}-{n}.eml"
        path.write_bytes(make_message(kind, n, seed))
        paths.append(path)
    return paths


def tokens_of(raw: bytes) -> set[str]:
    """The classifier's tokens of a message file, as the daemon would count them."""
    from milterguard.classifier.tokens import tokenize
    from milterguard.content.views import MessageViews
    from milterguard.replay.message import parse_message
    parsed = parse_message(raw)
    return tokenize(MessageViews(parsed.milter_headers(), parsed.body, 1 << 20))


def trained(n: int = 30) -> Counts:
    """Counts learned from ``n`` ham and ``n`` spam messages of make_message."""
    from milterguard.classifier.model import Counts
    counts = Counts()
    for i in range(n):
        counts.add(tokens_of(make_message("ham", i)), "ham")
        counts.add(tokens_of(make_message("spam", i)), "spam")
    return counts
