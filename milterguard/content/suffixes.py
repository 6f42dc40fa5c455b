"""Registered domains: which part of a host name someone registered.

URI blocklists list registered domains (``example.co.uk``, not
``www.example.co.uk``, not ``co.uk``), so a link's host must be cut at the
right place, and "the last two labels" is wrong for every ``co.uk``,
``com.au`` or ``blogspot.com``. The Public Suffix List says where; it is
read from the copy a distribution package maintains (Debian's
``publicsuffix``: ``/usr/share/publicsuffix/public_suffix_list.dat``),
never fetched at run time, so a mail filter makes no web requests and its
answers change only when the package is upgraded.

The list's rules: a plain rule names a public suffix, ``*.`` makes every
label under it one, ``!`` excepts a name from a wildcard; the longest
matching rule wins, an exception beats everything, and a name no rule
matches has its last label as suffix ("*").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from milterguard.errors import MilterguardError

DEFAULT_PATH = "/usr/share/publicsuffix/public_suffix_list.dat"


@dataclass
class SuffixList:
    rules: set[str] = field(default_factory=set)
    wildcards: set[str] = field(default_factory=set)    # "ck" for "*.ck"
    exceptions: set[str] = field(default_factory=set)   # "www.ck" for "!www.ck"

    @classmethod
    def parse(cls, text: str) -> "SuffixList":
        out = cls()
        for line in text.splitlines():
            rule = line.strip().split(" ", 1)[0].lower()
            if not rule or rule.startswith("//"):
                continue
            if rule.startswith("!"):
                out.exceptions.add(rule[1:])
            elif rule.startswith("*."):
                out.wildcards.add(rule[2:])
            else:
                out.rules.add(rule)
        return out

    @classmethod
    def load(cls, path: str) -> "SuffixList":
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise MilterguardError(
                f"public suffix list {path}: {exc.strerror} (Debian: apt-get install "
                "publicsuffix)") from None
        parsed = cls.parse(text)
        if len(parsed.rules) < 100:
            raise MilterguardError(f"public suffix list {path}: only {len(parsed.rules)} "
                                   "rules; not a public suffix list")
        return parsed

    def registered_domain(self, host: str) -> str | None:
        """``a.b.example.co.uk`` -> ``example.co.uk``; None for a bare suffix
        or a name without a dot."""
        labels = host.lower().strip(".").split(".")
        if len(labels) < 2 or not all(labels):
            return None
        suffix_start = len(labels) - 1          # the implicit "*" rule
        for start in range(len(labels)):        # longest candidate first
            candidate = ".".join(labels[start:])
            if candidate in self.exceptions:
                suffix_start = start + 1
                break
            if candidate in self.rules or (
                    start + 1 < len(labels) and ".".join(labels[start + 1:]) in self.wildcards):
                suffix_start = start
                break
        if suffix_start == 0:
            return None
        return ".".join(labels[suffix_start - 1:])


_cache: dict[str, SuffixList] = {}
_cache_lock = threading.Lock()


def suffix_list(path: str = DEFAULT_PATH) -> SuffixList:
    """The list at ``path``, read once per process."""
    with _cache_lock:
        found = _cache.get(path)
        if found is None:
            found = _cache[path] = SuffixList.load(path)
        return found
