"""Built-in defaults overlaid by a site file: where each value comes from."""

from __future__ import annotations

from milterguard.config import load_config


def test_merged_values_and_sections_point_at_the_file_that_wrote_them(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("# site\nbans:\n  default:\n    growth: 3\n")
    config = load_config(str(site), str(tmp_path / "state"))
    bans = config.section("bans")
    default = bans["default"]
    assert default["growth"] == 3 and default["max_hits"] >= 1   # overlaid, rest kept
    assert (default.file_of("growth"), default.line_of("growth")) == (str(site), 4)
    assert default.file_of("max_hits") == "<built-in defaults>"
    # The sections the site file wrote are the site's, for errors about a section.
    assert (bans.file, bans.line) == (str(site), 3)
    assert (default.file, default.line) == (str(site), 4)
    assert str(default.error("broken")).startswith(f"{site}:4: broken")
    # A section the site file does not touch stays the defaults'.
    assert config.section("greylist").file == "<built-in defaults>"
