"""store/health.py: outage bookkeeping and the SMTP path's deadline."""

from __future__ import annotations

import threading

import pytest

from milterguard.store.health import DatabaseHealth, DatabaseUnavailable, Deadline


def test_deadline_passes_results_and_errors_through():
    deadline = Deadline(5.0, workers=2)
    try:
        assert deadline.run(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(KeyError):
            deadline.run({}.__getitem__, "missing")
        gate = threading.Event()
        with pytest.raises(DatabaseUnavailable):
            Deadline(0.05).run(gate.wait, 5)
        gate.set()
    finally:
        deadline.close()


def test_health_logs_an_outage_once(caplog):
    health = DatabaseHealth("postgresql://mg:secret@db.example.net/mg", retry_after=60)
    health.failed(RuntimeError("connection refused"))
    health.failed(RuntimeError("connection refused"))
    assert not health.up and health.outages == 1 and not health.should_try()
    health.succeeded()
    assert health.up and health.should_try()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("event=database_down" in line for line in lines) == 1
    assert sum("event=database_up" in line for line in lines) == 1
    assert not any("secret" in line for line in lines)
