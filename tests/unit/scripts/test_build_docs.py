"""What the package build generates: man pages from the argparse
definitions, and the commented site config from the built-in defaults."""

from __future__ import annotations

import importlib.util
import os
import re
from types import ModuleType

from milterguard.cli.main import COMMAND_MODULES, build_parser
from milterguard.config import default_config_text, load_config
from tests import REPO_ROOT


def _script(name: str) -> ModuleType:
    path = os.path.join(REPO_ROOT, "scripts", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_and_option_has_its_man_page(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1800000000")
    written = _script("manpages").write_pages(str(tmp_path))
    names = {os.path.basename(p) for p in written}
    commands = [m.replace("_", "-") for m in COMMAND_MODULES]
    assert names == {"milterguard.8"} | {f"milterguard-{c}.8" for c in commands}
    main_page = (tmp_path / "milterguard.8").read_text()
    assert '"2027-01-15"' in main_page           # the date from SOURCE_DATE_EPOCH
    assert "smtpd_milters = unix:milterguard/milterguard.sock" in main_page
    parser = build_parser()
    sub_action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for command, sub in sub_action.choices.items():
        page = (tmp_path / f"milterguard-{command}.8").read_text()
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"\\fB{option.replace('-', chr(92) + '-')}\\fR" in page, (command, option)
    # No line may start with a roff control character that came from text.
    for path in written:
        for line in open(path, encoding="utf-8"):
            if line.startswith((".", "'")):
                assert re.match(r"^\.(TH|SH|TP|PP|nf|fi)\b", line), (path, line)


def test_sample_config_is_every_default_commented_out(tmp_path):
    module = _script("sample-config")
    sample = tmp_path / "milterguard.yaml"
    sample.write_text(module.sample_text())
    # Changes nothing as installed ...
    assert load_config(str(sample), "/x").data == load_config(None, "/x").data
    # ... and shows every default key, ready to uncomment.
    text = sample.read_text()
    for line in default_config_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" + line in text, line
