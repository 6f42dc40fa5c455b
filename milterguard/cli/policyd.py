"""`milterguard policyd`: the greylist as a Postfix policy service.

    smtpd_recipient_restrictions = ..., reject_unauth_destination,
        check_policy_service inet:127.0.0.1:60000

Uses the same configuration (``greylist:`` section) and database as the
milter. Running it is the opt-in: it greylists whether or not
``greylist.enabled`` (which governs the milter's RCPT check) is true.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from milterguard.cli.main import add_config_arguments
from milterguard.config import load_config
from milterguard.errors import MilterguardError
from milterguard.greylist.triplets import Greylist
from milterguard.greylist.policyd import PolicyServer, parse_listen, serve
from milterguard.store.engines import describe

log = logging.getLogger("milterguard.policyd")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "policyd", help="serve the greylist over Postfix's policy delegation protocol",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="address to listen on (default: greylist.policyd_listen,"
                             " 127.0.0.1:60000)")
    add_config_arguments(parser)
    parser.add_argument("--log-level", default=None,
                        choices=["debug", "info", "warning", "error"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.state_dir)
    level = (args.log_level or str(config.get("logging.level", "info"))).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(name)s level=%(levelname)s %(message)s")
    greylist = Greylist.from_config(config)
    listen = args.listen or greylist.settings.policyd_listen
    try:
        address = parse_listen(listen)
    except ValueError as exc:
        raise MilterguardError(str(exc)) from None
    try:
        server = PolicyServer(address, greylist)
    except OSError as exc:
        raise MilterguardError(f"cannot listen on {listen}: {exc}") from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    s = greylist.settings
    try:
        serve(server, stop, on_ready=lambda: log.info(
            "event=policyd-listening listen=%s:%d database=%s delay=%g retry_window=%g"
            " lifetime=%g", *server.server_address[:2], describe(config.database),
            s.delay, s.retry_window, s.lifetime))
    finally:
        greylist.close()
        log.info("event=policyd-stopped counts=%s",
                 ",".join(f"{k}:{v}" for k, v in sorted(server.counts.items())))
    return 0
