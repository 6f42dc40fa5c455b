"""`milterguard run`: the milter daemon Postfix talks to.

Signals (issue 12, finding 6). Helper threads (store writer, reload watcher,
DNSBL self-test, metrics) start before libmilter; with SIGTERM unblocked in
them the kernel handed it to one of them and its default action ended the
process at once: no drain, no flush, no ``event=stop``. So SIGTERM, SIGINT
and SIGHUP are blocked here first, before any thread exists, and every
thread inherits that.

libmilter also waits for those signals in a thread of its own, and on any
of them closes its socket and ends every open session mid-message. To
drain instead, libmilter runs in a thread and the main thread waits for
the signals itself: the kernel gives a signal sent to the process to its
main thread whenever that thread is waiting for it, so libmilter's signal
thread sees only a second one (which still stops at once). On the first,
new messages get 451 4.3.2, messages in flight finish (``stop_timeout``),
then libmilter stops, every hit is written and ``event=stop`` logged.
"""

from __future__ import annotations

import argparse
import grp
import logging
import os
import resource
import signal
import stat
import sys
import threading

from milterguard.cli.main import add_config_arguments
from milterguard.config import Config, load_config
from milterguard.errors import ConfigError, ConfigErrors, MilterguardError
from milterguard.logsetup import setup_logging
from milterguard.socketspec import SocketSpec, parse_socket_spec
from milterguard.store.engines import describe

log = logging.getLogger("milterguard.daemon")

#: libmilter stops on these (SIGINT aborts sessions, the others drain).
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
#: Sent by the libmilter thread to the main thread when libmilter ends by
#: itself, so the main thread can wait for signals without ever leaving
#: sigwait (a stop signal arriving outside it would go to libmilter).
SERVER_ENDED = signal.SIGUSR1

HELP = """\
Start the milter daemon. It listens on SPEC (libmilter syntax):
  unix:/path/to/socket      a unix socket (Postfix: smtpd_milters = unix:/path)
  inet:PORT@HOST            TCP on an IPv4 address, e.g. inet:8894@127.0.0.1
  inet6:PORT@HOST           TCP on an IPv6 address
Postfix's way of writing the same socket (inet:127.0.0.1:8894,
inet:[::1]:8894) is accepted too.
Without --socket it listens where the config says, by default on
unix:/var/spool/postfix/milterguard/milterguard.sock, below Postfix's queue
directory so that a chrooted smtpd reaches it (main.cf: smtpd_milters =
unix:milterguard/milterguard.sock). Without -c it runs on the built-in
defaults and the shipped rule set; state (the SQLite database) goes to
--state-dir, created if missing. Rule files and the config are re-read
when they change; a broken edit is logged and the working rules stay.
Stop it with SIGTERM: it stops accepting, lets messages in flight finish
(stop_timeout), writes every hit and exits.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("run", help="run the milter daemon",
                              description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--socket", metavar="SPEC", help="listen here instead of the config's socket")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)


def listen_spec(option: str | None, config: Config) -> SocketSpec:
    """--socket, else the config's socket; a bad one is an error naming
    where it was written, before anything is started."""
    if option:
        return parse_socket_spec(option)
    try:
        return parse_socket_spec(config.socket)
    except MilterguardError as exc:
        raise config.data.error(str(exc), "socket") from None


def _prepare_socket(listen: SocketSpec) -> None:
    """Create a unix socket's directory; remove a stale socket left by a
    crash (libmilter would refuse to bind)."""
    if not listen.is_unix:
        return
    path = listen.path
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        mode = os.stat(directory).st_mode
        if os.path.exists(path):
            os.unlink(path)
    except OSError as exc:
        raise MilterguardError(f"socket {path}: {exc.strerror} ({exc.filename}); "
                               "choose another with --socket or socket: in the config") from None
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        # Anyone could replace the socket with their own and read the mail.
        log.warning("event=socket-dir-world-writable dir=%s", directory)


class SocketAccess:
    """Mode and group of the unix socket, from ``socket_mode``/``socket_group``."""

    def __init__(self, config: Config) -> None:
        data = config.data
        errors: list[ConfigError] = []   # both keys checked, so `check` lists both at once
        raw_mode = data.get("socket_mode", "0660")
        self.mode = 0o660
        try:
            # YAML reads a bare 0660 as the number 432; "0660" stays text.
            self.mode = raw_mode if isinstance(raw_mode, int) and not isinstance(raw_mode, bool) \
                else int(str(raw_mode), 8)
            if not 0 <= self.mode <= 0o777:
                raise ValueError
        except ValueError:
            errors.append(data.error(f"not a file mode: {raw_mode!r} (use e.g. \"0660\")",
                                     "socket_mode"))
        group = data.get("socket_group", "postfix")
        if group is not None and not isinstance(group, str):
            errors.append(data.error("must be a group name or \"\"", "socket_group"))
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ConfigErrors(errors)
        self.group = group or ""

    def umask(self) -> int:
        """The umask under which libmilter creates the socket with our mode."""
        return 0o777 & ~self.mode

    def apply(self, path: str) -> None:
        os.chmod(path, self.mode)
        if not self.group:
            return
        try:
            gid = grp.getgrnam(self.group).gr_gid
        except KeyError:
            log.warning("event=socket-group-missing group=%s socket=%s mode=%o",
                        self.group, path, self.mode)
            return
        try:
            os.chown(path, -1, gid)
        except PermissionError:
            # Not root and not in that group (the packaged unit runs as
            # milterguard, and Postfix joins group milterguard instead).
            log.info("event=socket-group-kept socket=%s wanted=%s gid=%d mode=%o", path,
                     self.group, os.stat(path).st_gid, self.mode)


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: each MTA session holds a
    descriptor and 1,024 run out under a connection flood (finding 9)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            pass
    return soft


def run(args: argparse.Namespace) -> int:
    # Before anything can start a thread: see the module docstring.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {SERVER_ENDED})
    config = load_config(args.config, args.state_dir)
    # The validation `check` does, before anything is set up from the config.
    from milterguard.validate import validate_config
    try:
        policy = validate_config(config)
    except ConfigErrors as exc:
        for err in exc.errors:
            print(f"milterguard: {err}", file=sys.stderr)
        print(f"milterguard: {len(exc.errors)} error(s); not starting", file=sys.stderr)
        return 1
    logging_cfg = config.section("logging")
    setup_logging(args.log_level or str(logging_cfg.get("level", "info")),
                  str(logging_cfg.get("target", "stderr")))
    listen = listen_spec(args.socket, config)
    try:
        access = SocketAccess(config)
        session_timeout = config.data.duration("session_timeout", 330)
        stop_timeout = config.data.duration("stop_timeout", 10)
    except MilterguardError as exc:
        print(f"milterguard: {exc}", file=sys.stderr)
        return 1
    try:
        os.makedirs(config.state_dir, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise MilterguardError(f"cannot create state_dir {config.state_dir}: {exc.strerror}") \
            from None
    from milterguard.milter.engine import Engine  # imports pymilter-free policy code
    engine = Engine.from_config(config, policy=policy)
    from milterguard.milter import adapter
    _prepare_socket(listen)
    socket_path = listen.path if listen.is_unix else None
    spec = listen.libmilter()
    engine.start_watcher(float(config.get("rules.reload_interval", 1.0) or 0))
    # libmilter creates the socket under the process umask; it is restored
    # as soon as the socket exists, so no other file inherits it.
    old_umask = os.umask(access.umask()) if socket_path else os.umask(os.umask(0))

    def socket_ready() -> None:
        os.umask(old_umask)
        if socket_path:
            access.apply(socket_path)

    nofile = raise_open_files_limit()
    log.info("event=start socket=%s rules=%d state_dir=%s database=%s host=%s pid=%d"
             " nofile=%d", spec, len(engine.policy.ruleset), config.state_dir,
             describe(config.database), config.host_name, os.getpid(), nofile)
    metrics = None
    in_flight = 0
    failure: list[BaseException] = []

    main_thread = threading.main_thread().ident

    def serve() -> None:
        try:
            adapter.serve(engine, listen, timeout=max(1, int(session_timeout)),
                          on_listening=socket_ready)
        except MilterguardError as exc:   # reported by the main thread
            failure.append(exc)
        finally:
            if main_thread is not None:
                signal.pthread_kill(main_thread, SERVER_ENDED)

    server = threading.Thread(target=serve, name="libmilter")
    try:
        if config.get("metrics.listen"):
            # Only then: prometheus_client is needed for metrics alone.
            from milterguard.report.metrics import start_from_config
            metrics = start_from_config(config, engine)
        server.start()
        signum = _wait_for_stop_signal(server)
        if signum is not None:
            log.info("event=stopping signal=%s in_flight=%d timeout=%.0fs",
                     signal.Signals(signum).name, adapter.IN_FLIGHT.count, stop_timeout)
            in_flight = adapter.IN_FLIGHT.drain(stop_timeout)
            adapter.stop()
            server.join(stop_timeout + 10)
    finally:
        os.umask(old_umask)
        engine.close()
        if metrics is not None:
            metrics.close()
        store = getattr(engine, "store", None)
        log.info("event=stop in_flight_left=%d hits_written=%s", in_flight,
                 getattr(store, "written", "-"))
    if failure:
        print(f"milterguard: cannot serve {spec}: {failure[0]}", file=sys.stderr)
        return 1
    return 0


def _wait_for_stop_signal(server: threading.Thread) -> int | None:
    """The stop signal that arrived, or None when libmilter ended by itself
    (it could not open its socket)."""
    signum = signal.sigwait(STOP_SIGNALS | {SERVER_ENDED})
    if signum != SERVER_ENDED:
        return int(signum)
    server.join()         # it sent SERVER_ENDED as its last act
    return None
