"""What the statistical classifier costs the milter.

    python3 bench/bench_classifier.py [--messages N] [--rounds R] [--tokens T]

1. CPU per message: the bench message (bench_postfix.MESSAGE, with the
   Received header Postfix adds) through a whole Session built from the
   shipped defaults, once with the classifier on and trained (2000
   synthetic messages, so it acts) and once with it off; the two engines
   run alternately in the same process, R rounds of N messages, each side
   keeping its best round. The difference is the classifier's cost: the
   budget is 0.2 ms per message.
2. A database of T learned tokens (default 1,000,000): how long the
   background load takes, how much memory the counts hold, and how long
   classifying takes in the milter's thread while the loader runs beside
   it (the GIL is shared) against when it is idle: the median and the
   worst of many calls. Loading must never stall the milter.

Synthetic mail only (a seeded generator): the figures are about cost, not
accuracy (that is `make eval`).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import resource
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bench_postfix import MESSAGE
from bench_session import CONFIG, run_one, split_message
from bench_stages import RECEIVED
from milterguard.classifier.model import classify
from milterguard.classifier.runtime import Classifier
from milterguard.classifier.tokendb import TokenWriter, message_digest, open_tokendb
from milterguard.classifier.tokens import tokenize
from milterguard.config import load_config
from milterguard.content.views import MessageViews
from milterguard.milter.engine import Engine

WORDS = [f"{a}{b}{c}" for a in "bcdfglmnprst" for b in "aeiou" for c in "klmnprst"]


def synthetic(kind: str, n: int) -> bytes:
    rnd = random.Random(f"{kind}{n}")
    half = len(WORDS) // 2
    own = WORDS[:half] if kind == "ham" else WORDS[half:]
    body = " ".join(rnd.choice(own) for _ in range(120))
    return (f"From: user{n}@example.{'org' if kind == 'ham' else 'net'}\r\n"
            f"Subject: {' '.join(rnd.choice(own) for _ in range(4))}\r\n"
            f"Message-ID: <{kind}{n}@example.com>\r\n\r\n{body}\r\n").encode()


def train(database: str, count: int) -> None:
    conn = open_tokendb(database)
    writer = TokenWriter(conn)
    for n in range(count):
        for kind in ("ham", "spam"):
            raw = synthetic(kind, n)
            headers, body = split_message(raw)
            writer.learn(message_digest(raw), tokenize(MessageViews(headers, body, 1 << 20)), kind)
    writer.commit()
    conn.close()


def engine_for(tmp: str, name: str, classifier_on: bool) -> Engine:
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as fh:
        fh.write(CONFIG + f"classifier: {{enabled: {str(classifier_on).lower()}}}\n")
    config = load_config(path, tmp)
    engine = Engine.from_config(config, with_store=False)
    if engine.classifier is not None:
        engine.classifier.close()          # no refresh thread during the timing
        engine.classifier.load()
    return engine


def per_message(messages: int, rounds: int) -> None:
    headers, body = split_message(MESSAGE.encode())
    headers = [("Received", RECEIVED)] + headers
    with tempfile.TemporaryDirectory() as tmp:
        train(os.path.join(tmp, "milterguard.db"), 1000)
        engines = {"off": engine_for(tmp, "off", False), "on": engine_for(tmp, "on", True)}
        on = engines["on"]
        assert on.classifier.ready(on.policy.classifier), "classifier did not become ready"
        views = MessageViews(headers, body, 1 << 20)
        score = on.classifier.score(on.policy.classifier, views)
        best = {name: float("inf") for name in engines}
        for engine in engines.values():      # warm caches and lazy compiles
            for _ in range(50):
                run_one(engine, headers, body)
        for _ in range(rounds):
            for name, engine in engines.items():
                start = time.process_time()
                for _ in range(messages):
                    run_one(engine, headers, body)
                best[name] = min(best[name], (time.process_time() - start) / messages)
        for engine in engines.values():
            engine.close()
    extra = best["on"] - best["off"]
    print(f"bench message: {score.tokens} tokens, p={score.probability:.3f}")
    print(f"session CPU, classifier off: {best['off'] * 1e6:7.1f} us/message")
    print(f"session CPU, classifier on:  {best['on'] * 1e6:7.1f} us/message")
    print(f"classifier cost: {extra * 1e6:+.1f} us/message (ratio on/off {best['on'] / best['off']:.3f}; "
          f"budget 200 us; best of {rounds} alternating rounds of {messages})")


def rss_mb() -> float:
    """Resident memory now (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


def big_database(tokens: int) -> None:
    headers, body = split_message(MESSAGE.encode())
    views = MessageViews(headers, body, 1 << 20)
    message_tokens = tokenize(views)
    with tempfile.TemporaryDirectory() as tmp:
        database = os.path.join(tmp, "milterguard.db")
        started = time.monotonic()
        conn = open_tokendb(database)
        writer = TokenWriter(conn)
        rnd = random.Random(7)
        batch = 200_000
        for start in range(0, tokens, batch):
            fake = {f"tok{i}-{rnd.randrange(1 << 30):x}"
                    for i in range(start, min(tokens, start + batch))}
            writer.learn(f"spam-{start}", fake | message_tokens, "spam")
            writer.learn(f"ham-{start}", set(list(fake)[: len(fake) // 2]), "ham")
            writer.commit()
        conn.close()
        del fake
        print(f"\n{tokens:,} tokens written in {time.monotonic() - started:.1f}s "
              f"({os.path.getsize(database) / 1e6:.0f} MB SQLite)")

        # The daemon's way: Classifier.start loads on its own thread.
        classifier = Classifier(database)
        settings = engine_for(tmp, "cfg", True).policy.classifier
        settings = type(settings)(**{**settings.__dict__, "min_spam": 1, "min_ham": 1})

        def one_call() -> float:
            t0 = time.perf_counter()
            counts = classifier.counts
            if counts is not None:
                classify(message_tokens, counts, settings.tuning)
            else:
                tokenize(views)     # what a message costs before the counts are in
            return time.perf_counter() - t0

        idle = [one_call() for _ in range(2000)]
        rss_before = rss_mb()
        loading: list[float] = []
        started = time.monotonic()
        classifier.start(3600)
        while classifier.counts is None:
            loading.append(one_call())
            time.sleep(0.001)        # a milter thread between messages
        load_seconds = time.monotonic() - started
        loaded = [one_call() for _ in range(2000)]
        classifier.close()
        print(f"background load: {load_seconds:.2f}s for {len(classifier.counts.tokens):,} tokens; "
              f"resident memory {rss_before:.0f} -> {rss_mb():.0f} MB")

        def show(name: str, samples: list[float]) -> None:
            print(f"  {name:34} median {statistics.median(samples) * 1e6:7.1f} us   "
                  f"max {max(samples) * 1e3:6.2f} ms   ({len(samples)} calls)")
        print("one classifying call in the milter thread:")
        show("before, no counts (tokenize)", idle)
        show("while the loader thread runs", loading)
        show("after, 1M-token dict", loaded)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    per_message(args.messages, args.rounds)
    if args.tokens:
        big_database(args.tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
