"""Which files a replay sends, and replaying many of them.

A directory is walked for message files: expectation files, notes, scripts,
archives and hidden files beside the samples are skipped, so ``replay
samples/`` does what it says.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

from milterguard.errors import MilterguardError
from milterguard.replay.conversation import ReplayResult, replay_message

#: Files a directory walk skips: expectation files, notes, scripts.
NON_MESSAGE_SUFFIXES = (".yaml", ".yml", ".md", ".rst", ".json", ".py", ".sh",
                        ".gz", ".bz2", ".xz", ".zip", ".tar", ".orig", ".rej", ".swp")
NON_MESSAGE_PREFIXES = ("README", "LICENSE", "COPYING")


def is_message_file(name: str) -> bool:
    base = os.path.basename(name)
    return not (base.startswith(".") or base.lower().endswith(NON_MESSAGE_SUFFIXES)
                or base.upper().startswith(NON_MESSAGE_PREFIXES))


def collect_files(paths: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Files named directly, plus message files found under directories (sorted)."""
    skip = {os.path.abspath(p) for p in exclude}
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = []
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [os.path.join(root, f) for f in files if is_message_file(f)]
            out += sorted(found)
        elif os.path.exists(path):
            out.append(path)
        else:
            raise MilterguardError(f"no such file or directory: {path}")
    return [p for p in out if os.path.abspath(p) not in skip]


def replay_file(socket_spec: str, path: str, timeout: float = 10.0,
                add_missing_headers: bool = False) -> ReplayResult:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        return ReplayResult(file=path, action="error", reply=f"cannot read: {exc.strerror}")
    return replay_message(socket_spec, raw, name=path, timeout=timeout,
                          add_missing_headers=add_missing_headers)


def replay_files(socket_spec: str, files: list[str], jobs: int = 1,
                 timeout: float = 10.0, add_missing_headers: bool = False
                 ) -> Iterator[ReplayResult]:
    """Results in the order of ``files``; ``jobs`` connections at a time."""
    def one(path: str) -> ReplayResult:
        return replay_file(socket_spec, path, timeout, add_missing_headers)

    if jobs <= 1:
        for path in files:
            yield one(path)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(one, files)


def replay_paths(socket_spec: str, paths: Iterable[str], jobs: int = 1,
                 timeout: float = 10.0, add_missing_headers: bool = False
                 ) -> Iterator[ReplayResult]:
    """Replay files and directory trees (see collect_files)."""
    return replay_files(socket_spec, collect_files(paths), jobs=jobs, timeout=timeout,
                        add_missing_headers=add_missing_headers)
