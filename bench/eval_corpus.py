"""Score the running rule set on a labelled mail corpus.

    python3 bench/eval_corpus.py CORPUS_DIR [--socket SPEC] [--config FILE]
                                 [--jobs N] [--timeout S] [--json OUT]

Unless ``--socket`` names a running daemon, this starts one itself
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from milterguard.replay.files import collect_files, replay_files  # noqa: E402

CAUGHT = {"reject", "discard", "quarantine", "tempfail", "tag"}
SLOW_MS = 1000.0

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


class Daemon:
    """A milterguard daemon of our own, on a unix socket in a temp dir."""

    def __init__(self, config: str | None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mg-eval-")
        self.socket_path = os.path.join(self.tmp.name, "milterguard.sock")
        self.spec = f"unix:{self.socket_path}"
        if config is None:
            config = os.path.join(self.tmp.name, "eval.yaml")
            with open(config, "w", encoding="utf-8") as fh:
                fh.write(EVAL_CONFIG)
        self.log_path = os.path.join(self.tmp.name, "daemon.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "milterguard", "run", "--socket", self.spec,
             "--state-dir", self.tmp.name, "-c", config, "--log-level", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT,
            cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited with {self.proc.returncode}:\n{self.tail()}")
            if os.path.exists(self.socket_path):
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    probe.connect(self.socket_path)
                    return
                except OSError:
                    pass
                finally:
                    probe.close()
            time.sleep(0.1)
        raise SystemExit(f"daemon did not listen within {timeout:g}s:\n{self.tail()}")

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


def evaluate(corpus: str, spec: str, jobs: int, timeout: float) -> dict:
    # The corpus's own index files (MANIFEST.tsv) are not mail.
    files = [f for f in collect_files([corpus])
             if not os.path.basename(f).upper().startswith("MANIFEST")
             and not f.lower().endswith((".tsv", ".csv"))]
    folders: dict[str, dict] = {}
    ham_fp: list[tuple[str, str, list[str]]] = []
    flagged: list[tuple[str, str, float, str]] = []
    rule_hits: dict[str, collections.Counter] = {"spam": collections.Counter(),
                                                 "ham": collections.Counter()}
    started = time.monotonic()
    for result in replay_files(spec, files, jobs=jobs, timeout=timeout):
        rel = os.path.relpath(result.file, corpus)
        folder = os.path.dirname(rel) or "."
        label = label_of("/" + rel)
        entry = folders.setdefault(folder, {"label": label, "messages": 0, "caught": 0,
                                            "errors": 0, "ms": 0.0, "max_ms": 0.0,
                                            "actions": collections.Counter()})
        entry["messages"] += 1
        entry["actions"][result.action] += 1
        entry["ms"] += result.ms
        entry["max_ms"] = max(entry["max_ms"], result.ms)
        caught = result.action in CAUGHT
        if caught:
            entry["caught"] += 1
        if result.action == "error":
            entry["errors"] += 1
        if result.action == "error" or result.ms > SLOW_MS:
            flagged.append((rel, result.action, result.ms, result.reply))
        if label in rule_hits and caught:
            rule_hits[label].update(result.hits)
        if label == "ham" and caught:
            ham_fp.append((rel, result.action, list(result.hits)))
    return {"files": len(files), "seconds": time.monotonic() - started, "folders": folders,
            "ham_fp": ham_fp, "flagged": flagged,
            "rule_hits": {k: dict(v.most_common()) for k, v in rule_hits.items()}}


def report(res: dict) -> None:
    print(f"{'folder':44} {'label':10} {'msgs':>6} {'caught%':>8} {'FP%':>7} "
          f"{'errors':>6} {'mean_ms':>8} {'max_ms':>8}")
    totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for folder, e in sorted(res["folders"].items()):
        n = e["messages"]
        fp = pct(e["caught"], n) if e["label"] == "ham" else "     -"
        print(f"{folder:44} {e['label']:10} {n:6d} {pct(e['caught'], n):>8} {fp:>7} "
              f"{e['errors']:6d} {e['ms'] / n:8.1f} {e['max_ms']:8.1f}")
        totals[e["label"]][0] += n
        totals[e["label"]][1] += e["caught"]
    for label, (n, caught) in sorted(totals.items()):
        print(f"total {label}: {n} messages, caught {pct(caught, n).strip()}%")
    print(f"{res['files']} files in {res['seconds']:.1f}s")
    print(f"\nham false positives: {len(res['ham_fp'])}")
    for rel, action, hits in res["ham_fp"]:
        print(f"  FP {action:10} {rel}  rules: {', '.join(hits) or '(none reported)'}")
    print(f"\nslow (> {SLOW_MS:g} ms) or error: {len(res['flagged'])}")
    for rel, action, ms, reply in res["flagged"]:
        print(f"  {action:10} {ms:9.1f} ms {rel} {reply[:100]}")
    for label in ("spam", "ham"):
        hits = res["rule_hits"][label]
        if hits:
            print(f"\nrules on caught {label} (top 25):")
            for rule, count in list(hits.items())[:25]:
                print(f"  {count:5d} {rule}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", metavar="CORPUS_DIR")
    parser.add_argument("--socket", metavar="SPEC", help="a running daemon (else one is started)")
    parser.add_argument("--config", metavar="FILE", help="config for the started daemon")
    parser.add_argument("--jobs", type=int, default=2, help="connections at a time (default 2)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per message")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args()
    if not os.path.isdir(args.corpus):
        parser.error(f"not a directory: {args.corpus}")
    daemon = None
    spec = args.socket
    try:
        if spec is None:
            daemon = Daemon(os.path.abspath(args.config) if args.config else None)
            daemon.wait_ready()
            spec = daemon.spec
        res = evaluate(args.corpus, spec, args.jobs, args.timeout)
    finally:
        if daemon is not None:
            daemon.stop()
    report(res)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1, default=str)
    ham_fp = len(res["ham_fp"])
    return 1 if ham_fp or any(e["errors"] for e in res["folders"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
