"""milterguard's tests: ``unit/`` mirrors the package and needs no root,
Postfix, rbldnsd, nftables or network; ``e2e/`` drives the real components.

Helpers shared by both tiers live beside this file (``dnsfixtures``).
"""

import os

#: The checkout's top directory (subprocesses run ``python -m milterguard`` there).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
