"""K-fold cross-validation of the classifier, for bench/eval_corpus.py.

Every labelled message is tokenized once, exactly as the daemon and
`milterguard learn` do; its fold is fixed by its content digest, so a
rerun (or a copy of the message elsewhere in the corpus) lands in the same
fold. For fold k the counts of the other folds are written into a fresh
state directory's database with the same writer `learn` uses, and scored
in-process with the same model the daemon uses.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from milterguard.classifier.model import Counts, classify
from milterguard.classifier.settings import ClassifierSettings
from milterguard.classifier.tokendb import TokenWriter, message_digest, open_tokendb
from milterguard.classifier.tokens import tokenize
from milterguard.content.views import MessageViews
from milterguard.replay.message import parse_message


@dataclass
class Sample:
    path: str
    label: str          # spam or ham
    digest: str
    tokens: set[str]

    def fold(self, folds: int) -> int:
        return int(self.digest[:12], 16) % folds


def prepare(files: list[tuple[str, str]], max_bytes: int = 2 << 20) -> list[Sample]:
    """(path, label) -> tokenized samples."""
    out = []
    for path, label in files:
        with open(path, "rb") as handle:
            raw = handle.read()
        parsed = parse_message(raw)
        views = MessageViews(parsed.milter_headers(), parsed.body, max_bytes)
        out.append(Sample(path, label, message_digest(raw), tokenize(views)))
    return out


def training_counts(samples: list[Sample], folds: int, k: int) -> Counts:
    counts = Counts()
    seen: set[str] = set()
    for sample in samples:
        if sample.fold(folds) != k and sample.digest not in seen:
            seen.add(sample.digest)     # a duplicate is learned once, as by learn
            counts.add(sample.tokens, sample.label)
    return counts


def write_training(database: str, samples: list[Sample], folds: int, k: int) -> int:
    """Learn the other folds into ``database``; returns messages learned."""
    conn = open_tokendb(database)
    try:
        writer = TokenWriter(conn)
        learned = 0
        for sample in samples:
            if sample.fold(folds) != k:
                learned += writer.learn(sample.digest, sample.tokens, sample.label).learned
        writer.commit()
    finally:
        conn.close()
    return learned


def classifier_verdicts(samples: list[Sample], folds: int, k: int,
                        settings: ClassifierSettings, tag_score: float) -> dict[str, tuple[float, bool]]:
    """path -> (probability, caught by the classifier's band alone) for fold k."""
    counts = training_counts(samples, folds, k)
    ready = counts.spam >= settings.min_spam and counts.ham >= settings.min_ham
    out = {}
    for sample in samples:
        if sample.fold(folds) != k:
            continue
        probability = classify(sample.tokens, counts, settings.tuning).probability
        band = settings.band(probability) if ready else None
        caught = bool(band and not band.observe
                      and (band.action != "score" or band.score >= tag_score))
        out[sample.path] = (probability, caught)
    return out
