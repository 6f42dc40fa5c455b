"""Logging to stderr (systemd's journal) or syslog's mail facility.

Every line starts with ``milterguard[component]`` and carries key=value
fields, so `grep queue_id=ABC123` or the log scanner can find it.
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
