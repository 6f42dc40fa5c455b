"""Messages from what sites keep mail in: files, directory trees, mbox
files and Maildirs, for `learn`, `replay` and `explain`.

A path is one of:
- a Maildir (a directory with ``cur`` and ``new``): every file in those two;
- any other directory: searched recursively, each file read as below;
- an mbox file (its first line starts with ``From ``): split at every
  ``From `` line that follows an empty line, ``>From`` quoting undone;
- anything else: one message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from milterguard.errors import MilterguardError

#: Files a directory walk skips: expectation files, notes, scripts.
NON_MESSAGE_SUFFIXES = (".yaml", ".yml", ".md", ".rst", ".json", ".py", ".sh",
                        ".gz", ".bz2", ".xz", ".zip", ".tar", ".orig", ".rej", ".swp")
NON_MESSAGE_PREFIXES = ("README", "LICENSE", "COPYING")

#: mboxrd quoting: a body line ">From " (any number of ">") lost one ">".
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.M)
_SEPARATOR = re.compile(rb"(?:\A|\n\r?\n)(From [^\n]*\n)")


@dataclass
class MailSource:
    """One file to read: a message file or an mbox."""

    path: str

    def messages(self) -> list[tuple[str, bytes]]:
        """(name, raw message) for each message in the file."""
        split = mbox_messages(self.path)
        if split is not None:
            return split
        with open(self.path, "rb") as handle:
            return [(self.path, handle.read())]


def split_mbox(raw: bytes, name: str) -> Iterator[tuple[str, bytes]]:
    """The messages of an mbox file, named ``NAME:N`` (N from 1)."""
    starts = [m.start(1) for m in _SEPARATOR.finditer(raw)]
    for number, start in enumerate(starts, start=1):
        end = starts[number] if number < len(starts) else len(raw)
        body_start = raw.index(b"\n", start) + 1
        message = raw[body_start:end]
        yield f"{name}:{number}", _QUOTED_FROM.sub(rb"\1", message)


def is_message_file(name: str) -> bool:
    base = os.path.basename(name)
    return not (base.startswith(".") or base.lower().endswith(NON_MESSAGE_SUFFIXES)
                or base.upper().startswith(NON_MESSAGE_PREFIXES))


def is_maildir(path: str) -> bool:
    return all(os.path.isdir(os.path.join(path, sub)) for sub in ("cur", "new"))


def mail_sources(paths: Iterable[str], exclude: Iterable[str] = ()) -> list[MailSource]:
    """Every file to read under ``paths`` (sorted within a directory), but
    not the files named in ``exclude``."""
    skip = {os.path.abspath(p) for p in exclude}
    out: list[MailSource] = []
    for path in paths:
        if os.path.isdir(path):
            if is_maildir(path):
                found = [os.path.join(path, sub, f) for sub in ("cur", "new")
                         for f in os.listdir(os.path.join(path, sub))
                         if not f.startswith(".")]
            else:
                found = []
                for root, dirs, files in os.walk(path):
                    # A Maildir's tmp holds half-delivered mail.
                    dirs[:] = [d for d in dirs if not d.startswith(".")
                               and not (d == "tmp" and is_maildir(root))]
                    found += [os.path.join(root, f) for f in files if is_message_file(f)]
            out += [MailSource(p) for p in sorted(found)]
        elif os.path.exists(path):
            out.append(MailSource(path))
        else:
            raise MilterguardError(f"no such file or directory: {path}")
    return [s for s in out if os.path.abspath(s.path) not in skip]


def mbox_messages(path: str) -> list[tuple[str, bytes]] | None:
    """The messages of ``path`` if it is an mbox holding more than one, else
    None (a plain message file, read as it is)."""
    with open(path, "rb") as handle:
        if handle.read(5) != b"From ":
            return None
        raw = b"From " + handle.read()
    messages = list(split_mbox(raw, path))
    return messages if len(messages) > 1 else None
