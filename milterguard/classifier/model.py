"""Token counts to one spam probability: Robinson's method, chi-square combined.

The maths, as Gary Robinson described it and SpamBayes and bogofilter use it
(written here from the published formulas):

- a token seen in ``s`` of ``NS`` spams and ``h`` of ``NH`` hams has the raw
  spam probability p = (s/NS) / (s/NS + h/NH);
- rare tokens are pulled towards "unknown" (x = 0.5) with strength S:
  f = (S*x + n*p) / (S + n), n = s + h;
- only tokens at least ``min_strength`` away from 0.5 count, at most
  ``max_tokens`` of the strongest;
- Fisher's method asks how unlikely the f values are if the message were
  random: H = 1 - chi2Q(-2 * sum(ln f), 2k), S = 1 - chi2Q(-2 * sum(ln(1-f)), 2k),
  and the score is (1 + S - H) / 2: near 1 spam, near 0 ham, and near 0.5
  when the evidence is weak *or* contradicts itself (the "unsure" middle that
  a plain naive Bayes product never admits to).

Everything here is pure computation over a ``Counts`` snapshot; where the
counts come from (the database, a cross-validation fold) is not its business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable


@dataclass
class Counts:
    """Learned counts: token -> (spam messages, ham messages), and totals.

    The value packs both counts into one int (spam << 32 | ham): a million
    tokens cost one dict and one int each, not a tuple each.
    """

    tokens: dict[str, int] = field(default_factory=dict)
    spam: int = 0
    ham: int = 0

    def get(self, token: str) -> tuple[int, int]:
        packed = self.tokens.get(token)
        if packed is None:
            return 0, 0
        return packed >> 32, packed & 0xFFFFFFFF

    def set(self, token: str, spam: int, ham: int) -> None:
        if spam <= 0 and ham <= 0:
            self.tokens.pop(token, None)
        else:
            self.tokens[token] = (max(spam, 0) << 32) | max(ham, 0)

    def add(self, tokens: Iterable[str], label: str, sign: int = 1) -> None:
        """Learn (sign 1) or unlearn (-1) one message's tokens in memory."""
        for token in tokens:
            spam, ham = self.get(token)
            if label == "spam":
                spam += sign
            else:
                ham += sign
            self.set(token, spam, ham)
        if label == "spam":
            self.spam = max(0, self.spam + sign)
        else:
            self.ham = max(0, self.ham + sign)


@dataclass(frozen=True)
class Tuning:
    """The combining's knobs (config ``classifier``)."""

    unknown_strength: float = 0.45
    unknown_prob: float = 0.5
    min_strength: float = 0.25
    max_tokens: int = 150


@dataclass
class Score:
    """One message's classification."""

    probability: float                  # 0 ham .. 1 spam
    clues: list[tuple[str, float]]      # (token, f) that counted, strongest first
    tokens: int                         # tokens the message had


def chi2q(x2: float, dof: int) -> float:
    """P(chi-square with ``dof`` (even) degrees of freedom >= x2)."""
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, dof // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def token_prob(spam: int, ham: int, counts: Counts, tuning: Tuning) -> float:
    n = spam + ham
    spam_ratio = spam / counts.spam if counts.spam else 0.0
    ham_ratio = ham / counts.ham if counts.ham else 0.0
    raw = spam_ratio / (spam_ratio + ham_ratio) if spam_ratio + ham_ratio else tuning.unknown_prob
    s = tuning.unknown_strength
    return (s * tuning.unknown_prob + n * raw) / (s + n)


def classify(tokens: Iterable[str], counts: Counts, tuning: Tuning) -> Score:
    """The spam probability of a message with these tokens."""
    table = counts.tokens
    clues: list[tuple[float, str, float]] = []
    seen = 0
    min_strength = tuning.min_strength
    for token in tokens:
        seen += 1
        packed = table.get(token)
        if packed is None:
            continue   # never seen: f would be exactly unknown_prob
        f = token_prob(packed >> 32, packed & 0xFFFFFFFF, counts, tuning)
        distance = abs(f - 0.5)
        if distance >= min_strength:
            clues.append((distance, token, f))
    if len(clues) > tuning.max_tokens:
        clues.sort(reverse=True)
        del clues[tuning.max_tokens:]
    if not clues:
        return Score(0.5, [], seen)
    # f is never 0 or 1 (the unknown_strength pull keeps it inside), so the
    # logarithms are finite.
    ln_ham = sum(math.log(f) for _, _, f in clues)
    ln_spam = sum(math.log1p(-f) for _, _, f in clues)
    k = 2 * len(clues)
    ham_evidence = 1.0 - chi2q(-2.0 * ln_ham, k)
    spam_evidence = 1.0 - chi2q(-2.0 * ln_spam, k)
    probability = (1.0 + spam_evidence - ham_evidence) / 2.0
    clues.sort(reverse=True)
    return Score(probability, [(token, f) for _, token, f in clues], seen)
