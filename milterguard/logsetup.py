"""Logging to stderr (systemd's journal) or syslog's mail facility.

The two formats, one line per event, the message part being key=value
fields (so ``grep queue_id=ABC123`` finds a message in either):

- stderr: ``2026-01-05 10:00:00,123 INFO milterguard.session queue_id=...``
  (time, level, logger name, message; the journal adds its own prefix);
- syslog (facility mail, beside Postfix's own lines):
  ``milterguard[PID]: milterguard.session queue_id=...``, syslog adding the
  time and host.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

LEVELS = ("debug", "info", "warning", "error")


def setup_logging(level: str = "info", target: str = "stderr") -> None:
    root = logging.getLogger("milterguard")
    root.handlers.clear()
    if target == "syslog":
        handler: logging.Handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_MAIL)
        handler.setFormatter(logging.Formatter("milterguard[%(process)d]: %(name)s %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
