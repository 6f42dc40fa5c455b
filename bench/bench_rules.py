"""Rule scaling: decoded-body scanning throughput at 10, 1,000 and 10,000 phrase rules.

    python3 bench/bench_rules.py [--bodies N] [--rounds R] [--no-postfix] [--no-ac]

Generates a word list, 2-4 word phrases from it, one rule file per size
(one phrase rule each, loaded with the real ``load_ruleset``), and bodies
of 2-50 KB in which about a third carry some of the phrases. It times
``ruleset.match("body", [text])`` at each size, alternating sizes round by
round (the machine is shared and noisy), and prints messages/s, MB/s and
the ratio to the 10-rule baseline (target: >= 0.8 at 10,000 rules).

Two comparisons on the same inputs:
- an Aho-Corasick automaton (pyahocorasick, if installed) over the same
  folded text with the same word-boundary rule, against the trie-compiled
  regex of milterguard.matcher.PhraseMatcher;
- Postfix's own body_checks: the phrases as a ``regexp:`` table, queried
  line by line with ``postmap -q - regexp:FILE`` (body_checks see one line
  at a time). Postfix tries every pattern on every line, so at large sizes
  only a sample of lines is fed (sized to take a few seconds) and the
  figure is MB/s over that sample.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from milterguard.content.fold import fold
from milterguard.ruleset.rules import load_ruleset

SIZES = (10, 1000, 10000)
SEED = 4


def make_words(rng: random.Random, count: int = 6000) -> list[str]:
    onsets = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t",
              "v", "w", "z", "br", "cl", "dr", "gr", "pl", "st", "tr", "sh", "ch"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st"]
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                          for _ in range(rng.randint(1, 3))))
    return sorted(words)


def make_phrases(rng: random.Random, words: list[str], count: int) -> list[str]:
    phrases: dict[str, None] = {}
    while len(phrases) < count:
        phrases[" ".join(rng.choice(words) for _ in range(rng.randint(2, 4)))] = None
    return list(phrases)


def make_bodies(rng: random.Random, words: list[str], phrases: list[str], count: int) -> list[str]:
    """Text bodies of 2-50 KB, lines of about 72 characters; a third carry
    one to three of the first ten phrases (so every rule set has hits)."""
    common = ["the", "and", "of", "to", "a", "in", "for", "is", "on", "that", "by",
              "this", "with", "you", "it", "not", "or", "be", "are", "from", "at", "as"]
    bodies = []
    for i in range(count):
        size = rng.randint(2000, 50000)
        tokens: list[str] = []
        length = 0
        while length < size:
            w = rng.choice(common) if rng.random() < 0.5 else rng.choice(words)
            if rng.random() < 0.08:
                w = w.capitalize() + rng.choice([".", ",", "!", ":"])
            tokens.append(w)
            length += len(w) + 1
        if i % 3 == 0:
            for _ in range(rng.randint(1, 3)):
                tokens.insert(rng.randrange(len(tokens)), rng.choice(phrases[:10]).upper())
        lines, line = [], ""
        for t in tokens:
            if len(line) + len(t) + 1 > 72:
                lines.append(line)
                line = t
            else:
                line = f"{line} {t}" if line else t
        lines.append(line)
        bodies.append("\n".join(lines) + "\n")
    return bodies


def write_rules(directory: str, phrases: list[str]) -> None:
    with open(os.path.join(directory, "bench.yaml"), "w", encoding="utf-8") as fh:
        fh.write("rules:\n")
        for i, phrase in enumerate(phrases):
            fh.write(f'  - {{id: p{i}, target: body, phrases: ["{phrase}"], action: reject}}\n')


class AhoCorasickScanner:
    """The same job as PhraseMatcher.search with an Aho-Corasick automaton."""

    def __init__(self, phrases: list[str]) -> None:
        import ahocorasick
        self.auto = ahocorasick.Automaton()
        for i, p in enumerate(phrases):
            key = fold(p)
            if key:
                self.auto.add_word(key, (i, key))
        self.auto.make_automaton()

    def search(self, text: str) -> set[int]:
        text = fold(text)
        found = set()
        n = len(text)
        for end, (i, key) in self.auto.iter(text):
            start = end - len(key) + 1
            if (start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_")) and \
                    (end + 1 == n or not (text[end + 1].isalnum() or text[end + 1] == "_")):
                found.add(i)
        return found


def time_it(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def postfix_table(path: str, phrases: list[str]) -> None:
    """body_checks regexp: lines; Postfix regexp tables are case-insensitive by default."""
    with open(path, "w", encoding="utf-8") as fh:
        for phrase in phrases:
            body = "[[:space:]]+".join(w for w in phrase.split())
            fh.write(f"/(^|[^[:alnum:]_]){body}([^[:alnum:]_]|$)/ REJECT phrase\n")


def postmap_run(table: str, lines: list[str]) -> tuple[float, int]:
    # A private config_directory: postmap needs a main.cf, never the system's.
    confdir = os.path.join(os.path.dirname(table), "pfconf")
    if not os.path.exists(confdir):
        os.makedirs(confdir)
        with open(os.path.join(confdir, "main.cf"), "w", encoding="utf-8") as fh:
            fh.write("compatibility_level = 3.6\n")
    data = ("\n".join(lines) + "\n").encode()
    start = time.perf_counter()
    proc = subprocess.run(["postmap", "-c", confdir, "-q", "-", f"regexp:{table}"], input=data,
                          capture_output=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1) or b"fatal:" in proc.stderr:
        raise RuntimeError(proc.stderr.decode(errors="replace"))
    return elapsed, proc.stdout.count(b"\n")


def bench_postfix(table: str, lines: list[str], budget: float) -> tuple[float, int, int]:
    """MB/s of postmap over as many lines as fit in about ``budget`` seconds."""
    startup, _ = postmap_run(table, [""])
    sample = lines[:200]
    elapsed, _ = postmap_run(table, sample)
    per_line = max(1e-7, (elapsed - startup) / len(sample))
    n = min(len(lines), max(200, int(budget / per_line)))
    elapsed, hits = postmap_run(table, lines[:n])
    nbytes = sum(len(x) + 1 for x in lines[:n])
    # When start-up (table compile) dominates, count it in: a lower bound.
    scan = elapsed - startup if elapsed > 2 * startup else elapsed
    return nbytes / scan / 1e6, n, hits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bodies", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-postfix", action="store_true")
    ap.add_argument("--no-ac", action="store_true")
    ap.add_argument("--postfix-seconds", type=float, default=4.0)
    args = ap.parse_args()

    rng = random.Random(SEED)
    words = make_words(rng)
    phrases = make_phrases(rng, words, max(SIZES))
    bodies = make_bodies(rng, words, phrases, args.bodies)
    mb = sum(len(b.encode()) for b in bodies) / 1e6
    print(f"bodies: {len(bodies)}, {mb:.1f} MB, {mb * 1e3 / len(bodies):.1f} KB average; "
          f"{len(words)} words; phrases of 2-4 words")

    tmp = tempfile.mkdtemp(prefix="mg-bench-rules-")
    try:
        rulesets, ac = {}, {}
        for n in SIZES:
            d = os.path.join(tmp, f"r{n}")
            os.makedirs(d)
            write_rules(d, phrases[:n])
            t0 = time.perf_counter()
            rulesets[n] = load_ruleset(False, [d])
            load_s = time.perf_counter() - t0
            msg = f"rules {n:>6}: load_ruleset + compile {load_s:.2f} s"
            if not args.no_ac:
                try:
                    t0 = time.perf_counter()
                    ac[n] = AhoCorasickScanner(phrases[:n])
                    msg += f"; Aho-Corasick build {time.perf_counter() - t0:.2f} s"
                except ImportError:
                    args.no_ac = True
                    msg += "; pyahocorasick not installed, no Aho-Corasick comparison"
            print(msg)

        # Same hits from both engines (a sanity check, not a benchmark).
        if not args.no_ac:
            for n in SIZES:
                pm = rulesets[n].matchers["body"].phrases
                for body in bodies[:6]:
                    ours = {int(m.rule_id[1:]) for m in pm.search(body)}
                    assert ours == ac[n].search(body), (n, ours, ac[n].search(body))

        times: dict[str, dict[int, list[float]]] = {"match": {n: [] for n in SIZES},
                                                    "trie": {n: [] for n in SIZES},
                                                    "ac": {n: [] for n in SIZES}}
        for r in range(args.rounds):
            order = list(SIZES) if r % 2 == 0 else list(reversed(SIZES))
            for n in order:
                rs = rulesets[n]
                times["match"][n].append(time_it(lambda b, rs=rs: rs.match("body", [b]), bodies))
                pm = rs.matchers["body"].phrases
                times["trie"][n].append(time_it(pm.search, bodies))
                if not args.no_ac:
                    times["ac"][n].append(time_it(ac[n].search, bodies))

        def best(kind: str, n: int) -> float:
            return min(times[kind][n])

        print("\nruleset.match('body', [text]) (best of %d rounds):" % args.rounds)
        base = best("match", SIZES[0])
        for n in SIZES:
            t = best("match", n)
            print(f"  {n:>6} rules: {len(bodies) / t:8.1f} msgs/s  {mb / t:6.2f} MB/s  "
                  f"ratio to 10 rules {base / t:.2f}  (median {statistics.median(times['match'][n]):.2f} s)")
        ratio = base / best("match", SIZES[-1])
        print(f"  target: 10,000 rules >= 0.8 x 10 rules: {'MET' if ratio >= 0.8 else 'NOT MET'} ({ratio:.2f})")

        if not args.no_ac:
            print("\ntrie regex (PhraseMatcher.search) vs Aho-Corasick (fold + automaton + word bounds):")
            for n in SIZES:
                tt, ta = best("trie", n), best("ac", n)
                print(f"  {n:>6} rules: trie {mb / tt:6.2f} MB/s  Aho-Corasick {mb / ta:6.2f} MB/s  "
                      f"AC/trie speed {tt / ta:.2f}")
            fold_t = min(time_it(fold, bodies) for _ in range(2))
            print(f"  (fold alone: {mb / fold_t:.2f} MB/s; both include it)")

        if not args.no_postfix and shutil.which("postmap"):
            lines = [line for b in bodies for line in b.splitlines() if line]
            print("\nPostfix body_checks (postmap -q - regexp:, line by line) vs milterguard:")
            for n in SIZES:
                table = os.path.join(tmp, f"body_checks_{n}")
                postfix_table(table, phrases[:n])
                pf_mbs, used, hits = bench_postfix(table, lines, args.postfix_seconds)
                ours = mb / best("match", n)
                print(f"  {n:>6} rules: postfix {pf_mbs:8.3f} MB/s over {used} lines ({hits} hits)  "
                      f"milterguard {ours:6.2f} MB/s  milterguard/postfix {ours / pf_mbs:8.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
