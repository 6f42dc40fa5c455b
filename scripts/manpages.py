#!/usr/bin/env python3
"""Write milterguard's man pages from its argparse definitions.

    python3 scripts/manpages.py OUTDIR

writes ``milterguard.8`` (the command, its sub-commands, files, and the
Postfix settings from packaging/postfix-main.cf.snippet verbatim) and one
``milterguard-COMMAND.8`` per sub-command (every option with its help, and
the sub-command's own actions). The Debian package builds them with this
script, so a page can never describe an option the program does not have.
The date comes from SOURCE_DATE_EPOCH when set (dpkg sets it from the
changelog), for reproducible builds.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from milterguard import __version__
from milterguard.cli.main import build_parser

SNIPPET = os.path.join(REPO, "packaging", "postfix-main.cf.snippet")

FILES = [
    ("/etc/milterguard/milterguard.yaml",
     "The site configuration, read with -c; every key overrides the built-in default of the "
     "same name (the installed file lists them all, commented out)."),
    ("/etc/milterguard/rules.d/",
     "The site's rule files (rules.site), read after the shipped ones; a rule with the id "
     "of a shipped rule replaces it."),
    ("/usr/share/milterguard/rules/", "The shipped rule set."),
    ("/var/lib/milterguard/",
     "State: the SQLite hits store, bans, greylist, and the files bans sync exports."),
    ("/var/spool/postfix/milterguard/milterguard.sock",
     "The daemon's default socket, below Postfix's chroot; main.cf reaches it as "
     "unix:milterguard/milterguard.sock."),
]


def roff(text: str) -> str:
    """Escape text for roff: backslashes, hyphens, and control characters
    at the start of a line."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def paragraphs(text: str) -> str:
    """Help text with blank-line paragraphs; indented lines kept as they are."""
    out = []
    for block in text.strip().split("\n\n"):
        if any(line.startswith("  ") for line in block.splitlines()):
            out.append(".PP\n.nf\n" + roff(block) + "\n.fi")
        else:
            out.append(".PP\n" + roff(" ".join(block.split())))
    return "\n".join(out)


def header(name: str, summary: str, date: str) -> str:
    return (f'.TH {roff(name.upper())} 8 "{date}" "milterguard {__version__}" '
            f'"System Administration"\n.SH NAME\n{roff(name)} \\- {roff(summary)}\n')


def options(parser: argparse.ArgumentParser) -> str:
    out = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            metavar = ""
            if action.nargs != 0:
                metavar = " " + (action.metavar or action.dest.upper())
            label = ", ".join(f"\\fB{roff(o)}\\fR" + (f"\\fI{roff(metavar)}\\fR" if metavar else "")
                              for o in action.option_strings)
        else:
            label = f"\\fI{roff(action.metavar or action.dest)}\\fR"
        text = action.help or ""
        if action.choices and not isinstance(action.choices, dict):
            text += f" (one of: {', '.join(str(c) for c in action.choices)})"
        out.append(f".TP\n{label}\n{roff(text)}")
    return "\n".join(out)


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of the sub-parsers, in definition order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def usage(parser: argparse.ArgumentParser) -> str:
    text = parser.format_usage().strip()
    text = text[len("usage: "):] if text.startswith("usage: ") else text
    return ".SH SYNOPSIS\n.nf\n" + roff(" ".join(text.split())) + "\n.fi\n"


def command_page(name: str, summary: str, parser: argparse.ArgumentParser, date: str) -> str:
    page = header(f"milterguard-{name}", summary, date) + usage(parser)
    page += ".SH DESCRIPTION\n" + paragraphs(parser.description or summary) + "\n"
    page += ".SH OPTIONS\n" + options(parser) + "\n"
    for action, action_help, sub in subcommands(parser):
        page += f".SH {roff(action.upper())}\n" + usage(sub).replace(".SH SYNOPSIS\n", "")
        page += paragraphs(sub.description or action_help) + "\n"
        opts = options(sub)
        if opts:
            page += opts + "\n"
    page += ".SH SEE ALSO\n\\fBmilterguard\\fR(8)\n"
    return page


def main_page(parser: argparse.ArgumentParser, date: str) -> str:
    page = header("milterguard", "layered spam and attack defence for Postfix, as one milter",
                  date)
    page += usage(parser)
    page += ".SH DESCRIPTION\n" + paragraphs(parser.description or "") + "\n"
    page += ".SH COMMANDS\n"
    for name, help_text, _ in subcommands(parser):
        page += f".TP\n\\fBmilterguard\\-{roff(name)}\\fR(8)\n{roff(help_text)}\n"
    page += ".SH OPTIONS\n" + options(parser) + "\n"
    page += ".SH FILES\n" + "".join(f".TP\n{roff(path)}\n{roff(text)}\n" for path, text in FILES)
    with open(SNIPPET, encoding="utf-8") as fh:
        snippet = fh.read()
    page += (".SH POSTFIX\nThese lines in Postfix's main.cf hand every SMTP session to the "
             "daemon (the file packaging/postfix\\-main.cf.snippet of the source, installed as "
             "/usr/share/doc/milterguard/postfix\\-main.cf.snippet):\n.PP\n.nf\n"
             + roff(snippet.rstrip("\n")) + "\n.fi\n")
    page += ".SH SEE ALSO\n" + ",\n".join(
        f"\\fBmilterguard\\-{roff(name)}\\fR(8)" for name, _, _ in subcommands(parser))
    page += ",\n\\fBpostconf\\fR(5), /usr/share/doc/milterguard/README.md\n"
    return page


def write_pages(outdir: str) -> list[str]:
    stamp = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(stamp), datetime.timezone.utc) if stamp
            else datetime.datetime.now(datetime.timezone.utc))
    date = when.strftime("%Y-%m-%d")
    parser = build_parser()
    os.makedirs(outdir, exist_ok=True)
    pages = {"milterguard.8": main_page(parser, date)}
    for name, help_text, sub in subcommands(parser):
        pages[f"milterguard-{name}.8"] = command_page(name, help_text, sub, date)
    written = []
    for filename, text in pages.items():
        path = os.path.join(outdir, filename)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: manpages.py OUTDIR")
    for written_path in write_pages(sys.argv[1]):
        print(written_path)
