"""A PostgreSQL that wants a password: libpq's passfile, PGPASSFILE, never a log line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from milterguard.store import engines
from milterguard.store.hits import HitStore
from milterguard.verdict import Action, Hit

PASSWORD = "s3cret-Pw-17"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def server():
    from tests.pgserver import PostgresServer
    srv = PostgresServer(password=PASSWORD).start()
    try:
        yield srv
    finally:
        srv.remove()


def _passfile(path, port: int) -> str:
    path.write_text(f"127.0.0.1:{port}:*:postgres:{PASSWORD}\n")
    os.chmod(path, 0o600)          # libpq ignores a passfile others can read
    return str(path)


def test_password_from_passfile_or_pgpassfile(server, tmp_path, monkeypatch):
    url = server.create_database()
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.delenv("PGPASSFILE", raising=False)
    with pytest.raises(engines.ERRORS):
        engines.connect(url).close()            # no password: refused
    passfile = _passfile(tmp_path / "pgpass", server.port)
    conn = engines.connect(f"{url}?passfile={passfile}")
    assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    conn.close()
    monkeypatch.setenv("PGPASSFILE", passfile)
    store = HitStore(url)
    store.record([Hit("r1", "dnsbl", "connect", Action.REJECT, client_addr="192.0.2.7")])
    assert store.close()


def test_password_never_in_logs_or_errors(server, tmp_path, caplog):
    url = server.create_database()
    wrong = url.replace("postgres@", "postgres:Wrong-Pw-99@")
    with caplog.at_level(logging.INFO):
        store = HitStore(wrong, retry_max=0.1)
        store.record([Hit("r1", "dnsbl", "connect", Action.REJECT, client_addr="192.0.2.7")])
        assert not store.close(1.0)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "event=database_down" in text and "Wrong-Pw-99" not in text
    config = tmp_path / "c.yaml"
    config.write_text(f'database: "{wrong}"\n')
    proc = subprocess.run([sys.executable, "-m", "milterguard", "stats", "-c", str(config),
                           "--state-dir", str(tmp_path)], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 1
    assert "password authentication failed" in proc.stderr
    assert "Wrong-Pw-99" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
