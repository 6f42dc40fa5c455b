"""Durations, and the typed config field readers on LDict."""

from __future__ import annotations

import ipaddress

import pytest

from milterguard.duration import DurationError, parse_duration
from milterguard.errors import ConfigError, MilterguardError
from milterguard.yamlsrc import load_yaml_text


@pytest.mark.parametrize("value, seconds", [
    (300, 300), (2.5, 2.5), ("300", 300), ("90s", 90), ("10m", 600), ("1.5h", 5400),
    ("2d", 172800), ("1w", 604800), (" 5 M ", 300), (0, 0),
])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "", "5x", "-1", -1, True, None, "inf",
                                   float("inf"), float("nan"), "1e3", [5]])
def test_not_durations(value):
    with pytest.raises(DurationError, match="not a duration") as info:
        parse_duration(value)
    # The command line reports any MilterguardError without a traceback.
    assert isinstance(info.value, MilterguardError)


SECTION = """\
greylist:
  delay: 5m
  bad_delay: soon
  prefix: 24
  big_prefix: 40
  truth: yes please
  names: [a.example, b.example]
  not_names: a.example
  networks: [192.0.2.0/24, "2001:db8::1"]
  bad_networks: [192.0.2.0/24, 300.1.2.3]
"""


@pytest.fixture
def section():
    return load_yaml_text(SECTION, "site.yaml")["greylist"]


def test_readers_return_values(section):
    assert section.duration("delay", 1) == 300
    assert section.duration("absent", "2d") == 172800
    assert section.integer("prefix", 0, 8, 32) == 24
    assert section.integer("absent", 16, 8, 32) == 16
    assert section.strings("names") == ["a.example", "b.example"]
    assert section.strings("absent") == []
    assert section.networks("networks") == [ipaddress.ip_network("192.0.2.0/24"),
                                            ipaddress.ip_network("2001:db8::1/128")]


@pytest.mark.parametrize("call, line, field, words", [
    (lambda s: s.duration("bad_delay", 1), 3, "bad_delay", "must be a duration"),
    (lambda s: s.integer("big_prefix", 0, 8, 32), 5, "big_prefix", "integer from 8 to 32"),
    (lambda s: s.flag("truth", False), 6, "truth", "true or false"),
    (lambda s: s.strings("not_names"), 8, "not_names", "list of strings"),
    (lambda s: s.networks("bad_networks"), 10, "bad_networks", "'300.1.2.3'"),
])
def test_readers_name_file_line_and_field(section, call, line, field, words):
    with pytest.raises(ConfigError) as info:
        call(section)
    err = info.value
    assert (err.file, err.line, err.field) == ("site.yaml", line, field)
    assert words in str(err)

