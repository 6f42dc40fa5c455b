"""The built wheel works outside the checkout: it carries the shipped rules.

Builds the wheel from a copy of the tree with Debian's python3 build tools,
installs it into a fresh virtual environment (its libraries from Debian's
python3-* packages through --system-site-packages, so nothing is fetched),
and from a directory that is not the checkout runs `milterguard check`
(every shipped rule loaded, and from the installed copy) and a replay of
samples/ through the installed daemon.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests import REPO_ROOT
from tests.e2e.postfix import MilterProcess
from tests.e2e.sourcetree import copy_tree

SYSTEM_PYTHON = "/usr/bin/python3"


def _shipped_rule_count() -> int:
    from milterguard.ruleset.rules import load_ruleset
    return len(load_ruleset(True, []))


def _run(argv: list[str], cwd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh venv with the built wheel installed; {'bin': ..., 'cwd': ...}."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.fail(f"{SYSTEM_PYTHON} missing: run scripts/install-deps.sh")
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv, elsewhere = (str(base / n) for n in ("src", "dist", "venv", "elsewhere"))
    os.makedirs(elsewhere)
    copy_tree(src)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    built = _run([SYSTEM_PYTHON, "-m", "build", "--wheel", "--no-isolation",
                  "--outdir", dist, src], elsewhere, env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = [f for f in os.listdir(dist) if f.endswith(".whl")]
    assert len(wheels) == 1, wheels
    made = _run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", venv], elsewhere, env)
    assert made.returncode == 0, made.stderr
    pip = _run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--no-index",
                os.path.join(dist, wheels[0])], elsewhere, env)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return {"bin": os.path.join(venv, "bin", "milterguard"), "venv": venv,
            "cwd": elsewhere, "env": env}


def test_installed_check_loads_every_shipped_rule(installed: dict) -> None:
    proc = _run([installed["bin"], "check", "--no-dynamic"], installed["cwd"], installed["env"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shipped_files = len([f for f in os.listdir(os.path.join(REPO_ROOT, "rules"))
                         if f.endswith((".yaml", ".yml"))])
    # Loaded from the venv, not from this checkout.
    where = [line for line in proc.stdout.splitlines() if line.startswith("shipped rules: ")]
    assert len(where) == 1, proc.stdout
    assert where[0].startswith(f"shipped rules: {installed['venv']}/"), where
    assert where[0].endswith(f"({shipped_files} files)"), where
    assert f"ok: {_shipped_rule_count()} rules from {shipped_files} files" in proc.stdout


def test_installed_daemon_replays_samples(installed: dict) -> None:
    state = os.path.join(installed["cwd"], "state")
    spec = f"unix:{state}/milterguard.sock"
    daemon = MilterProcess(
        [installed["bin"], "run", "-c", os.path.join(REPO_ROOT, "samples", "demo.yaml"),
         "--state-dir", state, "--socket", spec],
        spec, os.path.join(installed["cwd"], "daemon.log"),
        env=installed["env"], cwd=installed["cwd"])
    with daemon:
        proc = _run([installed["bin"], "replay", "--socket", spec, "--expect",
                     os.path.join(REPO_ROOT, "samples", "expected.yaml"),
                     os.path.join(REPO_ROOT, "samples")], installed["cwd"], installed["env"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"rules={_shipped_rule_count()}" in daemon.log_text()
