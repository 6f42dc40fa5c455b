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
import threading
from typing import Any

from milterguard.cli.main import add_config_arguments
from milterguard.config import load_config
from milterguard.errors import MilterguardError
from milterguard.greylist.triplets import Greylist
from milterguard.greylist.policyd import Exemptions, PolicyServer, serve
from milterguard.listenaddr import parse_listen_address
from milterguard.logsetup import LEVELS, setup_logging
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
                        choices=LEVELS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.state_dir)
    # The daemon's own log set-up: the same formats and target as `run`.
    logging_cfg = config.section("logging")
    setup_logging(args.log_level or str(logging_cfg.get("level", "info")),
                  str(logging_cfg.get("target", "stderr")))
    greylist = Greylist.from_config(config)
    address = greylist.settings.policyd_listen
    if args.listen:
        try:
            address = parse_listen_address(args.listen)
        except ValueError as exc:
            raise MilterguardError(f"--listen: {exc}") from None
    try:
        server = PolicyServer(address, greylist, exemptions=Exemptions.from_config(config))
    except OSError as exc:
        raise MilterguardError(f"cannot listen on {address[0]}:{address[1]}: {exc}") from None
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
