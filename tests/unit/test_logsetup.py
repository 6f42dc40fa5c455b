"""The two log formats logsetup.py's docstring promises."""

from __future__ import annotations

import logging
import logging.handlers
import os
import re

import pytest

from milterguard.logsetup import setup_logging


@pytest.fixture(autouse=True)
def restore_logger():
    """setup_logging configures the package logger for the process: undo it,
    or later tests' caplog would see nothing (propagation is switched off)."""
    root = logging.getLogger("milterguard")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root.propagate = saved[2]


def _record(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)


def test_stderr_lines_have_time_level_logger_and_fields(capsys):
    setup_logging("info", "stderr")
    logging.getLogger("milterguard.session").info("queue_id=%s action=%s", "ABC123", "reject")
    logging.getLogger("milterguard.session").debug("queue_id=hidden")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO milterguard\.session "
                        r"queue_id=ABC123 action=reject", lines[0]), lines[0]


def test_syslog_lines_carry_program_pid_and_logger(monkeypatch):
    # The syslog handler's formatter, applied without needing /dev/log.
    made = []

    class Handler(logging.Handler):
        def __init__(self, *args, **kw):
            super().__init__()
            made.append(self)

    monkeypatch.setattr(logging.handlers, "SysLogHandler", Handler, raising=True)
    Handler.LOG_MAIL = 2
    setup_logging("info", "syslog")
    (handler,) = made
    line = handler.format(_record("milterguard.bans", "event=ban addr=192.0.2.1"))
    assert line == f"milterguard[{os.getpid()}]: milterguard.bans event=ban addr=192.0.2.1"
