"""Text folding shared by phrase rules: what the reader sees, not the bytes.

Phrases and scanned text go through the same ``fold`` so that a phrase
matches however its letters are cased, spaced or disguised:

- NFKC (fullwidth, mathematical and circled letters become plain ones);
- zero-width characters, soft hyphens and bidi controls removed;
- Latin letters with diacritics reduced to their base letter, stray
  combining marks dropped ("v\u0308iagra", "víágra");
- look-alike letters from Cyrillic, Greek and Armenian folded to Latin, but
  only inside a word that already mixes them with Latin letters, or whose
  letters are all look-alikes: a real Russian or Greek word that has letters
  without a Latin twin is left alone, so Cyrillic or Greek mail is not turned
  into Latin gibberish that could meet an English phrase;
- 0 1 3 4 5 read as o i e a s only between two letters ("v1agra",
  "0ff3r" keeps its leading 0): numbers, prices and dates stay numbers;
- case-folded, whitespace collapsed to single spaces.

``fold`` is idempotent (fold(fold(x)) == fold(x)), which the matcher relies
on because phrases are folded by the same function. Pure-ASCII text (most
mail) takes a short path through ``str.lower`` and one regex.
"""

from __future__ import annotations

import re
import unicodedata

# Invisible characters a sender can sprinkle inside words.
_INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e"
    "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\u206a\u206b"
    "\u206c\u206d\u206e\u206f\u3164\ufeff\uffa0"
)

# Look-alikes from other scripts, before case folding (upper and lower case
# map separately: Greek capital Eta looks like H, small eta like n).
_CONFUSABLE = {
    # Cyrillic
    "А": "a", "а": "a", "В": "b", "в": "b", "Е": "e", "е": "e", "Ѕ": "s",
    "ѕ": "s", "І": "i", "і": "i", "Ј": "j", "ј": "j", "К": "k", "к": "k",
    "М": "m", "м": "m", "Н": "h", "н": "h", "О": "o", "о": "o", "Р": "p",
    "р": "p", "С": "c", "с": "c", "Т": "t", "т": "t", "Х": "x", "х": "x",
    "У": "y", "у": "y", "Ү": "y", "ү": "y", "Һ": "h", "һ": "h", "Ԁ": "d",
    "ԁ": "d", "Ԛ": "q", "ԛ": "q", "Ԝ": "w", "ԝ": "w", "Ӏ": "l", "ӏ": "l",
    "Ї": "i", "ї": "i", "Ё": "e", "ё": "e", "Ɡ": "g", "ɡ": "g",
    # Greek
    "Α": "a", "α": "a", "Β": "b", "β": "b", "Ε": "e", "ε": "e", "Ζ": "z",
    "Η": "h", "η": "n", "Ι": "i", "ι": "i", "Κ": "k", "κ": "k", "Μ": "m",
    "Ν": "n", "ν": "v", "Ο": "o", "ο": "o", "Ρ": "p", "ρ": "p", "Τ": "t",
    "τ": "t", "Υ": "y", "υ": "u", "Χ": "x", "χ": "x", "ϲ": "c", "Ϲ": "c",
    "ϳ": "j", "Ϳ": "j",
    # Armenian
    "օ": "o", "Օ": "o", "ս": "u", "Ս": "u", "հ": "h", "ո": "n", "ց": "g",
    "զ": "q",
}

# Latin-script look-alikes (small capitals, IPA): always safe to fold.
_LATIN_EXTRA = {
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h",
    "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o",
    "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w",
    "ʏ": "y", "ᴢ": "z", "ı": "i", "ɑ": "a", "ȷ": "j", "ℓ": "l", "ſ": "s",
    "ø": "o", "đ": "d", "ħ": "h", "ł": "l", "ŀ": "l", "ƀ": "b", "ɨ": "i",
}


def _build_latin_table() -> dict[int, str | None]:
    """Latin letters with diacritics -> base letter; combining marks -> gone."""
    table: dict[int, str | None] = {}
    for code in range(0x00C0, 0x0250):
        char = chr(code)
        base = unicodedata.normalize("NFKD", char)[:1]
        if base.isascii() and base.isalpha() and base != char:
            table[code] = base.lower()
    for code in range(0x1E00, 0x1F00):  # Latin Extended Additional
        base = unicodedata.normalize("NFKD", chr(code))[:1]
        if base.isascii() and base.isalpha():
            table[code] = base.lower()
    for char, repl in _LATIN_EXTRA.items():
        table[ord(char)] = repl
    for start, end in ((0x0300, 0x0370), (0x1AB0, 0x1B00), (0x1DC0, 0x1E00),
                       (0x20D0, 0x2100), (0xFE20, 0xFE30)):
        for code in range(start, end):
            table[code] = None
    for char in _INVISIBLE:
        table[ord(char)] = None
    return table


_LATIN_TABLE = _build_latin_table()
# Invisible characters and combining marks, removed before words are cut so
# that neither can split a word in two.
_STRIP_TABLE = {code: None for code, repl in _LATIN_TABLE.items() if repl is None}


def _latin_letters() -> frozenset[str]:
    """Non-ASCII letters of the Latin script (their presence makes a word mixed)."""
    letters = set()
    for start, end in ((0x00C0, 0x0250), (0x1D00, 0x1DC0), (0x1E00, 0x1F00),
                       (0x2C60, 0x2C80), (0xA720, 0xA800), (0xFB00, 0xFB07)):
        for code in range(start, end):
            char = chr(code)
            if char.isalpha() and unicodedata.name(char, "").startswith("LATIN"):
                letters.add(char)
    letters.update(_LATIN_EXTRA)
    return frozenset(letters)


_LATIN_LETTERS = _latin_letters()


def _derived_confusables() -> None:
    """Accented forms (Greek "ΰ", Cyrillic "ӧ") fold like their base letter,
    so a word's look-alike status is the same before and after folding."""
    for start, end in ((0x0370, 0x0590), (0x1F00, 0x2000)):
        for code in range(start, end):
            char = chr(code)
            base = unicodedata.normalize("NFD", char.casefold()).translate(_STRIP_TABLE)
            if base != char and base in _CONFUSABLE and char not in _CONFUSABLE:
                _CONFUSABLE[char] = _CONFUSABLE[base]


_derived_confusables()
_CONFUSABLE_TABLE = {ord(k): v for k, v in _CONFUSABLE.items()}
_CONFUSABLE_SET = frozenset(_CONFUSABLE)

def _confusable_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    conf = "".join(sorted(_CONFUSABLE))
    latin = "a-zA-Z" + "".join(sorted(_LATIN_LETTERS))
    # Words are runs of word characters; folding letters to letters never
    # changes where a word starts or ends, so a second pass sees the same
    # words (idempotence). Lookaheads keep the test in the regex engine: a
    # Python callback runs only for words that are actually folded.
    mixed = re.compile(rf"(?<!\w)(?=\w*[{conf}])(?=\w*[{latin}])\w+")
    # Words of one or two letters ("в", "он") are too short to disguise a
    # phrase and too common in Cyrillic text to be worth folding.
    only = re.compile(rf"(?<!\w)(?=\w{{3}})[0-9_]*[{conf}][{conf}0-9_]*(?!\w)")
    return mixed, only


_MIXED_WORD, _LOOKALIKE_WORD = _confusable_patterns()
_CONFUSABLE_CHARS = re.compile("[" + "".join(sorted(_CONFUSABLE)) + "]")
# A regex removes sparse characters faster than str.translate with a dict.
_STRIP_RE = re.compile("[" + "".join(sorted(map(chr, _STRIP_TABLE))) + "]+")
_LATIN_RE = re.compile("[" + "".join(sorted(chr(c) for c, r in _LATIN_TABLE.items() if r)) + "]+")


def _latin(match: re.Match[str]) -> str:
    return match.group(0).translate(_LATIN_TABLE)


def _fold_word(match: re.Match[str]) -> str:
    return match.group(0).translate(_CONFUSABLE_TABLE)


# 0 1 3 4 5 between two letters read as letters.
# (The class comes first so the regex engine can skip ahead to candidates.)
_DIGIT_IN_WORD = re.compile(r"[01345](?<=[a-z][01345])(?=[a-z])")
_DIGIT_TABLE = str.maketrans("01345", "oieas")


def _digits(match: re.Match[str]) -> str:
    return match.group(0).translate(_DIGIT_TABLE)


# Bytes shape of text for the test below: a-z -> "a", 0 1 3 4 5 -> "0",
# everything else (a byte of a multi-byte UTF-8 character too) -> " ".
_SHAPE = bytearray(b" " * 256)
_SHAPE[ord("a"):ord("z") + 1] = b"a" * 26
for _digit in b"01345":
    _SHAPE[_digit] = ord("0")
_SHAPE_TABLE = bytes(_SHAPE)


def _digit_between_letters(text: str) -> bool:
    """Whether _DIGIT_IN_WORD can match: a 0 1 3 4 5 between two a-z.

    bytes.translate and one substring search run in C, several times
    faster than the regex scanning text where digits (dates, prices,
    times) occur but never inside a word.
    """
    try:
        return b"a0a" in text.encode("utf-8").translate(_SHAPE_TABLE)
    except UnicodeError:  # lone surrogates: let the regex decide
        return True


_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_STRIP_CHARS = frozenset(map(chr, _STRIP_TABLE))
_LATIN_MAP = {chr(code): repl for code, repl in _LATIN_TABLE.items() if repl}
_LATIN_CHARS = frozenset(_LATIN_MAP)
#: Up to this many non-ASCII characters, fold works on the set of distinct
#: ones (str.replace per character) instead of running every regex over the
#: whole text: mail in English with a "café" or a curly quote.
_FEW_NON_ASCII = 64


def _casefold_few(text: str, non_ascii: set[str]) -> str:
    """text.casefold() for text whose non-ASCII characters are ``non_ascii``.

    casefold maps each character on its own (no context), and what it
    produces is left alone by a second casefold (tests check this for every
    code point), so it can be done in two cheap steps: the ASCII letters by
    bytes.lower on UTF-8 (which only touches A-Z; multi-byte sequences are
    all >= 0x80), then str.replace for each distinct non-ASCII character
    that changes. str.casefold on a non-ASCII string looks up every
    character in the Unicode tables, a few times slower on mail-sized text.
    """
    try:
        text = text.encode("utf-8").lower().decode("utf-8")
    except UnicodeError:  # lone surrogates: the plain way
        return text.casefold()
    for char in non_ascii:
        folded = char.casefold()
        if folded != char:
            text = text.replace(char, folded)
    return text


def _fold_mostly_ascii(text: str) -> str:
    """fold's Unicode steps, done only for the characters present.

    Same result as the general path: each step there is a regex that
    removes or maps single characters, so it can be skipped when none of
    its characters occurs, and done by str.replace when a few do.
    """
    text = unicodedata.normalize("NFKC", text)
    chars = set(_NON_ASCII.findall(text))
    for char in chars & _STRIP_CHARS:
        text = text.replace(char, "")
    if not chars.isdisjoint(_CONFUSABLE_SET):
        text = _LOOKALIKE_WORD.sub(_fold_word, _MIXED_WORD.sub(_fold_word, text))
        text = text.casefold()
    else:
        text = _casefold_few(text, chars - _STRIP_CHARS)
    # casefold maps character by character; what it can produce from the
    # characters present is what the next two steps may meet.
    folded = set("".join(char.casefold() for char in chars))
    for char in folded & _LATIN_CHARS:
        text = text.replace(char, _LATIN_MAP[char])
    for char in folded & _STRIP_CHARS:
        text = text.replace(char, "")
    return text


def fold(text: str) -> str:
    """The form phrases and scanned text are compared in (see module doc)."""
    if text.isascii():
        text = text.lower()
    elif len(text) - len(text.encode("ascii", "ignore")) <= _FEW_NON_ASCII:
        text = _fold_mostly_ascii(text)
    else:
        text = _STRIP_RE.sub("", unicodedata.normalize("NFKC", text))
        if _CONFUSABLE_CHARS.search(text):
            text = _LOOKALIKE_WORD.sub(_fold_word, _MIXED_WORD.sub(_fold_word, text))
        text = _STRIP_RE.sub("", _LATIN_RE.sub(_latin, text.casefold()))
    if any(d in text for d in "01345") and _digit_between_letters(text):
        text = _DIGIT_IN_WORD.sub(_digits, text)
    return " ".join(text.split())
