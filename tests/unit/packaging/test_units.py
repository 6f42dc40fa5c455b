"""The systemd units in packaging/: what they run, and in which order."""

from __future__ import annotations

import os

from tests import REPO_ROOT


def test_sync_unit_runs_bans_sync_even_when_logscan_fails():
    """systemd stops a oneshot at the first failing ExecStart unless it has
    a "-" prefix: logscan's failure must not keep `bans sync` from running."""
    with open(os.path.join(REPO_ROOT, "packaging", "milterguard-sync.service")) as fh:
        execs = [line.split("=", 1)[1] for line in fh.read().splitlines()
                 if line.startswith("ExecStart=")]
    assert len(execs) == 2, execs
    assert execs[0].startswith("-/usr/bin/milterguard logscan "), execs[0]
    assert execs[1].startswith("/usr/bin/milterguard bans "), execs[1]
