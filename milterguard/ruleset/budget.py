"""A message's allowance of regular-expression time.

Every search already has a timeout (``matcher.REGEX_TIMEOUT``), but one
message can multiply it: 300 headers or 200 text parts against one pattern
that backtracks catastrophically took 75-99 s before this existed. The
budget bounds the regex time of a message as a whole. Once it is spent the
remaining searches are skipped, and the session reports the message as not
fully scanned (finding ``scan:budget``, with the action the site chose), so
running out is never a silent way past the rules.

Time is the wall clock given (``time.monotonic``; a test passes its own),
summed over the searches only: the time between end of headers and end of
message is the client's, not ours.
"""

from __future__ import annotations

import time
from typing import Callable


class ScanBudget:
    """Regex seconds left for one message, and what running out cost."""

    __slots__ = ("seconds", "spent", "clock", "skipped", "timed_out")

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = float(seconds)
        self.clock = clock
        self.spent = 0.0
        #: Searches not run because the budget was spent.
        self.skipped = 0
        #: Rule ids whose search hit a time limit (theirs or the budget's),
        #: first seen first: on that text they could not say whether they hit.
        self.timed_out: dict[str, None] = {}

    def remaining(self) -> float:
        return self.seconds - self.spent

    @property
    def exceeded(self) -> bool:
        """True when some rule could not read some text in full."""
        return bool(self.skipped or self.timed_out)

    def describe(self) -> str:
        """What was lost, for the finding's detail and the log."""
        parts = [f"regex time {self.spent:.2f}s of {self.seconds:g}s"]
        if self.skipped:
            parts.append(f"{self.skipped} searches skipped")
        if self.timed_out:
            parts.append("timed out: " + ",".join(list(self.timed_out)[:10]))
        return "; ".join(parts)
