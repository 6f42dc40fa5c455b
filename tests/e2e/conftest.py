"""Fixtures for end-to-end tests: a private Postfix and the milterguard daemon.

Both are real processes. Every one started here is stopped in teardown,
also when the test fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable, Iterator

import pytest

from tests import REPO_ROOT
from tests.e2e.postfix import (MilterProcess, PostfixInstance, milter_socket_spec,
                               milterguard_argv, postfix_milter_spec)


class MilterguardDaemon(MilterProcess):
    """`python3 -m milterguard run` on a socket of the test's choice."""

    def __init__(self, config: str | None, spec: str, state_dir: str, log_path: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        super().__init__(milterguard_argv(config, spec, state_dir), spec, log_path,
                         env=env, cwd=REPO_ROOT)
        self.config = config
        self.state_dir = state_dir

    @property
    def postfix_spec(self) -> str:
        return postfix_milter_spec(self.spec)

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in self.log_text().splitlines() if needle in line]


@pytest.fixture
def e2e_dir() -> Iterator[str]:
    """A short-named temporary directory that the postfix user can traverse.

    Short because a unix socket path must stay under 108 bytes.
    """
    path = tempfile.mkdtemp(prefix="mg-e2e-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def postfix_factory(e2e_dir: str) -> Iterator[Callable[..., PostfixInstance]]:
    """``make(params)`` starts a private Postfix with extra main.cf settings."""
    started: list[PostfixInstance] = []

    def make(params: dict[str, str] | None = None) -> PostfixInstance:
        inst = PostfixInstance(params, base_dir=os.path.join(e2e_dir, f"pf{len(started)}"))
        started.append(inst)
        return inst.start()

    try:
        yield make
    finally:
        for inst in started:
            inst.stop()


@pytest.fixture
def postfix(postfix_factory: Callable[..., PostfixInstance]) -> PostfixInstance:
    """A private Postfix without milters."""
    return postfix_factory()


@pytest.fixture
def milterguard_factory(e2e_dir: str) -> Iterator[Callable[..., MilterguardDaemon]]:
    """``start(config_text=None, kind="unix", config_path=None, spec=None)`` runs the daemon.

    ``spec`` puts the socket somewhere else than the test's directory.

    ``config_text`` is YAML written to a file in the test's directory; ``config_path`` names an existing file. The
    daemon's stderr is kept in ``daemon.log_path``.
    """
    started: list[MilterguardDaemon] = []

    def start(config_text: str | None = None, kind: str = "unix",
              config_path: str | None = None, spec: str | None = None) -> MilterguardDaemon:
        n = len(started)
        if config_text is not None:
            config_path = os.path.join(e2e_dir, f"milterguard{n}.yaml")
            with open(config_path, "w", encoding="utf-8") as fh:
                fh.write(config_text)
        state_dir = os.path.join(e2e_dir, f"state{n}")
        daemon = MilterguardDaemon(config_path, spec or milter_socket_spec(kind, e2e_dir, f"mg{n}"),
                                   state_dir, os.path.join(e2e_dir, f"milterguard{n}.log"))
        started.append(daemon)
        return daemon.start(timeout=30)

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()

