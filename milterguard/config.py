"""The daemon's configuration: built-in defaults plus an optional site file.

Sections stay plain (line-aware) dicts; each component validates its own
section and raises ConfigError with the file and line it got them from.
"""

from __future__ import annotations

import copy
import os
import socket
from importlib import resources
from typing import Any

from milterguard.errors import ConfigError
from milterguard.store import engines
from milterguard.yamlsrc import LDict, load_yaml_file, load_yaml_text

DEFAULT_CONFIG_NAME = "default.yaml"
ENV_STATE_DIR = "MILTERGUARD_STATE_DIR"


def default_config_text() -> str:
    return resources.files("milterguard.data").joinpath(DEFAULT_CONFIG_NAME).read_text("utf-8")


def _merge(base: LDict, over: LDict) -> LDict:
    """Overlay ``over`` onto ``base``: mappings merge, everything else replaces."""
    out = copy.copy(base)
    # Every key keeps the file and line it came from; the section itself is
    # the site's (an error about the section points where the admin edited).
    out.lines = {key: base.line_of(key) for key in base}
    out.files = {key: base.file_of(key) for key in base}
    out.file, out.line = over.file, over.line
    for key, value in over.items():
        if isinstance(value, LDict) and isinstance(out.get(key), LDict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
        out.lines[key] = over.line_of(key)
        out.files[key] = over.file_of(key)
    return out


class Config:
    """Merged configuration with a few derived paths resolved."""

    def __init__(self, data: LDict, path: str | None,
                 state_dir_override: str | None = None) -> None:
        self.data = data
        self.path = path
        state_dir = (state_dir_override or os.environ.get(ENV_STATE_DIR)
                     or str(data.get("state_dir") or ""))
        if not state_dir:
            raise data.error("must be a directory path", "state_dir")
        self.state_dir = os.path.abspath(state_dir)
        self.socket = self._expand("socket")
        self.database = self._expand("database")
        if engines.is_url(self.database):
            problem = engines.check_url(self.database)
            if problem:
                raise self.data.error(problem, "database")

    def _expand(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str) or not value:
            raise self.data.error("must be a non-empty string", key)
        return value.replace("{state_dir}", self.state_dir)

    @property
    def host_name(self) -> str:
        """This MX host's name in a shared database: ``server.hostname``,
        else the machine's name."""
        name = self.get("server.hostname") or ""
        return str(name).strip().lower().rstrip(".") or machine_host_name()

    def section(self, name: str) -> LDict:
        """A section as a line-aware dict (empty if absent)."""
        value = self.data.get(name)
        if value is None:
            empty = LDict()
            empty.file = self.path or "<defaults>"
            return empty
        if not isinstance(value, LDict):
            raise self.data.error("must be a mapping", name)
        return value

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def sources(self) -> list[str]:
        """Files whose change means the config must be re-read."""
        return [self.path] if self.path else []


def machine_host_name() -> str:
    return socket.getfqdn().lower()


def load_config(path: str | None = None, state_dir: str | None = None) -> Config:
    """Defaults, overlaid by the file at ``path`` if given.

    ``state_dir`` (from the command line) beats both files and the
    MILTERGUARD_STATE_DIR environment variable.
    """
    data = load_yaml_text(default_config_text(), "<built-in defaults>")
    if path:
        site = load_yaml_file(path)
        if site is None:
            site = LDict()
        if not isinstance(site, LDict):
            raise ConfigError("top level must be a mapping", file=path, line=1)
        data = _merge(data, site)
    return Config(data, path, state_dir)
