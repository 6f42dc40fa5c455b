"""`milterguard learn`: teach the classifier the site's own ham and spam.

Messages are read from files, directory trees, mbox files and Maildirs
(replay/mailboxes.py), tokenized exactly as the daemon tokenizes them, and
their counts written to the project database in batches. A message is
known by a digest of its content: learning it again changes nothing,
learning it with the other label moves it, ``--forget`` takes it out. A
running daemon picks the new counts up by itself within its
``classifier.refresh_interval``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from milterguard.classifier.tokendb import TokenWriter, load_counts, message_digest, open_tokendb
from milterguard.classifier.tokens import tokenize
from milterguard.cli.main import add_config_arguments
from milterguard.config import load_config
from milterguard.content.views import MessageViews
from milterguard.replay.message import parse_message
from milterguard.replay.mailboxes import MailSource, mail_sources
from milterguard.store.engines import describe

HELP = """\
Learn messages as spam (--spam) or ham (--ham) for the statistical
classifier; both lists may be given at once. PATH is a message file, a
directory (searched recursively), an mbox file or a Maildir. A message
already learned with the same label is skipped; one learned with the other
label is moved. --forget unlearns the messages given under --spam/--ham.
The classifier acts once it knows classifier.min_spam spams and
classifier.min_ham hams (200 each by default).
"""

#: Messages per database transaction.
BATCH = 500


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("learn", help="train the classifier on ham and spam",
                              description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--spam", nargs="+", default=[], metavar="PATH", help="spam messages")
    p.add_argument("--ham", nargs="+", default=[], metavar="PATH", help="ham messages")
    p.add_argument("--forget", action="store_true",
                   help="unlearn the given messages instead of learning them")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")
    p.set_defaults(func=learn)


@dataclass
class LearnSummary:
    learned: dict[str, int]
    relabelled: int = 0
    known: int = 0
    forgotten: int = 0
    not_learned: int = 0        # --forget on a message never learned
    unreadable: int = 0


class Progress:
    """One self-rewriting line on a terminal; silent elsewhere."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.done = 0
        self._last = 0.0

    def step(self, text: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        width = 30
        filled = width * self.done // max(self.total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] "
                          f"{self.done}/{self.total} files  {text}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.total:
            self.stream.write("\n")
            self.stream.flush()


def learn_sources(writer: TokenWriter, jobs: list[tuple[MailSource, str]], forget: bool,
                  max_bytes: int, progress: Progress, errors: TextIO) -> LearnSummary:
    summary = LearnSummary(learned={"spam": 0, "ham": 0})
    for source, label in jobs:
        try:
            messages = list(source.messages())
        except OSError as exc:
            print(f"milterguard learn: cannot read {source.path}: {exc.strerror}", file=errors)
            summary.unreadable += 1
            progress.step("")
            continue
        for _, raw in messages:
            parsed = parse_message(raw)
            tokens = tokenize(MessageViews(parsed.milter_headers(), parsed.body, max_bytes))
            digest = message_digest(raw)
            if forget:
                outcome = writer.forget(digest, tokens)
                if outcome.forgotten:
                    summary.forgotten += 1
                else:
                    summary.not_learned += 1
            else:
                outcome = writer.learn(digest, tokens, label)
                if outcome.learned:
                    summary.learned[label] += 1
                    summary.relabelled += outcome.relabelled
                else:
                    summary.known += 1
            if writer.pending() >= BATCH:
                writer.commit()
        progress.step(f"spam {summary.learned['spam']} ham {summary.learned['ham']} "
                      f"known {summary.known}")
    writer.commit()
    return summary


def learn(args: argparse.Namespace) -> int:
    if not args.spam and not args.ham:
        print("milterguard learn: give --spam PATH... and/or --ham PATH...", file=sys.stderr)
        return 2
    config = load_config(args.config, args.state_dir)
    max_bytes = int(config.get("message.max_scan_bytes", 2 << 20))
    jobs = [(source, "spam") for source in mail_sources(args.spam)]
    jobs += [(source, "ham") for source in mail_sources(args.ham)]
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = Progress(len(jobs), sys.stderr, show)
    conn = open_tokendb(config.database)
    try:
        summary = learn_sources(TokenWriter(conn), jobs, args.forget, max_bytes,
                                progress, sys.stderr)
        progress.close()
        counts, _ = load_counts(conn)
    finally:
        conn.close()
    if args.forget:
        print(f"forgot {summary.forgotten} message(s); {summary.not_learned} were not learned")
    else:
        print(f"learned {summary.learned['spam']} spam and {summary.learned['ham']} ham "
              f"message(s) ({summary.relabelled} moved from the other label); "
              f"{summary.known} already known")
    if summary.unreadable:
        print(f"{summary.unreadable} file(s) could not be read")
    min_spam = config.get("classifier.min_spam", 200)
    min_ham = config.get("classifier.min_ham", 200)
    ready = counts.spam >= min_spam and counts.ham >= min_ham
    print(f"database {describe(config.database)}: {counts.spam} spam, {counts.ham} ham, "
          f"{len(counts.tokens)} tokens; classifier "
          + ("active" if ready else f"inactive until {min_spam} spam and {min_ham} ham"))
    return 1 if summary.unreadable else 0
