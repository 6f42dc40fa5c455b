"""`milterguard import-postfix`: Postfix header/body_checks to rule YAML."""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from milterguard.errors import MilterguardError
from milterguard.ruleset.postfix_import import convert_table

HELP = """\
Convert a Postfix regexp: or pcre: header_checks or body_checks table into a
milterguard rule file. FILE may carry Postfix's type prefix
(pcre:/etc/postfix/body_checks). Lines that cannot be converted (PREPEND,
REDIRECT, FILTER, unsupported pattern syntax...) are listed with their line
numbers on stderr and in the output's leading comment. Header tables become
rules on headers:raw, body tables rules on body:raw, since Postfix matches
raw, undecoded text; consider rewriting them for the decoded views.
Exit 0 when every line converted, 1 when some did not.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("import-postfix", help="convert Postfix header/body_checks",
                              description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="[regexp:|pcre:]FILE")
    p.add_argument("--kind", choices=("header", "body"),
                   help="table kind (default: 'body' if the file name says so, else 'header')")
    p.add_argument("--type", choices=("regexp", "pcre"), dest="table_type",
                   help="table syntax (default: from the prefix or file name, else regexp)")
    p.add_argument("-o", "--output", metavar="OUT.yaml", help="write here (default: stdout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = args.file
    table_type = args.table_type
    for prefix in ("regexp:", "pcre:"):
        if path.startswith(prefix):
            path = path[len(prefix):]
            table_type = table_type or prefix[:-1]
    base = os.path.basename(path).lower()
    table_type = table_type or ("pcre" if "pcre" in base else "regexp")
    kind = args.kind or ("body" if "body" in base else "header")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise MilterguardError(f"{path}: {exc.strerror}") from None
    conv = convert_table(lines, kind=kind, pcre=table_type == "pcre", source=path)

    header = [f"# Converted by milterguard import-postfix from {table_type}:{path} ({kind}_checks).",
              f"# {len(conv.rules)} rules; {len(conv.skipped)} lines not converted."]
    for item in conv.skipped:
        header.append(f"# NOT CONVERTED line {item.line}: {item.reason}: {item.text}")
    for item in conv.notes:
        header.append(f"# note line {item.line}: {item.reason}")
    text = "\n".join(header) + "\n" + yaml.safe_dump(
        {"rules": conv.rules}, sort_keys=False, allow_unicode=True, width=1000)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    for item in conv.skipped:
        print(f"{path}:{item.line}: not converted: {item.reason}: {item.text}", file=sys.stderr)
    print(f"import-postfix: {len(conv.rules)} rules, {len(conv.skipped)} lines not converted",
          file=sys.stderr)
    return 1 if conv.skipped else 0
