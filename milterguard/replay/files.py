"""Which files a replay sends, and replaying many of them.

A directory is walked for message files: expectation files, notes, scripts,
archives and hidden files beside the samples are skipped, so ``replay
samples/`` does what it says; a Maildir gives the messages in its cur and
new, an mbox file each of its messages (replay/mailboxes.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

from milterguard.replay.mailboxes import mail_sources, mbox_messages
from milterguard.replay.conversation import ReplayResult, replay_message


def collect_files(paths: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Files named directly, plus message files found under directories
    (sorted; a Maildir's cur and new, not its tmp)."""
    return [source.path for source in mail_sources(paths, exclude)]


def replay_file(socket_spec: str, path: str, timeout: float = 10.0,
                add_missing_headers: bool = False) -> ReplayResult:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        return ReplayResult(file=path, action="error", reply=f"cannot read: {exc.strerror}")
    return replay_message(socket_spec, raw, name=path, timeout=timeout,
                          add_missing_headers=add_missing_headers)


def _messages(files: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """(name, raw) for each message of an mbox holding several ("FILE:N"),
    (path, None) for any other file (read when its turn comes)."""
    for path in files:
        try:
            split = mbox_messages(path)
        except OSError:
            split = None          # replay_file reports the error
        if split is None:
            yield path, None
        else:
            yield from split


def replay_files(socket_spec: str, files: list[str], jobs: int = 1,
                 timeout: float = 10.0, add_missing_headers: bool = False
                 ) -> Iterator[ReplayResult]:
    """Results in the order of ``files`` (an mbox: one per message);
    ``jobs`` connections at a time."""
    def one(item: tuple[str, bytes | None]) -> ReplayResult:
        name, raw = item
        if raw is None:
            return replay_file(socket_spec, name, timeout, add_missing_headers)
        return replay_message(socket_spec, raw, name=name, timeout=timeout,
                              add_missing_headers=add_missing_headers)

    items = _messages(files)
    if jobs <= 1:
        for item in items:
            yield one(item)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(one, items)


def replay_paths(socket_spec: str, paths: Iterable[str], jobs: int = 1,
                 timeout: float = 10.0, add_missing_headers: bool = False
                 ) -> Iterator[ReplayResult]:
    """Replay files and directory trees (see collect_files)."""
    return replay_files(socket_spec, collect_files(paths), jobs=jobs, timeout=timeout,
                        add_missing_headers=add_missing_headers)
