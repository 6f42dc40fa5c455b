"""The install scripts: only what a purpose needs, and waiting for apt's lock.

Fake ``apt-get`` and ``dpkg-query`` programs on PATH stand in for apt here;
the real installs run whenever `make` meets a machine that lacks a package.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess

from tests import REPO_ROOT as REPO


def _program(directory, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_demo_needs_no_chromium_or_postfix_test_needs_both(tmp_path):
    """With nothing installed, demo asks for the build only, test for all."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _program(bin_dir, "dpkg-query", "exit 1\n")       # no package installed
    for name in ("grep", "dirname", "id"):
        os.symlink(f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else f"/bin/{name}",
                   bin_dir / name)
    env = {"PATH": str(bin_dir), "INSTALL_DEPS_DRY_RUN": "1"}
    wanted = {}
    for purpose in ("demo", "test"):
        proc = subprocess.run(["/bin/bash", "scripts/install-deps.sh", purpose], cwd=REPO,
                              env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        line = proc.stdout.strip().splitlines()[-1]
        assert line.startswith(f"install-deps ({purpose}): installing "), line
        wanted[purpose] = set(line.split(": installing ", 1)[1].split())
    assert {"gcc", "make", "python3-venv"} <= wanted["demo"]
    # (postfix, rbldnsd, nft live in /usr/sbin, which the script also looks
    # in, so on this machine they count as present whatever PATH says.)
    test_only = {"chromium", "mmdebstrap", "lintian", "debhelper", "systemd-journal-remote"}
    assert not wanted["demo"] & test_only
    assert test_only <= wanted["test"]


def test_apt_get_wait_retries_while_another_apt_holds_the_lock(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    count = tmp_path / "count"
    count.write_text("0")
    _program(bin_dir, "apt-get", f"""\
n=$(cat {count}); n=$((n + 1)); echo $n > {count}
echo "$@" >> {tmp_path}/args
if [ $n -lt 3 ]; then
    echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2
    exit 100
fi
echo done
""")
    _program(bin_dir, "sleep", "exit 0\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", APT_LOCK_WAIT="60")
    proc = subprocess.run(["sh", "scripts/apt-get-wait", "update"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert count.read_text().strip() == "3"
    assert proc.stderr.count("another apt/dpkg holds a lock") == 2
    assert "DPkg::Lock::Timeout=60 update" in (tmp_path / "args").read_text()


def test_apt_get_wait_passes_other_failures_through(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _program(bin_dir, "apt-get", "echo 'E: Unable to locate package nosuch' >&2; exit 100\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    proc = subprocess.run(["sh", "scripts/apt-get-wait", "install", "nosuch"], cwd=REPO,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 100
    assert "Unable to locate package nosuch" in proc.stderr
    assert "waiting" not in proc.stderr


def test_install_deps_installs_every_build_dependency():
    """dpkg-buildpackage refuses to build without them (the Debian package test)."""
    from tests.debcontrol import control_field
    with open(os.path.join(REPO, "scripts", "install-deps.sh"), encoding="utf-8") as fh:
        script = fh.read()
    for name in control_field("Build-Depends"):
        if name == "debhelper-compat":
            name = "debhelper"
        assert re.search(rf"[\s(]{re.escape(name)}(\s|$)", script), name
