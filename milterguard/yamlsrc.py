"""YAML loading that remembers where each value came from.

Admins need "rules/pharmacy.yaml:14: rule pharm-1: field action: ..." rather
than a bare KeyError, so mappings and lists loaded here carry their file and
the line of each key/item. The typed readers on ``LDict`` (flag, number,
integer, duration, strings, networks, listen_address) are the one place where a config
field is checked and turned into a value, so every component reports a bad
field the same way.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable

import yaml

from milterguard.clientaddr import IPNetwork, parse_network
from milterguard.duration import HINT as DURATION_HINT
from milterguard.duration import DurationError, parse_duration
from milterguard.errors import ConfigError
from milterguard.listenaddr import parse_listen_address


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"did you mean 'x'?" for the nearest of ``known``, else the list of them."""
    names = sorted(str(k) for k in known)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(names)


class LDict(dict[Any, Any]):
    """A dict that knows its file and the line of each key (1-based)."""

    file: str = ""
    line: int = 0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lines: dict[Any, int] = {}
        self.files: dict[Any, str] = {}   # per key, where merging mixed files

    def line_of(self, key: Any) -> int:
        return self.lines.get(key, self.line)

    def file_of(self, key: Any) -> str:
        return self.files.get(key, self.file)

    def flag(self, key: str, default: bool) -> bool:
        """A true/false setting, or a ConfigError naming where it is wrong."""
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error("must be true or false", key)
        return value

    def number(self, key: str, default: float, low: float, high: float,
               unit: str = "", rule: str | None = None) -> float:
        """A number within [low, high], or a ConfigError naming where it is wrong."""
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not low <= value <= high:
            what = f"a number of {unit}" if unit else "a number"
            raise self.error(f"must be {what} from {low:g} to {high:g}", key, rule)
        return float(value)

    def integer(self, key: str, default: int, low: int, high: int,
                rule: str | None = None) -> int:
        """A whole number within [low, high], or a ConfigError naming where it is wrong."""
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(f"must be an integer from {low} to {high}", key, rule)
        return value

    def duration(self, key: str, default: float | str) -> float:
        """Seconds from ``300`` or ``5m``/``2d`` (duration.py), or a ConfigError."""
        try:
            return parse_duration(self.get(key, default))
        except DurationError:
            raise self.error(f"must be a duration ({DURATION_HINT})", key) from None

    def strings(self, key: str) -> list[str]:
        """A list of strings (absent or empty: []), or a ConfigError."""
        value = self.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error("must be a list of strings", key)
        return list(value)

    def networks(self, key: str) -> list[IPNetwork]:
        """A list of addresses or networks (``192.0.2.0/24``, ``2001:db8::1``)."""
        value = self.get(key) or []
        if not isinstance(value, list):
            raise self.error("must be a list of addresses or networks", key)
        out = []
        for item in value:
            try:
                out.append(parse_network(item))
            except ValueError as exc:
                raise self.error(str(exc), key) from None
        return out

    def listen_address(self, key: str, default: str = "") -> tuple[str, int] | None:
        """Where a service of ours listens (listenaddr.py); "" = it does not."""
        value = self.get(key, default)
        if value in (None, "", False):
            return None
        try:
            return parse_listen_address(str(value))
        except ValueError as exc:
            raise self.error(str(exc), key) from None

    def unknown_key(self, key: Any, known: Iterable[str], rule: str | None = None) -> ConfigError:
        """The error for a key this mapping may not have, with the nearest
        known one as a suggestion (a misspelt key must never pass silently)."""
        return self.error(f"unknown key {str(key)!r} ({did_you_mean(str(key), known)})",
                          key, rule)

    def error(self, message: str, key: Any = None, rule: str | None = None) -> ConfigError:
        """A ConfigError pointing at this mapping, or at one of its keys."""
        line = self.line_of(key) if key is not None else self.line
        file = self.file_of(key) if key is not None else self.file
        return ConfigError(message, file=file, line=line,
                           field=None if key is None else str(key), rule=rule)


class LList(list[Any]):
    """A list that knows its file and the line of each item."""

    file: str = ""
    line: int = 0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.lines[index] if index < len(self.lines) else self.line


def _construct(node: yaml.Node, file: str, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = LDict()
        out.file, out.line = file, node.start_mark.line + 1
        for key_node, value_node in node.value:
            key = _construct(key_node, file, loader)
            if key in out:
                raise ConfigError(f"duplicate key {key!r}", file=file,
                                  line=key_node.start_mark.line + 1, field=str(key))
            out[key] = _construct(value_node, file, loader)
            out.lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LList()
        seq.file, seq.line = file, node.start_mark.line + 1
        for item in node.value:
            seq.append(_construct(item, file, loader))
            seq.lines.append(item.start_mark.line + 1)
        return seq
    return loader.construct_object(node, deep=True)


def load_yaml_text(text: str, file: str) -> Any:
    """Parse one YAML document; errors become ConfigError with file and line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _construct(node, file, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"YAML syntax: {exc.problem or exc}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML: {exc}", file=file) from None
    finally:
        loader.dispose()


def load_yaml_file(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=path) from None
    return load_yaml_text(text, path)
