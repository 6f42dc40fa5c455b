"""A private PostgreSQL server for tests: Debian's `postgresql` binaries,
``initdb`` and ``pg_ctl`` in a temporary directory.

The server listens on a unix socket in its own directory and on a free
loopback port, never on another address. Run as root, the cluster belongs
to the ``postgres`` user (initdb refuses root); run as anyone else, to that
user. ``fsync=off`` because a test cluster is thrown away: durability would
only cost time on a busy machine.

Missing binaries are an error, not a skip: a test that did not run must not
look like one that passed (`scripts/install-deps.sh` installs them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time


#: Run by the watchdog process: argv = test pid, data dir, base dir, stop command.
_WATCHDOG = """
import os, shutil, subprocess, sys, time
parent, data, base, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
while os.path.isdir(data):
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        subprocess.run(stop, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
        break
    time.sleep(1)
"""


def _bindir() -> str:
    """Where initdb and pg_ctl are: PATH, else Debian's versioned directory."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found (initdb, pg_ctl): "
                           "install Debian's postgresql package (scripts/install-deps.sh)")
    return os.path.dirname(candidates[-1])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One cluster: ``start()``, ``create_database()``, ``stop()``, ``remove()``."""

    def __init__(self, base_dir: str | None = None, password: str | None = None) -> None:
        #: With a password the cluster asks for it (scram-sha-256) on every
        #: connection instead of trusting local users.
        self.password = password
        self.bindir = _bindir()
        self.base = base_dir or tempfile.mkdtemp(prefix="mg-pg-")
        self.data = os.path.join(self.base, "data")
        self.sockdir = self.base
        self.port = _free_port()
        self.log_path = os.path.join(self.base, "server.log")
        self._as_postgres = os.geteuid() == 0
        self._ndb = 0
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- processes

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=120, env=env)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}"
                               + self.log_tail())
        return proc

    def log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "\n--- server log ---\n" + fh.read()[-3000:]
        except OSError:
            return ""

    def init(self) -> "PostgresServer":
        os.makedirs(self.base, exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o755)
        auth = ["-A", "trust"]
        if self.password:
            pwfile = os.path.join(self.base, "initdb.pw")
            with open(pwfile, "w", encoding="utf-8") as fh:
                fh.write(self.password + "\n")
            if self._as_postgres:
                pw = pwd.getpwnam("postgres")
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        self._run([os.path.join(self.bindir, "initdb"), "-D", self.data, *auth,
                   "-U", "postgres", "-E", "UTF8", "--locale=C", "-N"])
        return self

    def start(self) -> "PostgresServer":
        if not os.path.isdir(self.data):
            self.init()
        options = (f"-k {self.sockdir} -p {self.port} -h 127.0.0.1 -c fsync=off"
                   " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log_path,
                   "-o", options, "-w", "-t", "60", "start"])
        self._start_watchdog()
        return self

    def _start_watchdog(self) -> None:
        """Stop and remove the cluster if this process dies without doing it.

        pg_ctl detaches the server, so a test run killed from outside (a
        `timeout`, ^C twice, SIGKILL) would leave it running for good; the
        watchdog, in its own session, notices the test process is gone.
        """
        if self._watchdog is not None and self._watchdog.poll() is None:
            return
        argv = [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                "-w", "stop"]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), self.data, self.base, *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def stop(self, mode: str = "fast") -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", mode,
                       "-w", "-t", "60", "stop"], check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
        if self._watchdog is not None:
            self._watchdog.terminate()
            self._watchdog.wait(10)

    # -- databases

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        proc = self._run([os.path.join(self.bindir, "psql"), "-X", "-q", "-At",
                          "-h", self.sockdir, "-p", str(self.port), "-U", "postgres",
                          "-d", dbname, "-v", "ON_ERROR_STOP=1", "-c", sql])
        return proc.stdout.strip()

    def create_database(self, prefix: str = "mg") -> str:
        """A fresh, empty database; returns its postgresql:// URL."""
        self._ndb += 1
        name = f"{prefix}_{os.getpid()}_{self._ndb}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self._run([os.path.join(self.bindir, "pg_isready"), "-h", "127.0.0.1",
                              "-p", str(self.port)], check=False)
            if proc.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not become ready" + self.log_tail())
