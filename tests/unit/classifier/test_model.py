"""Token counts to a probability: Robinson's method, chi-square combining."""

from __future__ import annotations

import math

import pytest

from milterguard.classifier.model import Counts, Tuning, chi2q, classify, token_prob
from tests.classifier_mail import make_message, tokens_of, trained


def test_chi2q_matches_known_values():
    # P(chi2 with 2 dof >= x) = exp(-x/2); with 4 dof: exp(-x/2) * (1 + x/2)
    assert chi2q(3.0, 2) == pytest.approx(math.exp(-1.5))
    assert chi2q(3.0, 4) == pytest.approx(math.exp(-1.5) * 2.5)
    assert chi2q(0.0, 10) == pytest.approx(1.0)
    assert chi2q(2000.0, 300) == pytest.approx(0.0, abs=1e-30)


def test_token_prob_pulls_rare_tokens_towards_unknown():
    counts = Counts(spam=100, ham=100)
    tuning = Tuning()
    assert token_prob(1, 0, counts, tuning) < token_prob(20, 0, counts, tuning) < 1.0
    assert token_prob(0, 20, counts, tuning) < 0.05
    assert token_prob(10, 10, counts, tuning) == pytest.approx(0.5)


def test_classify_separates_unseen_messages():
    counts = trained()
    tuning = Tuning()
    ham = classify(tokens_of(make_message("ham", 500)), counts, tuning)
    spam = classify(tokens_of(make_message("spam", 500)), counts, tuning)
    assert ham.probability < 0.05 < 0.95 < spam.probability
    assert spam.clues and spam.clues[0][1] > 0.9     # strongest spam clue first
    assert classify({"never-seen"}, counts, tuning).probability == 0.5


def test_counts_pack_and_unlearn():
    counts = Counts()
    counts.add({"a", "b"}, "spam")
    counts.add({"a"}, "ham")
    assert counts.get("a") == (1, 1) and counts.get("b") == (1, 0)
    counts.add({"a", "b"}, "spam", -1)
    assert counts.get("a") == (0, 1) and "b" not in counts.tokens
    assert (counts.spam, counts.ham) == (0, 1)
