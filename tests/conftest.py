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
