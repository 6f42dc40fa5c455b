"""The Debian package: built from the tree, lintian clean of errors, and
working when installed into a throw-away Debian 12 root.

The root is made by mmdebstrap from Debian's packages (the machine's apt
sources) with the package's dependencies already in it, and cached as a
tarball under /var/cache/milterguard-tests (keyed by what it holds), so
only the first run pays the minute it takes. Each test run unpacks a fresh
copy, installs the .deb with dpkg, runs `milterguard check`, starts the
installed daemon as the milterguard user on its default socket (inside
Postfix's chroot directory) and replays samples/ through it with the
installed `milterguard replay`, which must match samples/expected.yaml.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Iterator

import pytest

from tests import REPO_ROOT as REPO
from tests.debcontrol import control_field
from tests.e2e.postfix import MilterProcess
from tests.e2e.sourcetree import copy_tree

CACHE_DIR = "/var/cache/milterguard-tests"
SUITE = "bookworm"
APT_SOURCES = "/etc/apt/sources.list.d/debian.sources"


#: The package's Depends, so dpkg -i needs no network, and python3 itself.
ROOT_PACKAGES = tuple(sorted({"python3", *control_field("Depends")}))
#: A Debian build runs with Debian's python3, whatever a developer's PATH says.
BUILD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SOCKET = "/var/spool/postfix/milterguard/milterguard.sock"

#: The first run makes the root (about a minute on an idle machine, more
#: under load) and builds the package; later runs unpack the cached root.
pytestmark = pytest.mark.timeout(1800)


def run(argv: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def _apt_sources() -> str:
    """The Debian part of this machine's apt sources (deb822 or one-line)."""
    for path in (APT_SOURCES, "/etc/apt/sources.list"):
        if os.path.exists(path) and os.path.getsize(path):
            return path
    pytest.fail("no Debian apt sources on this machine for mmdebstrap")


def cached_root_tarball() -> str:
    """A Debian 12 root with ROOT_PACKAGES, made once and kept in CACHE_DIR."""
    sources = _apt_sources()
    with open(sources, "rb") as fh:
        key = hashlib.sha256(SUITE.encode() + b"\0" + " ".join(ROOT_PACKAGES).encode()
                             + b"\0" + fh.read()).hexdigest()[:16]
    os.makedirs(CACHE_DIR, exist_ok=True)
    tarball = os.path.join(CACHE_DIR, f"{SUITE}-root-{key}.tar")
    # One maker at a time: a second test run waits for the first's tarball.
    with open(os.path.join(CACHE_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(tarball):
            partial = tarball + ".partial"
            shutil.rmtree(partial, ignore_errors=True)
            made = run(["mmdebstrap", "--variant=minbase", "--format=tar",
                        "--include=" + ",".join(ROOT_PACKAGES), SUITE, partial, sources],
                       timeout=1200)
            assert made.returncode == 0, made.stderr[-3000:]
            os.replace(partial, tarball)
    return tarball


@pytest.fixture(scope="module")
def deb() -> Iterator[str]:
    """The .deb, built with dpkg-buildpackage from a copy of the tree."""
    for tool in ("dpkg-buildpackage", "dh", "lintian", "mmdebstrap"):
        if not shutil.which(tool, path=BUILD_PATH):
            pytest.fail(f"{tool} missing: run scripts/install-deps.sh test")
    base = tempfile.mkdtemp(prefix="mg-deb-")
    try:
        src = os.path.join(base, "src")
        copy_tree(src)
        built = run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=src,
                    env=dict(os.environ, PATH=BUILD_PATH))
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-2000:]
        debs = glob.glob(os.path.join(base, "milterguard_*_all.deb"))
        assert len(debs) == 1, os.listdir(base)
        yield debs[0]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def processes_in(root: str) -> list[int]:
    """Processes whose root directory is ``root`` (started in the chroot)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/root") == root:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def stop_processes_in(root: str, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL, whatever still runs in the root. The daemon's
    wrapper cannot pass the signal on: chroot --userspec changes the
    credentials, which clears unshare's parent-death signal."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in processes_in(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while processes_in(root) and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture
def debian_root() -> Iterator[str]:
    """A fresh Debian 12 root from the cached tarball; whatever was started
    in it is stopped, and it is removed, afterwards."""
    tarball = cached_root_tarball()
    root = os.path.realpath(tempfile.mkdtemp(prefix="mg-root-"))
    try:
        unpacked = run(["tar", "-C", root, "-xf", tarball])
        assert unpacked.returncode == 0, unpacked.stderr
        yield root
    finally:
        stop_processes_in(root)
        shutil.rmtree(root, ignore_errors=True)


def in_root(root: str, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv in the root, with /proc mounted in a private mount namespace
    (gone when the command ends)."""
    chroot = ["chroot"] + ([f"--userspec={user}:{user}"] if user else []) + [root]
    return run(["unshare", "--mount", "--fork", "sh", "-c",
                'mount -t proc proc "$0/proc" && exec "$@"', root, *chroot, *argv])


def test_lintian_finds_no_errors(deb: str) -> None:
    proc = run(["lintian", "--tag-display-limit", "0", deb], timeout=300)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E: ")]
    assert not errors, proc.stdout
    assert proc.returncode in (0, 1), proc.stderr  # 1 would mean errors, listed above


def test_package_version_is_the_code_version() -> None:
    from milterguard import __version__
    with open(os.path.join(REPO, "debian", "changelog"), encoding="utf-8") as fh:
        first = fh.readline()
    assert first.startswith(f"milterguard ({__version__})"), first


def test_installed_package_checks_and_replays_samples(deb: str, debian_root: str) -> None:
    root = debian_root
    shutil.copy(deb, os.path.join(root, "tmp", "milterguard.deb"))
    shutil.copytree(os.path.join(REPO, "samples"), os.path.join(root, "tmp", "samples"))
    installed = in_root(root, "dpkg", "-i", "/tmp/milterguard.deb")
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]

    # What the package put where.
    conffiles = in_root(root, "dpkg-query", "-W", "-f=${Conffiles}", "milterguard").stdout
    assert "/etc/milterguard/milterguard.yaml" in conffiles
    for path in ("usr/bin/milterguard", "etc/milterguard/rules.d", "usr/share/man/man8/milterguard.8.gz",
                 "usr/share/man/man8/milterguard-logscan.8.gz", "usr/share/doc/milterguard/copyright",
                 "usr/share/doc/milterguard/README.md",  # the unit's Documentation=
                 "lib/systemd/system/milterguard.service", "lib/systemd/system/milterguard-sync.timer"):
        assert os.path.lexists(os.path.join(root, path)), path
    socket_dir = os.stat(os.path.join(root, SOCKET.lstrip("/").rsplit("/", 1)[0]))
    assert oct(socket_dir.st_mode & 0o7777) == "0o2750"
    owner = in_root(root, "stat", "-c", "%U:%G", os.path.dirname(SOCKET)).stdout.strip()
    assert owner == "milterguard:milterguard"   # no Postfix in this root yet
    # Postfix arriving later: reconfiguring hands the directory to its group.
    assert in_root(root, "groupadd", "--system", "postfix").returncode == 0
    reconfigured = in_root(root, "dpkg-reconfigure", "-fnoninteractive", "milterguard")
    assert reconfigured.returncode == 0, reconfigured.stderr
    owner = in_root(root, "stat", "-c", "%U:%G:%a", os.path.dirname(SOCKET)).stdout.strip()
    assert owner == "milterguard:postfix:2750"

    shipped = sorted(f for f in os.listdir(os.path.join(REPO, "rules")) if f.endswith(".yaml"))
    assert sorted(os.listdir(os.path.join(root, "usr/share/milterguard/rules"))) == shipped
    checked = in_root(root, "milterguard", "check", "-c", "/etc/milterguard/milterguard.yaml",
                      user="milterguard")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    from milterguard.ruleset.rules import load_ruleset
    rule_count = len(load_ruleset(True, []))
    assert f"ok: {rule_count} rules from {len(shipped)} files" in checked.stdout
    assert f"shipped rules: /usr/share/milterguard/rules ({len(shipped)} files)" in checked.stdout

    # The installed daemon as the milterguard user, on its default socket.
    daemon = MilterProcess(
        ["unshare", "--mount", "--fork", "sh", "-c",
         'mount -t proc proc "$0/proc" && exec chroot --userspec=milterguard:milterguard "$0" '
         '/usr/bin/milterguard run -c /tmp/samples/demo.yaml', root],
        f"unix:{root}{SOCKET}", os.path.join(root, "tmp", "daemon.log"))
    with daemon:
        assert processes_in(root), "the daemon should run inside the root"
        # The setgid directory gives the socket to Postfix's group.
        socket_owner = in_root(root, "stat", "-c", "%U:%G", SOCKET).stdout.strip()
        assert socket_owner == "milterguard:postfix"
        replayed = in_root(root, "milterguard", "replay", "--socket", f"unix:{SOCKET}",
                           "--expect", "/tmp/samples/expected.yaml", "/tmp/samples")
        # Stopped from inside (see stop_processes_in); the wrapper then ends.
        stop_processes_in(root)
    assert not processes_in(root)
    assert replayed.returncode == 0, replayed.stdout[-3000:] + replayed.stderr[-3000:]
    log = daemon.log_text()
    assert f"socket=unix:{SOCKET} rules={rule_count}" in log, log[-2000:]
