"""debian/control's package lists, for the tests that keep the Debian
package, the install script and the test root in step with it."""

from __future__ import annotations

import os
import re

from tests import REPO_ROOT


def control_field(field: str) -> list[str]:
    """Package names in a debian/control field (substitution variables and
    version constraints left out)."""
    with open(os.path.join(REPO_ROOT, "debian", "control"), encoding="utf-8") as fh:
        text = fh.read()
    match = re.search(rf"^{field}:(.*(?:\n[ \t].*)*)", text, re.M)
    assert match, f"no {field} in debian/control"
    names = [item.strip().split()[0] for item in match.group(1).split(",") if item.strip()]
    return [n for n in names if not n.startswith("${")]
