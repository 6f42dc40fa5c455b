"""Text folding shared by phrase rules: what the reader sees, not the bytes.

Phrases and scanned text go through the same ``fold`` so that a phrase
matches however its letters are cased, spaced or disguised.
"""

from __future__ import annotations

import unicodedata

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


def fold(text: str) -> str:
    """NFKC, invisible characters removed, case-folded, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    return " ".join(text.casefold().split())
