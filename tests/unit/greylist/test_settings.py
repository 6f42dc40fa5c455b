"""The greylist: section read into GreylistSettings."""

from __future__ import annotations

import pytest

from milterguard.config import load_config
from milterguard.errors import ConfigError
from milterguard.greylist.settings import GreylistSettings
from milterguard.yamlsrc import load_yaml_text


def test_settings_from_shipped_config(tmp_path):
    s = GreylistSettings.from_section(load_config(None, str(tmp_path)).section("greylist"))
    assert s.enabled is False  # opt-in on a first install
    assert (s.delay, s.retry_window, s.lifetime) == (300, 2 * 86400, 35 * 86400)
    assert (s.ipv4_prefix, s.ipv6_prefix, s.auto_allowlist_after) == (24, 64, 5)


def test_config_errors_name_file_and_line():
    section = load_yaml_text("greylist:\n  delay: soon\n", "site.yaml")["greylist"]
    with pytest.raises(ConfigError) as info:
        GreylistSettings.from_section(section)
    assert "site.yaml:2" in str(info.value) and "delay" in str(info.value)
    section = load_yaml_text("greylist:\n  allow:\n    networks: [banana]\n",
                             "site.yaml")["greylist"]
    with pytest.raises(ConfigError) as info:
        GreylistSettings.from_section(section)
    assert "site.yaml:3" in str(info.value)
    section = load_yaml_text("greylist:\n  delay: 1h\n  retry_window: 30m\n",
                             "site.yaml")["greylist"]
    with pytest.raises(ConfigError, match="retry_window"):
        GreylistSettings.from_section(section)
