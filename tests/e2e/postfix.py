"""A private, throw-away Postfix instance for end-to-end tests and benchmarks.

The instance lives entirely in its own directory (config, queue, data, log)
and listens on 127.0.0.1 at a free port, so several can run at once and the
machine's own Postfix (/etc/postfix) is never touched. Mail is delivered to
the ``discard:`` transport: we only care what smtpd and the milter said.

Why each setting is there (each one cost time to find out):
- ``meta_directory = /etc/postfix``: ``postfix start`` runs post-install from
  there to create the queue directories with the right owners.
- ``maillog_file`` + ``maillog_file_prefixes``: there is no syslog here, and a
  log path outside the allowed prefixes makes ``postfix start`` fail with the
  reason shown only on a terminal.
- chroot off for every service, unless ``chroot_smtpd``: then the SMTP
  listener runs chrooted in the queue directory as Debian's master.cf has
  it, with the /etc files Debian's postfix start copies there, and a milter
  unix socket must live below the queue directory.

Plain Python (no pytest) so benchmarks can use it too.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterable

from milterguard.socketspec import connect, parse_socket_spec

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
SYSTEM_CONFIG_DIR = "/etc/postfix"

#: A made-up host name (RFC 2606), so the instance never claims a real one.
HOSTNAME = "mx.milterguard.test"


class PostfixError(RuntimeError):
    """The private instance could not be set up, started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (racy, but fine on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_socket(spec: str, timeout: float = 15.0,
                    alive: "subprocess.Popen[bytes] | None" = None) -> None:
    """Wait until a milter socket spec accepts connections.

    ``spec`` in libmilter's or Postfix's syntax (milterguard.socketspec). If
    ``alive`` is given and exits meanwhile, fail at once instead of waiting.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise PostfixError(f"process exited with {alive.returncode} "
                               f"before {spec} accepted connections")
        try:
            with connect(spec, timeout=1.0):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise PostfixError(f"{spec} did not accept connections in {timeout}s: {last}")


def milter_socket_spec(kind: str, directory: str, name: str = "milter") -> str:
    """A socket spec: ``unix`` in ``directory``, or ``inet`` on a free port;
    ``postfix-inet`` is the same TCP socket written as main.cf writes it."""
    if kind == "unix":
        return f"unix:{os.path.join(directory, name + '.sock')}"
    if kind == "inet":
        return f"inet:{free_port()}@127.0.0.1"
    if kind == "postfix-inet":
        return f"inet:127.0.0.1:{free_port()}"
    raise ValueError(f"socket kind must be unix, inet or postfix-inet, not {kind!r}")


class PostfixInstance:
    """One private Postfix: ``start()``, send mail to ``port``, ``stop()``.

    ``params`` are extra main.cf settings (they override the defaults set
    here), e.g. ``{"smtpd_milters": "unix:/tmp/x/m.sock",
    "milter_default_action": "tempfail"}``. ``base_dir`` defaults to a new
    temporary directory, removed by ``cleanup()``.
    """

    #: What Debian's postfix start (configure-instance.sh) copies into the
    #: chroot: name resolution and time zone for chrooted daemons.
    CHROOT_FILES = ("etc/localtime", "etc/services", "etc/resolv.conf", "etc/hosts",
                    "etc/host.conf", "etc/nsswitch.conf")

    def __init__(self, params: dict[str, str] | None = None,
                 base_dir: str | None = None, port: int | None = None,
                 host: str = "127.0.0.1", chroot_smtpd: bool = False) -> None:
        self._own_base = base_dir is None
        self.base_dir = os.path.abspath(base_dir or tempfile.mkdtemp(prefix="mg-postfix-"))
        # smtpd and friends run as the postfix user and must reach the log
        # and any milter socket we put below this directory.
        os.makedirs(self.base_dir, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        self.config_dir = os.path.join(self.base_dir, "etc")
        self.queue_dir = os.path.join(self.base_dir, "spool")
        self.data_dir = os.path.join(self.base_dir, "data")
        self.maillog = os.path.join(self.base_dir, "maillog")
        self.host = host
        self.port = port or free_port(host)
        self.params = dict(params or {})
        self.chroot_smtpd = chroot_smtpd
        self.running = False
        self._configured = False

    # -- configuration -------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        """The main.cf settings this instance runs with."""
        prefixes = ", ".join(dict.fromkeys(
            ["/var", "/dev/stdout", "/tmp", self.base_dir]))
        cf = {
            "compatibility_level": "3.6",
            "config_directory": self.config_dir,
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "meta_directory": SYSTEM_CONFIG_DIR,
            "maillog_file": self.maillog,
            "maillog_file_prefixes": prefixes,
            "myhostname": HOSTNAME,
            "mydomain": "milterguard.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            # Everything is relayed, and relaying means throwing away.
            "default_transport": "discard:",
            "relay_transport": "discard:",
            "local_transport": "discard:",
            "relay_domains": "static:ALL",
            # smtpd insists on one of these; with relay_domains = static:ALL
            # it lets everything through.
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtpd_recipient_restrictions": "permit",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtputf8_enable": "no",
            "smtpd_banner": "$myhostname ESMTP",
            # Load generators open many connections from one address.
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            # Tests should see a refused message at once, not after a delay.
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "1000",
            "smtpd_hard_error_limit": "1000",
            "syslog_name": "postfix-mg",
        }
        cf.update(self.params)
        return cf

    def configure(self) -> None:
        """Write config_directory: system master.cf, our main.cf, chroot off."""
        if os.path.exists(self.config_dir):
            shutil.rmtree(self.config_dir)
        shutil.copytree(SYSTEM_CONFIG_DIR, self.config_dir, symlinks=False)
        for name in ("main.cf", "main.cf.proto"):
            path = os.path.join(self.config_dir, name)
            if os.path.exists(path):
                os.unlink(path)
        with open(os.path.join(self.config_dir, "main.cf"), "w", encoding="utf-8") as fh:
            fh.write("# Written by milterguard tests; private instance.\n")
            for key, value in self.main_cf().items():
                fh.write(f"{key} = {value}\n")
        self._rewrite_master_cf()
        self._postconf("-F", "*/*/chroot = n")
        for path in (self.queue_dir, self.data_dir):
            os.makedirs(path, exist_ok=True)
        if self.chroot_smtpd:
            self._postconf("-F", f"{self.host}:{self.port}/inet/chroot = y")
            for rel in self.CHROOT_FILES:
                if os.path.exists("/" + rel):
                    os.makedirs(os.path.join(self.queue_dir, os.path.dirname(rel)), exist_ok=True)
                    shutil.copyfile("/" + rel, os.path.join(self.queue_dir, rel))
        shutil.chown(self.data_dir, "postfix")
        self._configured = True

    def _rewrite_master_cf(self) -> None:
        """Listen on HOST:PORT instead of the system's port 25."""
        path = os.path.join(self.config_dir, "master.cf")
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        out, done = [], False
        for line in lines:
            if re.match(r"^smtp\s+inet\s", line) and not done:
                line = re.sub(r"^smtp(\s+)", f"{self.host}:{self.port}\\1", line)
                done = True
            out.append(line)
        if not done:
            raise PostfixError(f"no 'smtp inet' service in {path}")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(out) + "\n")

    def set_params(self, params: dict[str, str]) -> None:
        """Change main.cf settings; a running instance is reloaded."""
        self.params.update(params)
        if self._configured:
            self._postconf(*(f"{k}={v}" for k, v in params.items()))
            if self.running:
                self._postfix("reload")

    def _postconf(self, *args: str) -> str:
        return self._run([POSTCONF, "-c", self.config_dir, *args])

    def _postfix(self, *args: str) -> str:
        return self._run([POSTFIX, "-c", self.config_dir, *args])

    @staticmethod
    def _run(argv: list[str]) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise PostfixError(f"{' '.join(argv)} exited {proc.returncode}: "
                               f"{proc.stderr.strip()} {proc.stdout.strip()}")
        return proc.stdout + proc.stderr

    # -- life cycle ----------------------------------------------------

    def start(self, timeout: float = 30.0) -> "PostfixInstance":
        if not self._configured:
            self.configure()
        try:
            self._postfix("start")
            self.running = True
            self._wait_banner(timeout)
        except Exception as exc:
            log = self.log_text()[-3000:]
            self.stop()
            raise PostfixError(f"postfix start failed: {exc}\nmaillog:\n{log}") from exc
        return self

    def _wait_banner(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            fatal = self.log_lines(r"(fatal|panic): ")
            if fatal:
                raise PostfixError(fatal[0])
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as sock:
                    banner = sock.recv(512)
                    sock.sendall(b"QUIT\r\n")
                if banner.startswith(b"220"):
                    return
                last = PostfixError(f"banner {banner!r}")
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise PostfixError(f"no SMTP banner on {self.host}:{self.port}: {last}")

    def master_pid(self) -> int | None:
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid"), encoding="ascii") as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            return None

    def own_pids(self) -> list[int]:
        """Processes started for this instance (their MAIL_CONFIG is ours)."""
        marker = f"MAIL_CONFIG={self.config_dir}".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    env = fh.read().split(b"\0")
            except OSError:
                continue
            if marker in env:
                pids.append(int(entry))
        return pids

    def stop(self, timeout: float = 15.0) -> None:
        """Stop gracefully; kill whatever of ours is still there after that."""
        if self._configured:
            try:
                self._postfix("stop")
            except (PostfixError, subprocess.TimeoutExpired):
                pass
        deadline = time.monotonic() + timeout
        while self.own_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.own_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.running = False

    def cleanup(self) -> None:
        """Stop and remove the temporary directory (if we made it)."""
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "PostfixInstance":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- inspection ----------------------------------------------------

    def log_text(self) -> str:
        try:
            with open(self.maillog, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def log_lines(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return [line for line in self.log_text().splitlines() if rx.search(line)]

    def count_discarded(self) -> int:
        """Recipients handed to the discard transport so far."""
        return len(self.log_lines(r"/discard\[\d+\]: .*status=sent"))

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 15.0) -> list[str]:
        """Wait until ``pattern`` matches ``count`` log lines (the log is async)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.log_lines(pattern)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def wait_discarded(self, count: int, timeout: float = 60.0) -> int:
        """Wait for ``count`` discard deliveries; return how many there were."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.count_discarded()
            if n >= count or time.monotonic() > deadline:
                return n
            time.sleep(0.2)

    def queue_empty(self) -> bool:
        for sub in ("incoming", "active", "deferred", "maildrop"):
            for _root, _dirs, files in os.walk(os.path.join(self.queue_dir, sub)):
                if files:
                    return False
        return True


def postfix_milter_spec(spec: str) -> str:
    """libmilter's ``inet:PORT@HOST`` is Postfix's ``inet:HOST:PORT``."""
    return parse_socket_spec(spec).postfix()


def milter_params(sockets: Iterable[str], default_action: str = "tempfail",
                  **extra: str) -> dict[str, str]:
    """main.cf settings that hand every SMTP session to the given milters.

    ``sockets`` may be given in libmilter syntax (as the daemon takes them).
    """
    params = {
        "smtpd_milters": ", ".join(postfix_milter_spec(s) for s in sockets),
        "milter_default_action": default_action,
        "milter_protocol": "6",
        "milter_connect_timeout": "10s",
        "milter_command_timeout": "30s",
        "milter_content_timeout": "60s",
        # The queue id ({i}) at MAIL FROM, so the one log line carries it.
        "milter_mail_macros": "i {auth_type} {auth_authen} {auth_author} "
                              "{mail_addr} {mail_host} {mail_mailer}",
    }
    params.update(extra)
    return params


class MilterProcess:
    """A milter daemon run as a subprocess, with its stderr kept in a file.

    ``start()`` returns once ``spec`` accepts connections; ``stop()`` sends
    SIGTERM and, since ``Milter.runmilter`` needs ~4 s to exit, waits
    ``term_grace`` seconds before SIGKILL.
    """

    def __init__(self, argv: list[str], spec: str, log_path: str,
                 env: dict[str, str] | None = None, cwd: str | None = None,
                 term_grace: float = 8.0) -> None:
        self.argv = argv
        self.spec = spec
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.term_grace = term_grace
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def start(self, timeout: float = 20.0) -> "MilterProcess":
        listen = parse_socket_spec(self.spec)
        if listen.is_unix and os.path.exists(listen.path):
            os.unlink(listen.path)
        log = open(self.log_path, "ab")
        try:
            # umask 0: Postfix's smtpd (user postfix) must connect to a unix
            # socket that a root-owned daemon creates.
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=self.env, cwd=self.cwd, umask=0o000, start_new_session=True)
        finally:
            log.close()
        try:
            wait_for_socket(self.spec, timeout, alive=self.proc)
        except Exception as exc:
            self.stop()
            raise PostfixError(f"{exc}\n--- {self.log_path}:\n{self.log_text()[-3000:]}") from exc
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return self.returncode
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.term_grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.returncode = proc.returncode
        self.proc = None
        return self.returncode

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def __enter__(self) -> "MilterProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def milterguard_argv(config: str | None, spec: str, state_dir: str,
                     python: str | None = None) -> list[str]:
    """The command line that runs the milterguard daemon."""
    argv = [python or sys.executable, "-m", "milterguard", "run"]
    if config:
        argv += ["-c", config]
    return argv + ["--socket", spec, "--state-dir", state_dir]


def xclient_transaction(port: int, client: str, sender: str, rcpt: str,
                        message: bytes) -> tuple[int, str]:
    """One SMTP transaction to Postfix as ``client`` (XCLIENT; HELO
    mail.example.org): the first refusal (RCPT or DATA), or DATA's reply."""
    import smtplib
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("mail.example.org")
        code, text = smtp.docmd("XCLIENT", f"ADDR={client} NAME=mail.example.org"
                                           " HELO=mail.example.org")
        assert code == 220, (code, text)
        smtp.ehlo("mail.example.org")
        code, text = smtp.mail(sender)
        assert code == 250, (code, text)
        code, text = smtp.rcpt(rcpt)
        if code != 250:
            return code, text.decode()
        try:
            code, text = smtp.data(message)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        return code, text.decode()
