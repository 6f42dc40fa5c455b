"""rspamd's milter as a peer to bench against, on a private configuration.

Debian's rspamd (installed with apt-get when missing: `make bench` may
install it, `make test` never needs it) runs from a copy of /etc/rspamd in
the bench's work directory, as HACKING.md ("What the code relies on", 10)
describes: no network (every module that asks DNS is off, and the resolver
points at a dead port so nothing waits on a real one), no Redis, a normal
worker on 127.0.0.1 and a proxy worker in milter mode that listens on the
unix or TCP socket Postfix is given. Actions are set so every bench message
is delivered (reject and greylist out of reach; a header is still added
above 6), as milterguard's bench config does with its reject score: each
run must show every message delivered.

The first start compiles rspamd's Hyperscan cache (tens of seconds);
``start`` returns only once that is done and the milter socket answers.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time

from postfix import MilterProcess, free_port, parse_socket_spec, wait_for_socket

RSPAMD = "/usr/bin/rspamd"
SYSTEM_CONFIG = "/etc/rspamd"
USER = "_rspamd"

#: Modules that would ask DNS (or need Redis) on every message: off, so the
#: peer measures content scanning, not timeouts against a dead resolver.
NETWORK_MODULES = ("rbl", "fuzzy_check", "asn", "spf", "dkim", "dmarc", "arc",
                   "once_received", "multimap", "whitelist", "neural", "ratelimit",
                   "greylist", "replies", "url_redirector", "dkim_signing",
                   "history_redis", "reputation", "emails", "surbl", "metadata_exporter")


def ensure_installed() -> str | None:
    """Install Debian's rspamd if it is missing; None when it is there, else why not."""
    if os.access(RSPAMD, os.X_OK):
        return None
    if os.geteuid() != 0:
        return "rspamd is not installed and installing it needs root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                           "-o", "DPkg::Lock::Timeout=600", "rspamd"],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or not os.access(RSPAMD, os.X_OK):
        return "apt-get install rspamd failed: " + (proc.stderr or proc.stdout)[-500:]
    return None


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_config(root: str, milter_bind: str, normal_port: int, controller_port: int) -> None:
    """A private copy of /etc/rspamd under ``root``/conf with the bench's overrides."""
    conf = os.path.join(root, "conf")
    shutil.copytree(SYSTEM_CONFIG, conf, symlinks=True)
    local, override = os.path.join(conf, "local.d"), os.path.join(conf, "override.d")
    os.makedirs(local, exist_ok=True)
    os.makedirs(override, exist_ok=True)
    _write(os.path.join(local, "options.inc"),
           f'dns {{ nameserver = ["127.0.0.1:{free_port()}"]; timeout = 0.1s; retransmits = 1; }}\n'
           'local_addrs = [];\n')
    for module in NETWORK_MODULES:
        _write(os.path.join(local, f"{module}.conf"), "enabled = false;\n")
    _write(os.path.join(local, "phishing.conf"), "phishtank_enabled = false;\nopenphish_enabled = false;\n")
    _write(os.path.join(local, "hfilter.conf"),
           "helo_enabled = false;\nhostname_enabled = false;\nfrom_enabled = false;\n")
    _write(os.path.join(local, "redis.conf"), "")
    _write(os.path.join(override, "actions.conf"),
           "reject = 1000;\nadd_header = 6;\ngreylist = null;\n")
    _write(os.path.join(override, "logging.inc"),
           'type = "file";\nfilename = "$LOGDIR/rspamd.log";\nlevel = "notice";\n')
    _write(os.path.join(override, "worker-normal.inc"),
           f'bind_socket = "127.0.0.1:{normal_port}";\nmime = true;\ncount = 1;\n')
    _write(os.path.join(override, "worker-controller.inc"),
           f'bind_socket = "127.0.0.1:{controller_port}";\ncount = 1;\n')
    _write(os.path.join(override, "worker-proxy.inc"),
           f'bind_socket = "{milter_bind}";\nmilter = yes;\ntimeout = 120s;\ncount = 1;\n'
           f'upstream "local" {{ default = yes; self_scan = no; hosts = "127.0.0.1:{normal_port}"; }}\n'
           'discard_on_reject = false;\nquarantine_on_reject = false;\n'
           'spam_header = "X-Spam";\n')


class RspamdMilter(MilterProcess):
    """rspamd (master, normal, controller and proxy workers) on ``spec``."""

    def __init__(self, spec: str, workdir: str) -> None:
        self.root = os.path.join(workdir, "rspamd-" + str(abs(hash(spec)) % 100000))
        for sub in ("db", "run", "log"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        listen = parse_socket_spec(spec)
        bind = (f"{listen.path} mode=0666" if listen.is_unix
                else f"127.0.0.1:{spec.split(':')[1].split('@')[0]}")
        write_config(self.root, bind, free_port(), free_port())
        user = pwd.getpwnam(USER)
        for sub in ("db", "run", "log"):
            os.chown(os.path.join(self.root, sub), user.pw_uid, user.pw_gid)
        conf = os.path.join(self.root, "conf")
        argv = [RSPAMD, "-f", "-c", os.path.join(conf, "rspamd.conf"), "-u", USER, "-g", USER,
                f"--var=CONFDIR={conf}", f"--var=LOCAL_CONFDIR={conf}",
                f"--var=DBDIR={self.root}/db", f"--var=RUNDIR={self.root}/run",
                f"--var=LOGDIR={self.root}/log"]
        super().__init__(argv, spec, os.path.join(self.root, "stderr.log"), term_grace=15.0)
        self.rspamd_log = os.path.join(self.root, "log", "rspamd.log")

    def start(self, timeout: float = 300.0) -> "RspamdMilter":
        super().start(timeout=timeout)
        # The Hyperscan cache is built by a helper after the workers start;
        # until it is there the regexps run one by one (slower). Wait until
        # its files exist and stop changing.
        deadline = time.monotonic() + timeout
        last, stable = -1, 0
        while time.monotonic() < deadline and stable < 5:
            count = len(glob.glob(os.path.join(self.root, "db", "*.hs")))
            stable = stable + 1 if count and count == last else 0
            last = count
            time.sleep(1.0)
        time.sleep(2.0)   # the workers load the new cache
        wait_for_socket(self.spec, 10.0)
        return self

    def _log_tail(self) -> str:
        try:
            with open(self.rspamd_log, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-200000:]
        except OSError:
            return ""

    def log_text(self) -> str:
        return super().log_text() + self._log_tail()[-3000:]
