"""`milterguard bans sync|list|add|remove`: ageing bans and their exports.

`sync` applies the ban policy to the hits store, then writes every
configured exporter. With `--no-firewall` it only writes the files (the
unprivileged timer does that; a root unit loads the nft batch, see
packaging/). `add` and `remove` write the exporters too, so a manual ban
(or its lifting) reaches the firewall at once, not at the next sync. An
exporter that fails is reported and the command exits 1; the other
exporters still run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any, Callable

from milterguard.store import db
from milterguard.cli.main import add_config_arguments
from milterguard.store.bans import BanEngine, BanPolicy
from milterguard.config import load_config
from milterguard.duration import parse_duration
from milterguard.errors import MilterguardError
from milterguard.store.exporters import (KNOWN_EXPORTERS, entries_from_bans, exporter_names,
                                         run_exporters)

#: Tests replace this to run the command at another time.
clock: Callable[[], float] = time.time


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bans", help="ageing bans: sync, list, add, remove",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    sub = p.add_subparsers(dest="bans_command", metavar="ACTION")

    s = sub.add_parser("sync", help="ban by policy, then write the exporters")
    s.add_argument("--json", action="store_true", help="print a summary as JSON")

    ls = sub.add_parser("list", help="show the active bans")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--all", action="store_true", help="include expired bans")

    a = sub.add_parser("add", help="ban an address or network by hand")
    a.add_argument("addr")
    a.add_argument("--reason", required=True)
    a.add_argument("--time", metavar="DURATION", help="e.g. 1h (default: bans.default.ban_time)")
    a.add_argument("--force", action="store_true", help="ban even a protected network")

    r = sub.add_parser("remove", help="lift a ban now")
    r.add_argument("addr")
    r.add_argument("--reason", required=True)

    for sp in (s, a, r):
        sp.add_argument("--no-firewall", action="store_true",
                        help="write the files but do not run nft/ipset")
        sp.add_argument("--netns", metavar="NAME", help="run nft inside this network namespace")
        sp.add_argument("--exporters", metavar="LIST",
                        help=f"comma-separated, overrides bans.exporters "
                             f"({','.join(KNOWN_EXPORTERS)})")
    for sp in (s, ls, a, r):
        add_config_arguments(sp, quiet=True)
    p.set_defaults(func=run, _bans_parser=p)


def _fmt_time(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def run(args: argparse.Namespace) -> int:
    if not args.bans_command:
        args._bans_parser.print_help()
        return 2
    config = load_config(args.config, args.state_dir)
    policy = BanPolicy.from_config(config)
    conn = db.connect(config.database)
    try:
        engine = BanEngine(conn, policy, clock=clock)
        return _COMMANDS[args.bans_command](args, config, engine)
    finally:
        conn.close()


def _export(args: argparse.Namespace, config: Any, engine: BanEngine) -> list[Any]:
    """Write (and load) every configured exporter from the active bans;
    failures are printed, the results returned."""
    section = config.section("bans")
    now = engine.clock()
    entries = entries_from_bans(engine.active(), now)
    if args.exporters is not None:
        names = [n.strip() for n in args.exporters.split(",") if n.strip()]
    else:
        names = exporter_names(section)
    nft_command = section.get("nft_command") or ["nft"]
    if not isinstance(nft_command, list):
        raise section.error("must be a command as a list, e.g. [nft]", "nft_command")
    nft_command = [str(c) for c in nft_command]
    if args.netns:
        nft_command = ["ip", "netns", "exec", args.netns, *nft_command]
    results = run_exporters(names, entries, now, section, config.state_dir,
                            load_firewall=not args.no_firewall, nft_command=nft_command)
    for r in results:
        if r.error:
            print(f"milterguard: exporter {r.name} failed: {r.error}", file=sys.stderr)
    return results


def _state(result: Any) -> str:
    return "failed" if result.error else "loaded" if result.loaded else "written"


def _sync(args: argparse.Namespace, config: Any, engine: BanEngine) -> int:
    section = config.section("bans")
    new = engine.sync()
    keep = section.duration("keep_expired", "90d")
    if keep > 0:
        engine.prune(keep)
    results = _export(args, config, engine)
    active = len(engine.active())
    summary = {"new_bans": [b.addr for b in new], "active": active,
               "exports": [{"name": r.name, "paths": r.paths, "loaded": r.loaded,
                            "error": r.error, "seconds": round(r.seconds, 3)} for r in results]}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"bans sync: new={len(new)} active={active} "
              + " ".join(f"{r.name}={_state(r)}" for r in results))
    return 1 if any(r.error for r in results) else 0


def _list(args: argparse.Namespace, config: Any, engine: BanEngine) -> int:
    if args.all:
        bans = sorted(engine.all_bans().values(), key=lambda b: (b.created, b.addr))
    else:
        bans = engine.active()
    if args.json:
        print(json.dumps([b.as_json() for b in bans], indent=2))
        return 0
    if not bans:
        print("no active bans")
        return 0
    # HOSTS: the MX hosts whose hits are the evidence ("-": a manual ban,
    # or hits recorded before hosts were named).
    width = max([5] + [len(b.hosts) for b in bans])
    print(f"{'ADDRESS':<26} {'CATEGORY':<12} {'HITS':>5} {'FIRST SEEN':<19}  "
          f"{'LAST SEEN':<19}  {'EXPIRES':<19}  {'HOSTS':<{width}}  REASON")
    for b in bans:
        first = _fmt_time(b.first_seen) if b.first_seen else "-"
        last = _fmt_time(b.last_seen) if b.last_seen else "-"
        print(f"{b.addr:<26} {b.category:<12} {b.hit_count:>5} {first:<19}  {last:<19}  "
              f"{_fmt_time(b.expires):<19}  {b.hosts or '-':<{width}}  {b.reason}")
    return 0


def _add(args: argparse.Namespace, config: Any, engine: BanEngine) -> int:
    duration = parse_duration(args.time) if args.time else None
    ban = engine.add(args.addr, args.reason, duration, force=args.force)
    print(f"banned {ban.addr} until {_fmt_time(ban.expires)}")
    results = _export(args, config, engine)
    return 1 if any(r.error for r in results) else 0


def _remove(args: argparse.Namespace, config: Any, engine: BanEngine) -> int:
    ban = engine.remove(args.addr, args.reason)
    print(f"unbanned {ban.addr}", file=sys.stdout)
    results = _export(args, config, engine)
    return 1 if any(r.error for r in results) else 0


_COMMANDS: dict[str, Callable[[argparse.Namespace, Any, BanEngine], int]] = {
    "sync": _sync, "list": _list, "add": _add, "remove": _remove}

__all__ = ["add_parser", "run", "MilterguardError"]
