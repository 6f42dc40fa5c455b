"""`milterguard run`: the milter daemon Postfix talks to."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from milterguard.cli.main import add_config_arguments
from milterguard.config import Config, load_config
from milterguard.errors import ConfigErrors, MilterguardError
from milterguard.logsetup import setup_logging
from milterguard.socketspec import SocketSpec, parse_socket_spec
from milterguard.store.engines import describe

log = logging.getLogger("milterguard.daemon")

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
Stop it with SIGTERM.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("run", help="run the milter daemon",
                              description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--socket", metavar="SPEC", help="listen here instead of the config's socket")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)


def _listen_spec(option: str | None, config: Config) -> SocketSpec:
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
    if listen.is_unix:
        path = listen.path
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if os.path.exists(path):
                os.unlink(path)
        except OSError as exc:
            raise MilterguardError(f"socket {path}: {exc.strerror} ({exc.filename}); "
                                   "choose another with --socket or socket: in the config") from None


def run(args: argparse.Namespace) -> int:
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
    listen = _listen_spec(args.socket, config)
    os.makedirs(config.state_dir, mode=0o755, exist_ok=True)
    from milterguard.milter.engine import Engine  # imports pymilter-free policy code
    engine = Engine.from_config(config, policy=policy)
    from milterguard.milter.adapter import serve
    _prepare_socket(listen)
    engine.start_watcher(float(config.get("rules.reload_interval", 1.0) or 0))
    # The socket must be reachable by Postfix's smtpd (another user):
    # access is controlled by the directory it lives in.
    old_umask = os.umask(0o000)
    log.info("event=start socket=%s rules=%d state_dir=%s database=%s host=%s pid=%d",
             listen.libmilter(), len(engine.policy.ruleset), config.state_dir,
             describe(config.database), config.host_name, os.getpid())
    metrics = None
    try:
        if config.get("metrics.listen"):
            # Only then: prometheus_client is needed for metrics alone.
            from milterguard.report.metrics import start_from_config
            metrics = start_from_config(config, engine)
        serve(engine, listen)
    finally:
        os.umask(old_umask)
        engine.close()
        if metrics is not None:
            metrics.close()
        log.info("event=stop")
    return 0
