"""`milterguard check`: validate config and rules before they go live."""

from __future__ import annotations

import argparse
import os
import sys

from milterguard.cli.main import add_config_arguments
from milterguard.config import load_config
from milterguard.errors import ConfigError, ConfigErrors

HELP = """\
Load the config and every rule file exactly as `run` would and report every
problem with file, line, rule id and field. Exit 0 if all is well, 1 on any
error. Run it after editing rules; the daemon also keeps its working rules
when a reload finds errors.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("check", help="validate config and rule files",
                              description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, state_dir=False)
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.add_argument("--strict", action="store_true",
                   help="lint warnings (shadowed rules, risky patterns, ...) fail the check too")
    p.add_argument("--no-dynamic", action="store_true",
                   help="warnings: skip running regexes on adversarial texts (the errors "
                        "are always checked, as run and reloads check them)")
    p.set_defaults(func=check)


def check(args: argparse.Namespace) -> int:
    from milterguard.validate import validate_config
    try:
        config = load_config(args.config)
        policy = validate_config(config)
    except ConfigErrors as exc:
        for err in exc.errors:
            print(err)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(exc)
        return 1
    # The gates' sections (DNSBL and URI blocklist zones, HELO, envelope)
    # as run builds them, without starting their self-tests.
    from milterguard.gates.gateset import Gates
    try:
        Gates.from_config(config, start=False).close()
    except ConfigError as exc:
        print(exc)
        return 1
    # Rules that load but will not do what their author meant (milterguard.lint).
    from milterguard.ruleset.lint import ERROR, lint
    findings = lint(policy.ruleset, dynamic=not args.no_dynamic)
    errors = [f for f in findings if f.level == ERROR]
    for finding in findings:
        if finding.level == ERROR or args.strict or not args.quiet:
            print(finding)
    if errors or (args.strict and findings):
        print(f"{len(errors)} error(s), {len(findings) - len(errors)} warning(s) from lint",
              file=sys.stderr)
        return 1
    if not args.quiet:
        rs = policy.ruleset
        print(f"ok: {len(rs)} rules from {len(rs.sources)} files; "
              f"{len(rs.matchers)} compiled targets; {len(findings)} lint warning(s)")
        # Which copy of the rules was read: an installed package, the
        # checkout, or /usr/share, and whether the site directory exists.
        for layer, path, count in rs.origins:
            state = "" if os.path.exists(path) else ", not found"
            print(f"{layer} rules: {path} ({count} file{'' if count == 1 else 's'}{state})")
    return 0
