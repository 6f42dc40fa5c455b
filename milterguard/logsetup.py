"""Logging to stderr (systemd's journal) or syslog's mail facility.

The two formats, one line per event, the message part being key=value
fields (so ``grep queue_id=ABC123`` finds a message in either):

- stderr: ``2026-01-05 10:00:00,123 INFO milterguard.session queue_id=...``
  (time, level, logger name, message; the journal adds its own prefix);
- syslog (facility mail, beside Postfix's own lines):
  ``milterguard[PID]: milterguard.session queue_id=...``, syslog adding the
  time and host.

Log text carries what clients sent (HELO names, addresses, header
values). A raw CR, LF, TAB, ESC or any other control character from them
would forge log lines, split fields or drive the admin's terminal, so every
message is escaped here, in the one place all lines pass (issue 12,
finding 9); tracebacks, which are ours, keep their line breaks.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys

LEVELS = ("debug", "info", "warning", "error")

#: C0 controls, DEL, C1 controls and the Unicode line/paragraph separators.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """``text`` with every control character written as ``\\n``, ``\\r``,
    ``\\t`` or ``\\xNN`` (``\\uNNNN``): one line, nothing a terminal acts on."""
    if not _CONTROLS.search(text):
        return text
    return _CONTROLS.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class EscapingFormatter(logging.Formatter):
    """A Formatter whose message part never holds a control character."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def setup_logging(level: str = "info", target: str = "stderr") -> None:
    root = logging.getLogger("milterguard")
    root.handlers.clear()
    if target == "syslog":
        handler: logging.Handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_MAIL)
        handler.setFormatter(EscapingFormatter("milterguard[%(process)d]: %(name)s %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(EscapingFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
