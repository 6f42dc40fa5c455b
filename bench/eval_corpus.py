"""Score the rule set and the classifier on a labelled mail corpus.

    python3 bench/eval_corpus.py CORPUS_DIR [--socket SPEC] [--config FILE]
                                 [--jobs N] [--timeout S] [--json OUT]
                                 [--folds K] [--exclude NAME]...

Three figures per folder: the rules alone, the classifier alone and both
together. The classifier is evaluated by K-fold cross-validation (default
10, so each model learns 90% of the corpus, as a site's classifier learns
all of its mail): the labelled messages are split into K folds by a digest of their
content; for each fold a daemon is started whose database learned the other
folds only (as `milterguard learn` would), and that fold is replayed
through it. No message is ever scored by a classifier that learned it.
"Classifier alone" is the band the classifier gives each message (caught:
a band that rejects, tags or scores at least the tag threshold), computed
in-process from the same counts; "rules" is a daemon with the classifier
off; "both" is the cross-validated daemons' verdicts.

With ``--socket`` only the rules of that running daemon are measured
(no cross-validation). Otherwise this starts its daemons itself
(``python3 -m milterguard run`` on a unix socket in a temporary state
directory) and stops it at the end. Every message file under CORPUS_DIR is
replayed through the daemon over the milter protocol, as Postfix would send
it. The label is in the path: ``/ham/`` or ``/spam/``.

Printed per folder: messages, caught % (anything not delivered clean:
reject, discard, quarantine, tempfail or tag), false-positive % for ham
folders, errors, mean and slowest time per message. Then every ham false
positive with its rule ids, every message slower than 1 s or answered with
an ``error``, and the rules that hit most on spam and on ham.

Without ``--config`` the daemon gets the shipped rules with the checks that
need the Internet's DNS or real envelopes switched off (a corpus carries no
SMTP envelope: the sender is taken from From), so the figures measure the
content rules.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from milterguard.config import load_config
from milterguard.milter.engine import Policy
from milterguard.replay.files import collect_files, replay_files

import crossval

CAUGHT = {"reject", "discard", "quarantine", "tempfail", "tag"}
SLOW_MS = 1000.0
#: The three ways a message is judged, as the report's columns name them.
MODES = ("rules", "bayes", "both")

EVAL_CONFIG = """\
# Written by bench/eval_corpus.py: content rules only, no DNS, no envelope checks.
envelope:
  reject_bad_syntax: false
  reject_non_fqdn_sender: false
  reject_non_fqdn_recipient: false
  reject_unknown_sender_domain: false
  reject_null_mx: false
  reject_unknown_recipient_domain: false
helo:
  reject_unknown: false
greylist:
  enabled: false
rules:
  site: []
"""


def label_of(path: str) -> str:
    parts = path.replace(os.sep, "/")
    if "/ham/" in parts:
        return "ham"
    if "/spam/" in parts:
        return "spam"
    return "unlabelled"


def config_text(base: str | None, classifier: bool) -> str:
    """The eval config (or the user's), with the classifier on or off."""
    if base is None:
        data = yaml.safe_load(EVAL_CONFIG)
    else:
        with open(base, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    data.setdefault("classifier", {})["enabled"] = classifier
    return "# Written by bench/eval_corpus.py\n" + yaml.safe_dump(data)


class Daemon:
    """A milterguard daemon of our own, on a unix socket in a temp dir.

    ``prepare(state_dir)`` runs before it starts (to fill the database).
    """

    def __init__(self, config: str, prepare=None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mg-eval-")
        self.socket_path = os.path.join(self.tmp.name, "milterguard.sock")
        self.spec = f"unix:{self.socket_path}"
        path = os.path.join(self.tmp.name, "eval.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(config)
        if prepare is not None:
            prepare(self.tmp.name)
        self.log_path = os.path.join(self.tmp.name, "daemon.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "milterguard", "run", "--socket", self.spec,
             "--state-dir", self.tmp.name, "-c", path, "--log-level", "info"],
            stdout=self.log, stderr=subprocess.STDOUT,
            cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

    def wait_ready(self, timeout: float = 60.0, log_event: str = "") -> None:
        """Until the socket answers (and ``log_event`` was logged, if given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited with {self.proc.returncode}:\n{self.tail()}")
            if os.path.exists(self.socket_path) and (not log_event or log_event in self.tail()):
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    probe.connect(self.socket_path)
                    return
                except OSError:
                    pass
                finally:
                    probe.close()
            time.sleep(0.1)
        raise SystemExit(f"daemon not ready within {timeout:g}s:\n{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        with open(self.log_path, "rb") as fh:
            return fh.read()[-3000:].decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.tmp.cleanup()


def pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:6.2f}" if whole else "     -"


def corpus_files(corpus: str, exclude: list[str]) -> list[str]:
    # The corpus's own index files (MANIFEST.tsv) are not mail.
    skip = [os.path.join(os.path.abspath(corpus), e) + os.sep for e in exclude]
    return [f for f in collect_files([corpus])
            if not os.path.basename(f).upper().startswith("MANIFEST")
            and not f.lower().endswith((".tsv", ".csv"))
            and not any(os.path.abspath(f).startswith(s) for s in skip)]


def run_daemon(config: str, files: list[str], jobs: int, timeout: float,
               prepare=None, log_event: str = "") -> dict[str, object]:
    daemon = Daemon(config, prepare)
    try:
        daemon.wait_ready(log_event=log_event)
        return {r.file: r for r in replay_files(daemon.spec, files, jobs=jobs, timeout=timeout)}
    finally:
        daemon.stop()


def cross_validate(files: list[str], base_config: str | None, folds: int, jobs: int,
                   timeout: float) -> tuple[dict, dict]:
    """(path -> replay result of both together, path -> (p, caught by bayes))."""
    config_path = None
    text = config_text(base_config, True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(text)
        config_path = fh.name
    try:
        policy = Policy.from_config(load_config(config_path))
    finally:
        os.unlink(config_path)
    labelled = [(f, label_of(f)) for f in files if label_of(f) in ("ham", "spam")]
    samples = crossval.prepare(labelled, policy.max_scan_bytes)
    both: dict = {}
    bayes: dict = {}
    for k in range(folds):
        fold_files = [s.path for s in samples if s.fold(folds) == k]
        bayes.update(crossval.classifier_verdicts(samples, folds, k, policy.classifier,
                                                  policy.tag_score))
        both.update(run_daemon(
            text, fold_files, jobs, timeout,
            prepare=lambda d, k=k: crossval.write_training(
                os.path.join(d, "milterguard.db"), samples, folds, k),
            log_event="event=classifier-ready"))
    return both, bayes


def evaluate(files: list[str], corpus: str, rules: dict, both: dict | None,
             bayes: dict | None) -> dict:
    folders: dict[str, dict] = {}
    ham_fp: list[tuple[str, str, str, list[str]]] = []
    flagged: list[tuple[str, str, float, str]] = []
    rule_hits: dict[str, collections.Counter] = {"spam": collections.Counter(),
                                                 "ham": collections.Counter()}
    for path in files:
        result = rules[path]
        rel = os.path.relpath(path, corpus)
        folder = os.path.dirname(rel) or "."
        label = label_of("/" + rel)
        entry = folders.setdefault(folder, {"label": label, "messages": 0, "errors": 0,
                                            "ms": 0.0, "max_ms": 0.0,
                                            **{m: 0 for m in MODES}})
        entry["messages"] += 1
        entry["ms"] += result.ms
        entry["max_ms"] = max(entry["max_ms"], result.ms)
        verdicts = {"rules": result}
        if both is not None and path in both:
            verdicts["both"] = both[path]
        for mode, res in verdicts.items():
            caught = res.action in CAUGHT
            entry[mode] += caught
            if res.action == "error":
                entry["errors"] += 1
                flagged.append((rel, res.action, res.ms, res.reply))
            elif res.ms > SLOW_MS:
                flagged.append((rel, res.action, res.ms, res.reply))
            if label == "ham" and caught:
                ham_fp.append((mode, rel, res.action, list(res.hits)))
        if bayes is not None and path in bayes:
            entry["bayes"] += bayes[path][1]
            if label == "ham" and bayes[path][1]:
                ham_fp.append(("bayes", rel, f"p={bayes[path][0]:.4f}", []))
        elif "both" not in verdicts:
            entry["both"] = entry["rules"]   # unlabelled: the classifier is not asked
        if label in rule_hits and result.action in CAUGHT:
            rule_hits[label].update(result.hits)
    return {"files": len(files), "folders": folders, "ham_fp": ham_fp, "flagged": flagged,
            "cross_validated": both is not None,
            "rule_hits": {k: dict(v.most_common()) for k, v in rule_hits.items()}}


def report(res: dict) -> None:
    cv = res["cross_validated"]
    modes = MODES if cv else ("rules",)
    print("caught % (ham folders: false positives %)" + (
        "; bayes and both cross-validated" if cv else ""))
    print(f"{'folder':44} {'label':10} {'msgs':>6} " + " ".join(f"{m:>7}" for m in modes)
          + f" {'errors':>6} {'mean_ms':>8} {'max_ms':>8}")
    totals: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for folder, e in sorted(res["folders"].items()):
        n = e["messages"]
        print(f"{folder:44} {e['label']:10} {n:6d} "
              + " ".join(f"{pct(e[m], n):>7}" for m in modes)
              + f" {e['errors']:6d} {e['ms'] / n:8.1f} {e['max_ms']:8.1f}")
        totals[e["label"]]["messages"] += n
        for m in modes:
            totals[e["label"]][m] += e[m]
    for label, t in sorted(totals.items()):
        print(f"total {label}: {t['messages']} messages, caught "
              + ", ".join(f"{m} {pct(t[m], t['messages']).strip()}%" for m in modes))
    print(f"{res['files']} files in {res['seconds']:.1f}s")
    print(f"\nham false positives: {len(res['ham_fp'])}")
    for mode, rel, action, hits in res["ham_fp"]:
        print(f"  FP {mode:5} {action:10} {rel}  rules: {', '.join(hits) or '-'}")
    print(f"\nslow (> {SLOW_MS:g} ms) or error: {len(res['flagged'])}")
    for rel, action, ms, reply in res["flagged"]:
        print(f"  {action:10} {ms:9.1f} ms {rel} {reply[:100]}")
    for label in ("spam", "ham"):
        hits = res["rule_hits"][label]
        if hits:
            print(f"\nrules on {label} caught by the rules alone (top 25):")
            for rule, count in list(hits.items())[:25]:
                print(f"  {count:5d} {rule}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", metavar="CORPUS_DIR")
    parser.add_argument("--socket", metavar="SPEC",
                        help="a running daemon: measure its rules only (no cross-validation)")
    parser.add_argument("--config", metavar="FILE", help="config for the started daemons")
    parser.add_argument("--jobs", type=int, default=2, help="connections at a time (default 2)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per message")
    parser.add_argument("--folds", type=int, default=10,
                        help="cross-validation folds (default 10; 0 = rules only)")
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME",
                        help="leave out this folder of the corpus (repeatable)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args()
    if not os.path.isdir(args.corpus):
        parser.error(f"not a directory: {args.corpus}")
    if args.folds == 1 or args.folds < 0:
        parser.error("--folds must be 0 or at least 2")
    config = os.path.abspath(args.config) if args.config else None
    files = corpus_files(args.corpus, args.exclude)
    started = time.monotonic()
    both = bayes = None
    if args.socket:
        rules = {r.file: r for r in replay_files(args.socket, files, jobs=args.jobs,
                                                 timeout=args.timeout)}
    else:
        rules = run_daemon(config_text(config, False), files, args.jobs, args.timeout)
        if args.folds:
            both, bayes = cross_validate(files, config, args.folds, args.jobs, args.timeout)
    res = evaluate(files, args.corpus, rules, both, bayes)
    res["seconds"] = time.monotonic() - started
    report(res)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1, default=str)
    fp = [x for x in res["ham_fp"] if x[0] == ("both" if both is not None else "rules")]
    return 1 if fp or any(e["errors"] for e in res["folders"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
