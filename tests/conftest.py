"""Fixtures shared by every test module (generic ones only).

Module-specific fixtures live next to their tests (tests/e2e/conftest.py for
the real-Postfix ones).
"""

from __future__ import annotations

import os
import socket
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tests import the package from this checkout even without `pip install -e`.
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
# Helper modules next to the tests (pgserver.py) import by name.
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


@pytest.fixture(scope="session")
def repo_root() -> str:
    """The checkout's top directory."""
    return REPO_ROOT


@pytest.fixture
def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- PostgreSQL: one private server for the whole run, a fresh database per test

@pytest.fixture(scope="session")
def pg_server():
    """A private PostgreSQL cluster (tests/pgserver.py), removed after the run."""
    from pgserver import PostgresServer
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg_server):
    """The postgresql:// URL of an empty database, dropped after the test."""
    url = pg_server.create_database()
    try:
        yield url
    finally:
        pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """What `database:` names, once per engine: a SQLite file, then a
    PostgreSQL URL. Tests of the store, greylist, bans and stats take it so
    that both engines run the same assertions."""
    if request.param == "sqlite":
        return str(tmp_path / "milterguard.db")
    return request.getfixturevalue("pg_url")
