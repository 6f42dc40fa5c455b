"""content.fold.fold: the form phrases and text are compared in."""

from __future__ import annotations

import random

import pytest

from milterguard.content.fold import fold
from milterguard.content import fold as fold_mod


@pytest.mark.parametrize("text, expected", [
    ("Buy  VIAGRA\n now", "buy viagra now"),
    ("ＶＩＡＧＲＡ", "viagra"),                          # fullwidth (NFKC)
    ("𝐯𝐢𝐚𝐠𝐫𝐚", "viagra"),                              # mathematical bold
    ("v\u200bi\u00ada\u200dg\ufeffra", "viagra"),      # zero-width, soft hyphen
    ("víágrá", "viagra"),                               # diacritics
    ("v\u0308iagra", "viagra"),                         # stray combining mark
    ("ᴠɪᴀɢʀᴀ", "viagra"),                               # small capitals
    ("pаypаl", "paypal"),                               # Cyrillic а in a Latin word
    ("РАYPАL", "paypal"),                               # Cyrillic capitals
    ("ΗΕLLΟ", "hello"),                                 # Greek capitals
    ("ѕһор", "shop"),                                   # a word made only of look-alikes
    ("v1agra c1al1s fr3e", "viagra cialis free"),       # digits between letters
    ("İstanbul", "istanbul"),
    ("Straße", "strasse"),
])
def test_disguises_fold(text: str, expected: str) -> None:
    assert fold(text) == expected


@pytest.mark.parametrize("text", [
    "Привет, дорогой друг! Встреча завтра в десять.",   # Russian stays Russian
    "Καλημέρα σας",                         # Greek words with non-look-alike letters
    "中文 テスト 한국어",
])
def test_real_foreign_words_are_not_latinised(text: str) -> None:
    folded = fold(text)
    assert not any("a" <= c <= "z" for c in folded)


@pytest.mark.parametrize("text, expected", [
    ("$100 for 2 items, call 555-0134 by 10.5.2024", "$100 for 2 items, call 555-0134 by 10.5.2024"),
    ("mp3 a4 x86 h2o 1st 3rd", "mp3 a4 x86 h2o 1st 3rd"),
])
def test_numbers_stay_numbers(text: str, expected: str) -> None:
    assert fold(text) == expected


def test_short_lookalike_words_stay() -> None:
    assert fold("он в с") == "он в с"
    assert fold("сосо") == "coco"


def test_idempotent_on_random_mixtures() -> None:
    alphabet = (list("abcxyzAZ0123456789 _-.'’«") +
                list("АаВвЕеЅѕІіКкМмНнОоРрСсТтХхУуЖжПпЙΑαΗηΖζΣσυΥΰάéÉäßİıﬁＡǰ") +
                ["\u0308", "\u0301", "\u200b", "\u00ad"])
    rng = random.Random(1234)
    for _ in range(5000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        once = fold(s)
        assert fold(once) == once, (s, once)


def test_phrase_and_text_meet() -> None:
    phrase = fold("Cheap Viagra")
    assert phrase in fold("Get ⅽheap V\u200bіagra today")


def test_casefold_output_is_left_alone_by_casefold() -> None:
    # _casefold_few replaces each character by its casefold one after the
    # other; that equals str.casefold only because no character that
    # casefold produces is changed by casefold again.
    for code in range(0x110000):
        folded = chr(code).casefold()
        assert all(c.casefold() == c for c in folded), hex(code)


@pytest.mark.parametrize("text", [
    "Caf\u00e9 MEETING \u00c9t\u00e9", "Stra\u00dfe GROSS", "\u0130stanbul I\u0131",
    "\u13a0\u13a1 \uab70 Cherokee", "\u039f\u0394\u039f\u03a3 \u03a3\u03a3", "\ufb01ne \u212a", "A\udc80B",
    "plain ascii ONLY",
])
def test_casefold_few_matches_casefold(text: str) -> None:
    non_ascii = {c for c in text if not c.isascii()}
    assert fold_mod._casefold_few(text, non_ascii) == text.casefold()


@pytest.mark.parametrize("text, expected", [
    ("call 10:00 on 3.4.", False), ("v1agra", True), ("x0", False), ("0x", False),
    ("a0\u00e9", False), ("\u00e9a1b", True), ("a2b a6b", False), ("A1B", False), ("a\udc801b", True),
])
def test_digit_between_letters_prefilter(text: str, expected: bool) -> None:
    assert fold_mod._digit_between_letters(text) is expected
    if not expected:   # the prefilter only skips what the regex would not change
        assert fold_mod._DIGIT_IN_WORD.sub(fold_mod._digits, text) == text
