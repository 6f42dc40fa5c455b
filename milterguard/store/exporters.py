"""Turn the active bans into firewall sets, DNSBL zones and Postfix maps.

Every exporter renders the whole list into one file, written atomically
(temporary file in the same directory, fsync, rename), so a reader (nft,
rbldnsd's reload, named, Postfix) never sees half a file:

- ``nftables``: one ``nft -f`` batch that re-creates ``table inet
  milterguard`` with the sets ``banned4`` and ``banned6`` (``flags
  interval, timeout``) and a drop rule in an input chain for the mail
  ports only (``bans.nftables.ports``, default 25, 465 and 587; ``all``
  drops every packet, SSH too). Elements carry
  their remaining time, so the kernel expires them between syncs. The batch
  deletes and re-creates the table in one transaction: loading it again
  after a firewall reload restores everything, and loading it twice never
  duplicates the rule.
- ``ipset``: an ``ipset restore`` file that fills fresh sets and swaps them
  in atomically.
- ``rbldnsd``: an ``ip4set`` file and an ``ip6trie`` file (rbldnsd's ip4
  datasets cannot hold IPv6) with a TXT reason per entry.
- ``bind``: a zone file with reversed-address A and TXT records; /64s are
  wildcards below their 16 reversed nibbles.
- ``postfix``: a ``cidr:`` access table (``check_client_access``).
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import math
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from milterguard.errors import MilterguardError
from milterguard.yamlsrc import did_you_mean

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: ipset refuses timeouts above this many seconds.
IPSET_MAX_TIMEOUT = 2147483


@dataclass(frozen=True)
class ExportEntry:
    """One banned network as exporters see it."""

    network: IPNetwork
    remaining: float          # seconds until the ban ends (> 0)
    reason: str
    category: str = ""

    @classmethod
    def from_ban(cls, ban: Any, now: float) -> "ExportEntry":
        return cls(ipaddress.ip_network(ban.addr, strict=False), ban.expires - now,
                   ban.reason, ban.category)


def entries_from_bans(bans: Iterable[Any], now: float) -> list[ExportEntry]:
    """Active bans as entries, with networks inside another banned one dropped.

    Interval sets refuse overlapping elements, so a manual /24 swallows the
    single addresses inside it (keeping the longer of the remaining times).
    """
    entries = [ExportEntry.from_ban(b, now) for b in bans if b.expires > now]
    out: list[ExportEntry] = []
    for version in (4, 6):
        items = sorted((e for e in entries if e.network.version == version),
                       key=lambda e: (int(e.network.network_address), e.network.prefixlen))
        current: ExportEntry | None = None
        for entry in items:
            if current is not None and entry.network.subnet_of(current.network):  # type: ignore[arg-type]  # same version: sorted by it above
                if entry.remaining > current.remaining:
                    current = ExportEntry(current.network, entry.remaining, current.reason,
                                          current.category)
                    out[-1] = current
                continue
            out.append(entry)
            current = entry
    return out


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file only."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@functools.lru_cache(maxsize=4096)     # many bans share a reason
def _txt(text: str, limit: int = 200) -> str:
    """Reason text safe for zone files and maps: printable ASCII, no quotes."""
    out = "".join(ch if 32 <= ord(ch) < 127 else " " for ch in text)
    out = " ".join(out.replace('"', "'").replace("\\", "/").split())
    return out[:limit]


def _stamp(now: float) -> str:
    return _stamp_minute(int(now) // 60 * 60) + f"{int(now) % 60:02d}Z"


@functools.lru_cache(maxsize=65536)
def _stamp_minute(minute: int) -> str:
    return datetime.datetime.fromtimestamp(minute, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:")


# -- nftables ------------------------------------------------------------

#: What a ban blocks unless the config says otherwise: SMTP, submissions
#: (TLS and STARTTLS). A ban earned by mail abuse should not lock the
#: sender's network out of SSH or the web; ``ports: all`` does that.
DEFAULT_BAN_PORTS = (25, 465, 587)


def ban_ports(section: Any) -> tuple[int, ...] | None:
    """``bans.nftables.ports``: a list of TCP ports, or ``all`` (None)."""
    value = section.get("ports", list(DEFAULT_BAN_PORTS)) if section is not None else None
    if value is None:
        return DEFAULT_BAN_PORTS
    if value == "all":
        return None
    ok = isinstance(value, list) and value and all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in value)
    if not ok:
        message = "must be a list of TCP ports (1-65535) or \"all\""
        if hasattr(section, "error"):
            raise section.error(message, "ports")
        raise MilterguardError(f"bans.nftables.ports {message}")
    return tuple(value)


def render_nftables(entries: Sequence[ExportEntry], now: float, table: str = "milterguard",
                    priority: int = -10, chunk: int = 2000,
                    ports: Sequence[int] | None = DEFAULT_BAN_PORTS) -> str:
    """The batch; ``ports`` None drops everything from a banned address."""
    match = "" if ports is None else f"tcp dport {{ {', '.join(str(p) for p in ports)} }} "
    lines = [
        f"# milterguard bans, generated {_stamp(now)}: {len(entries)} entries.",
        "# Load as one transaction: nft -f THIS_FILE",
        f"table inet {table} {{}}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "\tset banned4 {", "\t\ttype ipv4_addr", "\t\tflags interval, timeout", "\t}",
        "\tset banned6 {", "\t\ttype ipv6_addr", "\t\tflags interval, timeout", "\t}",
        "\tchain input {",
        f"\t\ttype filter hook input priority {priority}; policy accept;",
        f"\t\tip saddr @banned4 {match}counter drop",
        f"\t\tip6 saddr @banned6 {match}counter drop",
        "\t}",
        "}",
    ]
    for version, set_name in ((4, "banned4"), (6, "banned6")):
        items = [e for e in entries if e.network.version == version]
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            elements = ", ".join(
                f"{_nft_net(e.network)} timeout {max(1, math.ceil(e.remaining))}s" for e in part)
            lines.append(f"add element inet {table} {set_name} {{ {elements} }}")
    return "\n".join(lines) + "\n"


def _nft_net(net: IPNetwork) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


# -- ipset ---------------------------------------------------------------

def render_ipset(entries: Sequence[ExportEntry], now: float, set4: str = "milterguard4",
                 set6: str = "milterguard6") -> str:
    lines = [f"# milterguard bans, generated {_stamp(now)}: {len(entries)} entries.",
             "# Load with: ipset restore -file THIS_FILE"]
    for version, name, family in ((4, set4, "inet"), (6, set6, "inet6")):
        items = [e for e in entries if e.network.version == version]
        maxelem = max(65536, 2 * len(items))
        new = f"{name}-new"
        opts = f"hash:net family {family} timeout 3600 maxelem {maxelem} -exist"
        lines.append(f"create {name} {opts}")
        lines.append(f"create {new} {opts}")
        lines.append(f"flush {new}")
        for e in items:
            timeout = min(IPSET_MAX_TIMEOUT, max(1, math.ceil(e.remaining)))
            lines.append(f"add {new} {e.network} timeout {timeout} -exist")
        lines.append(f"swap {new} {name}")
        lines.append(f"destroy {new}")
    return "\n".join(lines) + "\n"


# -- rbldnsd -------------------------------------------------------------

def render_rbldnsd(entries: Sequence[ExportEntry], now: float, version: int,
                   answer: str = "127.0.0.2", test_entry: bool = True) -> str:
    """An rbldnsd ``ip4set`` (version 4) or ``ip6trie`` (version 6) file.

    rbldnsd replaces ``$`` in TXT templates with the queried address, so
    reasons are written with it removed.
    """
    kind = "ip4set" if version == 4 else "ip6trie"
    lines = [f"# milterguard bans ({kind}), generated {_stamp(now)}",
             f":{answer}:Listed by milterguard"]
    if test_entry:
        # RFC 5782: the test point 127.0.0.2 (::FFFF:7F00:2) is listed.
        test = "127.0.0.2" if version == 4 else "::ffff:7f00:2"
        lines.append(f"{test} :{answer}:RFC 5782 test point")
    for e in entries:
        if e.network.version != version:
            continue
        reason = _txt(e.reason).replace("$", "")
        until = _stamp(now + e.remaining)
        lines.append(f"{_nft_net(e.network)} :{answer}:milterguard: {reason}; until {until}")
    return "\n".join(lines) + "\n"


# -- BIND ----------------------------------------------------------------

def _reverse_name(net: IPNetwork) -> str:
    if net.version == 4:
        if net.prefixlen == 32:
            return ".".join(reversed(str(net.network_address).split(".")))
        octets = net.prefixlen // 8
        labels = str(net.network_address).split(".")[:octets]
        return "*." + ".".join(reversed(labels)) if labels else "*"
    nibbles = net.network_address.exploded.replace(":", "")
    if net.prefixlen == 128:
        return ".".join(reversed(nibbles))
    count = net.prefixlen // 4
    return "*." + ".".join(reversed(nibbles[:count]))


def render_bind(entries: Sequence[ExportEntry], now: float, zone: str, ttl: int = 300,
                nameserver: str = "localhost.", hostmaster: str = "",
                answer: str = "127.0.0.2", test_entry: bool = True) -> str:
    """A complete zone file; networks not on an octet/nibble boundary are
    widened to the boundary below them (BIND wildcards cannot say /20)."""
    origin = zone.rstrip(".") + "."
    hostmaster = hostmaster or f"hostmaster.{origin}"
    serial = int(now) & 0xFFFFFFFF
    lines = [
        f"; milterguard bans, generated {_stamp(now)}: {len(entries)} entries",
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@\tIN\tSOA\t{nameserver} {hostmaster} ( {serial} 3600 600 604800 {ttl} )",
        f"@\tIN\tNS\t{nameserver}",
    ]
    if test_entry:
        lines.append(f"2.0.0.127\tIN\tA\t{answer}")
        lines.append('2.0.0.127\tIN\tTXT\t"RFC 5782 test point"')
    for e in entries:
        name = _reverse_name(e.network)
        text = f"milterguard: {_txt(e.reason)}; until {_stamp(now + e.remaining)}"
        lines.append(f"{name}\tIN\tA\t{answer}")
        lines.append(f'{name}\tIN\tTXT\t"{text}"')
    return "\n".join(lines) + "\n"


# -- Postfix cidr ----------------------------------------------------------

def render_postfix_cidr(entries: Sequence[ExportEntry], now: float,
                        reply: str = "554 5.7.1") -> str:
    lines = [f"# milterguard bans, generated {_stamp(now)}: {len(entries)} entries.",
             "# Use as: smtpd_client_restrictions = check_client_access cidr:THIS_FILE"]
    for e in entries:
        lines.append(f"{e.network}\t{reply} Listed by milterguard: {_txt(e.reason, 120)}")
    return "\n".join(lines) + "\n"


# -- running them ----------------------------------------------------------

FIREWALL_EXPORTERS = ("nftables", "ipset")
KNOWN_EXPORTERS = ("nftables", "ipset", "rbldnsd", "bind", "postfix")


@dataclass
class ExportResult:
    name: str
    paths: list[str]
    loaded: bool = False
    seconds: float = 0.0
    error: str = ""          # this exporter failed; the others still ran


def _path(section: Any, key: str, default: str, state_dir: str) -> str:
    value = section.get(key, default) if section is not None else default
    if not isinstance(value, str) or not value:
        raise MilterguardError(f"bans exporter path {key!r} must be a non-empty string")
    return value.replace("{state_dir}", state_dir)


def exporter_names(section: Any) -> list[str]:
    """``bans.exporters``: known exporter names, or a ConfigError naming the
    field (checked with the rest of the config, not first at `bans sync`)."""
    names = section.get("exporters") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise section.error("must be a list of exporter names", "exporters")
    for name in names:
        if name not in KNOWN_EXPORTERS:
            raise section.error(f"unknown exporter {name!r} "
                                f"({did_you_mean(name, KNOWN_EXPORTERS)})", "exporters")
    return list(names)


def run_exporters(names: Sequence[str], entries: Sequence[ExportEntry], now: float,
                  settings: Any, state_dir: str, *, load_firewall: bool = True,
                  nft_command: Sequence[str] = ("nft",),
                  run: Callable[..., Any] = subprocess.run) -> list[ExportResult]:
    """Render, write and (for firewalls, unless told not to) load each exporter.

    One exporter failing (nft refusing its batch, an unwritable path) does
    not keep the others from running: its result carries the error and the
    caller reports it (issue 12, finding 9). Unknown names fail before any
    exporter runs.
    """
    for name in names:
        if name not in KNOWN_EXPORTERS:
            raise MilterguardError(f"unknown exporter {name!r} (known: {', '.join(KNOWN_EXPORTERS)})")
    results = []
    for name in names:
        sub = settings.get(name) if settings is not None else None
        sub = sub if isinstance(sub, dict) else {}
        started = time.perf_counter()
        result = ExportResult(name, [])
        try:
            _export_one(name, sub, result, entries, now, state_dir, load_firewall,
                        nft_command, run)
        except (MilterguardError, OSError) as exc:
            result.error = str(exc)
        result.seconds = time.perf_counter() - started
        results.append(result)
    return results


def _export_one(name: str, sub: Any, result: ExportResult, entries: Sequence[ExportEntry],
                now: float, state_dir: str, load_firewall: bool,
                nft_command: Sequence[str], run: Callable[..., Any]) -> None:
    if name == "nftables":
        path = _path(sub, "path", "{state_dir}/bans.nft", state_dir)
        write_atomic(path, render_nftables(entries, now, str(sub.get("table", "milterguard")),
                                           ports=ban_ports(sub)))
        result.paths.append(path)
        if load_firewall:
            _load([*nft_command, "-f", path], run)
            result.loaded = True
    elif name == "ipset":
        path = _path(sub, "path", "{state_dir}/bans.ipset", state_dir)
        write_atomic(path, render_ipset(entries, now, str(sub.get("set4", "milterguard4")),
                                        str(sub.get("set6", "milterguard6"))))
        result.paths.append(path)
        if load_firewall and sub.get("load", False):
            command = list(sub.get("command", ["ipset"]))
            _load([*command, "restore", "-file", path], run)
            result.loaded = True
    elif name == "rbldnsd":
        answer = str(sub.get("answer", "127.0.0.2"))
        test = bool(sub.get("test_entry", True))
        path4 = _path(sub, "path", "{state_dir}/dnsbl.ip4set", state_dir)
        path6 = _path(sub, "path6", "{state_dir}/dnsbl.ip6trie", state_dir)
        write_atomic(path4, render_rbldnsd(entries, now, 4, answer, test))
        write_atomic(path6, render_rbldnsd(entries, now, 6, answer, test))
        result.paths += [path4, path6]
    elif name == "bind":
        path = _path(sub, "path", "{state_dir}/dnsbl.zone", state_dir)
        zone = sub.get("zone")
        if not isinstance(zone, str) or not zone:
            raise MilterguardError("bans.bind.zone must name the DNSBL zone (e.g. dnsbl.example)")
        write_atomic(path, render_bind(entries, now, zone, int(sub.get("ttl", 300)),
                                       str(sub.get("nameserver", "localhost.")),
                                       str(sub.get("hostmaster", "")),
                                       str(sub.get("answer", "127.0.0.2"))))
        result.paths.append(path)
    elif name == "postfix":
        path = _path(sub, "path", "{state_dir}/client_bans.cidr", state_dir)
        write_atomic(path, render_postfix_cidr(entries, now, str(sub.get("reply", "554 5.7.1"))))
        result.paths.append(path)
    reload_command = sub.get("reload_command")
    if reload_command and (load_firewall or name not in FIREWALL_EXPORTERS):
        _load([str(c) for c in reload_command], run)


def _load(command: list[str], run: Callable[..., Any]) -> None:
    try:
        proc = run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise MilterguardError(f"cannot run {' '.join(command)}: {exc}") from None
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise MilterguardError(f"{' '.join(command)} failed (exit {proc.returncode}): "
                               + (err[0] if err else "no output"))
