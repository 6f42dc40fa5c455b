"""A copy of the checkout as it is now, for tests that build from it
(the wheel, the Debian package) without writing into the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests import REPO_ROOT


def copy_tree(dest: str) -> None:
    """The files git tracks or would track (working copy as is), symlinks kept."""
    listed = subprocess.run(["git", "-C", REPO_ROOT, "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src, dst = os.path.join(REPO_ROOT, rel), os.path.join(dest, rel)
        if not os.path.lexists(src):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
