"""One truth for the Postfix wiring: the README shows the snippet's settings
exactly, and the snippet's unix path is the daemon's default socket seen
from Postfix's queue directory (tests/e2e/test_postfix_chroot.py proves
that it works, chrooted and not)."""

from __future__ import annotations

import os
import re

from milterguard.config import load_config
from tests import REPO_ROOT as REPO
QUEUE_DIR = "/var/spool/postfix"


def setting_lines(text: str) -> list[str]:
    """main.cf settings, active or commented out as alternatives."""
    return [line.strip() for line in text.splitlines()
            if re.match(r"^#?[a-z_]+ =", line.strip())]


def snippet() -> str:
    with open(os.path.join(REPO, "packaging", "postfix-main.cf.snippet"), encoding="utf-8") as fh:
        return fh.read()


def test_readme_shows_the_snippet():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    block = re.search(r"<!-- postfix-snippet: begin.*?-->\n```\n(.*?)```\n<!-- postfix-snippet: end -->",
                      readme, re.S)
    assert block, "README lost its postfix-snippet block"
    assert setting_lines(block.group(1)) == setting_lines(snippet())


def test_snippet_reaches_the_default_socket_from_the_queue_directory():
    spec = load_config(None, "/nonexistent").socket
    assert spec.startswith(f"unix:{QUEUE_DIR}/")
    relative = spec[len(f"unix:{QUEUE_DIR}/"):]
    active = {key.strip(): value.strip() for key, _, value in
              (line.partition("=") for line in setting_lines(snippet()) if not line.startswith("#"))}
    assert active["smtpd_milters"] == f"unix:{relative}"
    assert active["milter_default_action"] == "tempfail"


def test_units_listen_where_the_snippet_points():
    """The daemon's unit uses the default socket and may write its directory."""
    with open(os.path.join(REPO, "packaging", "milterguard.service"), encoding="utf-8") as fh:
        unit = fh.read()
    socket_dir = os.path.dirname(load_config(None, "/nonexistent").socket[len("unix:"):])
    assert "--socket" not in unit
    assert re.search(r"^ReadWritePaths=.*\s-?" + re.escape(socket_dir) + r"(\s|$)", unit, re.M), \
        "the unit's ProtectSystem=strict would keep the daemon from creating its socket"
