"""Fixtures and rules shared by both test tiers.

``tests/unit/`` mirrors the package and runs without root, Postfix,
rbldnsd, nftables, a PostgreSQL server or network (``make unit``);
``tests/e2e/`` drives the real components. The ``e2e`` marker is set here,
so it cannot be forgotten: on everything under ``tests/e2e/``, on tests
that use the PostgreSQL server (``pg_server``, ``pg_url``), and on the
PostgreSQL half of ``database``. ``pytest -m "not e2e"`` is the unit tier.
"""

from __future__ import annotations

import pathlib
import socket
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from tests.pgserver import PostgresServer

E2E_DIR = pathlib.Path(__file__).parent / "e2e"
#: Fixtures that start a real server: a test using one is end-to-end.
E2E_FIXTURES = frozenset({"pg_server", "pg_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.parents or E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- PostgreSQL: one private server for the whole run, a fresh database per test

@pytest.fixture(scope="session")
def pg_server() -> Iterator["PostgresServer"]:
    """A private PostgreSQL cluster (tests/pgserver.py), removed after the run."""
    from tests.pgserver import PostgresServer
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg_server: "PostgresServer") -> Iterator[str]:
    """The postgresql:// URL of an empty database, dropped after the test."""
    url = pg_server.create_database()
    try:
        yield url
    finally:
        pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)])
def database(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    """What `database:` names, once per engine: a SQLite file, then a
    PostgreSQL URL (end-to-end: a real server). Tests of the store,
    greylist, bans and stats take it so that both engines run the same
    assertions."""
    if request.param == "sqlite":
        return str(tmp_path / "milterguard.db")
    return str(request.getfixturevalue("pg_url"))
