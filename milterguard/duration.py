"""Durations as admins write them: ``300``, ``90s``, ``10m``, ``1.5h``, ``2d``, ``1w``.

One reader for config keys (through ``LDict.duration``, which names file,
line and field) and command-line options (``bans add --time``, ``stats
--since``), so the same text means the same number of seconds everywhere.
"""

from __future__ import annotations

import re
from typing import Any

from milterguard.errors import MilterguardError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

HINT = "use seconds or a number with s, m, h, d or w, e.g. 90s, 10m, 1h, 2d"


class DurationError(MilterguardError, ValueError):
    """A value that is not a duration; the message says what is accepted."""


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds) or a text with an optional unit.

    Negative values, booleans, ``inf`` and ``nan`` are refused: every
    duration here is a wait, a lifetime or a window.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value >= 0 and value != float("inf"):
            return float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise DurationError(f"not a duration: {value!r} ({HINT})")
