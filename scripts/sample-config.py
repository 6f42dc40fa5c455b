#!/usr/bin/env python3
"""Write the commented site config that packages install as
/etc/milterguard/milterguard.yaml:

    python3 scripts/sample-config.py OUTFILE

Every built-in default (milterguard/data/default.yaml), with its
explanation, commented out: the file changes nothing until the admin
uncomments a key, so a later release's new defaults still take effect, and
it cannot drift from the defaults because it is made from them at build
time.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = os.path.join(REPO, "milterguard", "data", "default.yaml")

HEADER = """\
# milterguard site configuration (milterguard run/check/... -c this file).
#
# Every key below is a built-in default, shown commented out: uncomment and
# change only what your site needs; mappings merge key by key, lists and
# scalars replace. Check a change with `milterguard check -c THIS_FILE`;
# the daemon re-reads this file and the rules when they change.
# Site rules: /etc/milterguard/rules.d/*.yaml. See milterguard(8).
#
"""


def sample_text() -> str:
    with open(DEFAULTS, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    out = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            out.append(line)
        else:
            out.append("#" + line)
    return HEADER + "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: sample-config.py OUTFILE")
    with open(sys.argv[1], "w", encoding="utf-8") as fh:
        fh.write(sample_text())
