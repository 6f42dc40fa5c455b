"""The `milterguard` command: one sub-command per module ``cli/<name>.py``.

Each command module exposes ``add_parser(subparsers)``, which registers its
sub-parser and sets ``func`` (taking the parsed args, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from milterguard import __version__
from milterguard.errors import MilterguardError
from milterguard.store.engines import ERRORS, error_text

#: Sub-command modules, in the order `--help` lists them.
COMMAND_MODULES = [
    "run",
    "check",
    "replay",
    "policyd",
    "bans",
    "logscan",
    "import_postfix",
    "stats",
    "report",
    "explain",
    "learn",
    "db",
]

DESCRIPTION = """\
milterguard: a layered spam and attack defence for Postfix, as one milter.

Postfix hands each SMTP session to `milterguard run` (smtpd_milters); the
daemon gates on DNSBLs and HELO at connect, checks the envelope and
greylists at RCPT, and matches phrase rules over decoded headers and body.
Every finding is recorded so that bans, the site's own DNSBL zone and stats
can be built from it.
"""


def add_config_arguments(parser: argparse.ArgumentParser, state_dir: bool = True,
                         quiet: bool = False) -> None:
    """``-c/--config`` and ``--state-dir``, the same for every command.

    ``quiet``: repeated on a sub-sub-command (``bans sync -c FILE``) without
    help text and without overriding a value given before the action.
    """
    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if quiet else {}
    parser.add_argument("-c", "--config", metavar="FILE",
                        help=None if quiet else "site config (YAML) over the built-in defaults",
                        **extra)
    if state_dir:
        parser.add_argument("--state-dir", metavar="DIR",
                            help=None if quiet else "state directory (holds the database; "
                            "default from the config: /var/lib/milterguard)", **extra)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that sub-command's module is imported,
    so one command's start-up never pays for (or breaks on) the others."""
    parser = argparse.ArgumentParser(
        prog="milterguard", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"milterguard {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if only is not None and name != only:
            continue
        module = importlib.import_module(f"milterguard.cli.{name}")
        module.add_parser(subparsers)
    return parser


def _command_module(argv: list[str]) -> str | None:
    for arg in argv:
        if arg.startswith("-"):
            continue
        name = arg.replace("-", "_")
        return name if name in COMMAND_MODULES else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command_module(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MilterguardError as exc:
        print(f"milterguard: {exc}", file=sys.stderr)
        return 1
    except ERRORS as exc:   # the database is down, locked or refused us
        print(f"milterguard: database: {error_text(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
