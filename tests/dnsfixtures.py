"""Real DNS servers on 127.0.0.1 for the gate tests.

- ``Rbldnsd``: the real rbldnsd daemon serving DNSBL zones from files
  (end-to-end tests only).
- ``DnsAuthority``: a small authoritative server built on dnspython (UDP and
  TCP, in threads) answering A/AAAA/MX/PTR/TXT for test domains, with
  NXDOMAIN, NODATA, SERVFAIL and "never answers" names, DNSBL zones given
  in rbldnsd's ip4set/ip6trie syntax (``ListZones``: what rbldnsd would
  answer, so the unit tier needs no rbldnsd; the same zone texts run through
  the real one in tests/e2e/test_dnsbl_rbldnsd.py), and optionally
  forwarding some zones to another server (so one nameserver, like a site's
  local resolver, serves everything).
- ``BlackHole``: a UDP socket that receives queries and never answers.

Everything binds 127.0.0.1 on free ports and stops cleanly.
"""

from __future__ import annotations

import ipaddress
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Iterable, Iterator

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

if TYPE_CHECKING:
    from milterguard.config import Config

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOCALHOST, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOCALHOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


class Rbldnsd:
    """rbldnsd in the foreground; ``zones`` maps "zone:dataset" to file text."""

    def __init__(self, zones: dict[str, str], ttl: int = 60) -> None:
        self.zones = zones
        self.ttl = ttl
        self.port = 0
        self.dir = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Rbldnsd":
        self.dir = tempfile.mkdtemp(prefix="mg-rbldnsd-")
        os.chmod(self.dir, 0o755)  # rbldnsd reads its files as user rbldns
        specs = []
        for index, (spec, text) in enumerate(self.zones.items()):
            fname = f"data{index}"
            with open(os.path.join(self.dir, fname), "w", encoding="ascii") as handle:
                handle.write(text)
            os.chmod(os.path.join(self.dir, fname), 0o644)
            specs.append(f"{spec}:{fname}")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["rbldnsd", "-n", "-b", f"{LOCALHOST}/{self.port}", "-w", self.dir,
             "-t", str(self.ttl), *specs],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first_zone = next(iter(self.zones)).split(":", 1)[0]
        deadline = time.monotonic() + 10
        probe = dns.message.make_query(f"version.{first_zone}", "A")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"rbldnsd exited: {err}")
            try:
                reply = dns.query.udp(probe, LOCALHOST, port=self.port, timeout=0.2)
                if reply.rcode() != dns.rcode.SERVFAIL:  # SERVFAIL: still loading
                    return self
            except (dns.exception.Timeout, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("rbldnsd did not answer")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""


class ListZones:
    """DNSBL zones as rbldnsd serves them, from the same dataset texts.

    ``zones`` maps "zone:ip4set" or "zone:ip6trie" to rbldnsd's data file
    syntax: a line ``:A:TEXT`` sets the value of the entries after it; an
    entry is ``ADDRESS[/LEN] [:A:TEXT]``. A listed address answers A and TXT
    (``$`` in the text becomes the address); the most specific entry wins;
    anything else in the zone is NXDOMAIN.
    """

    def __init__(self, zones: dict[str, str]) -> None:
        self.entries: dict[str, list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                           str, str]]] = {}
        for spec, text in zones.items():
            zone, dataset = spec.lower().split(":", 1)
            if dataset not in ("ip4set", "ip6trie"):
                raise ValueError(f"{spec}: only ip4set and ip6trie are emulated")
            value = ("127.0.0.2", "")
            listed = self.entries.setdefault(zone, [])
            for line in text.splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith(":") and not line.startswith("::"):  # "::1" is an entry
                    value = _list_value(line)
                    continue
                network, _, own = line.partition(" ")
                answer, txt = _list_value(own.strip()) if own.strip() else value
                listed.append((ipaddress.ip_network(network, strict=False), answer, txt))

    def lookup(self, name: str) -> dict[str, list[str]] | None:
        """The records for ``name`` (A and TXT), or None when it is not listed."""
        zone = _in_zone(name, self.entries)
        if zone is None or name == zone:
            return None
        labels = name[:-len(zone) - 1].split(".")
        try:
            if len(labels) == 4:
                addr: ipaddress.IPv4Address | ipaddress.IPv6Address = \
                    ipaddress.IPv4Address(".".join(reversed(labels)))
            elif len(labels) == 32:
                digits = "".join(reversed(labels))
                addr = ipaddress.IPv6Address(":".join(digits[i:i + 4] for i in range(0, 32, 4)))
            else:
                return None
        except ValueError:
            return None
        matches = [entry for entry in self.entries[zone]
                   if entry[0].version == addr.version and addr in entry[0]]
        if not matches:
            return None
        _, answer, txt = max(matches, key=lambda entry: entry[0].prefixlen)
        records = {"A": [answer]}
        if txt:
            text = txt.replace("$", str(addr)).replace("\\", "\\\\").replace('"', '\\"')
            records["TXT"] = ['"' + text + '"']
        return records


def _list_value(text: str) -> tuple[str, str]:
    """``:127.0.0.3:Listed as dialup`` -> ("127.0.0.3", "Listed as dialup")."""
    _, answer, txt = text.split(":", 2) if text.count(":") >= 2 else (text, text[1:], "")
    return answer or "127.0.0.2", txt


def _in_zone(name: str, zones: Iterable[str]) -> str | None:
    for zone in zones:
        if name == zone or name.endswith("." + zone):
            return zone
    return None


class DnsAuthority:
    """An authoritative server for test names, UDP and TCP on one port.

    ``records``: {"mail.example.com": {"A": ["192.0.2.25"], "MX": [...]}}.
    A name present with other types gives NODATA; an absent name NXDOMAIN.
    ``servfail`` and ``silent`` are names or zones (suffix match);
    ``forward`` maps zones to (host, port) of another server; ``lists`` are
    DNSBL zones in rbldnsd's syntax (see ``ListZones``).
    ``tlds`` exist (an SOA each), as on the Internet: the daemon's resolver
    probes (dns.probe_names) look them up; ``tlds=()`` makes a resolver
    that denies everything, like one without upstream.
    """

    def __init__(self, records: dict[str, dict[str, list[str]]],
                 servfail: Iterable[str] = (), silent: Iterable[str] = (),
                 forward: dict[str, tuple[str, int]] | None = None, ttl: int = 300,
                 delay: float = 0.0, lists: dict[str, str] | None = None,
                 tlds: Iterable[str] = ("com", "net", "org")) -> None:
        self.records = {tld: {"SOA": [f"a.nic.{tld}. hostmaster.nic.{tld}. 1 3600 600 86400 300"]}
                        for tld in tlds}
        self.records.update({k.lower().rstrip("."): v for k, v in records.items()})
        self.lists = ListZones(lists or {})
        self.servfail = [s.lower().rstrip(".") for s in servfail]
        self.silent = [s.lower().rstrip(".") for s in silent]
        self.forward = {k.lower().rstrip("."): v for k, v in (forward or {}).items()}
        self.ttl = ttl
        self.delay = delay      # seconds before each answer: emulates a distant resolver
        self.port = 0
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None

    def start(self) -> "DnsAuthority":
        self.port = free_port()
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind((LOCALHOST, self.port))
        self._udp.settimeout(0.1)
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind((LOCALHOST, self.port))
        self._tcp.listen(16)
        self._tcp.settimeout(0.1)
        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = None

    def count(self, name: str, rdtype: str) -> int:
        with self._lock:
            return self.queries.count((name.lower().rstrip("."), rdtype))

    # -- answering -----------------------------------------------------------

    def answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - not a query: no answer, as a real server
            return None
        if not query.question:
            return None
        question = query.question[0]
        name = question.name.to_text().lower().rstrip(".")
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((name, rdtype))
        if _in_zone(name, self.silent):
            return None
        if self.delay:
            time.sleep(self.delay)
        zone = _in_zone(name, self.forward)
        if zone is not None:
            host, port = self.forward[zone]
            try:
                return dns.query.udp(query, host, port=port, timeout=2).to_wire()
            except Exception:  # noqa: BLE001 - upstream silent or gone: no answer either
                return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if _in_zone(name, self.servfail):
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        data = self.records.get(name)
        if data is None:
            data = self.lists.lookup(name)
        if data is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa(name))
        elif rdtype in data:
            response.answer.append(dns.rrset.from_text_list(
                question.name, self.ttl, dns.rdataclass.IN, rdtype, data[rdtype]))
        else:
            response.authority.append(self._soa(name))
        return response.to_wire()

    def _soa(self, name: str) -> dns.rrset.RRset:
        apex = ".".join(name.split(".")[-2:]) + "."
        return dns.rrset.from_text(apex, self.ttl, "IN", "SOA",
                                   f"ns.{apex} hostmaster.{apex} 1 3600 600 86400 {self.ttl}")

    def _serve_udp(self) -> None:
        assert self._udp is not None
        while not self._stop.is_set():
            try:
                wire, peer = self._udp.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._reply_udp, args=(wire, peer), daemon=True).start()

    def _reply_udp(self, wire: bytes, peer: tuple[str, int]) -> None:
        out = self.answer(wire)
        if out is not None and self._udp is not None and not self._stop.is_set():
            try:
                self._udp.sendto(out, peer)
            except OSError:
                pass

    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    while True:
                        head = _recv_exact(conn, 2)
                        if head is None:
                            break
                        body = _recv_exact(conn, struct.unpack("!H", head)[0])
                        if body is None:
                            break
                        out = self.answer(body)
                        if out is None:
                            break
                        conn.sendall(struct.pack("!H", len(out)) + out)
                except OSError:
                    pass

    def __enter__(self) -> "DnsAuthority":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class BlackHole:
    """A UDP socket on 127.0.0.1 that takes queries and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCALHOST, 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "BlackHole":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def resolver_with_lists(lists: dict[str, str],
                        records: dict[str, dict[str, list[str]]] | None = None
                        ) -> Iterator[DnsAuthority]:
    """A real rbldnsd serving ``lists`` ("zone:dataset" -> file text) behind a
    DnsAuthority that answers ``records`` and forwards the list zones to it,
    as a site's local resolver would."""
    rbl = Rbldnsd(lists).start()
    auth = None
    try:
        zones = {spec.split(":", 1)[0] for spec in lists}
        auth = DnsAuthority(records or {},
                            forward={z: ("127.0.0.1", rbl.port) for z in zones}).start()
        yield auth
    finally:
        if auth is not None:
            auth.stop()
        rbl.stop()


def load_test_config(text: str, directory: str) -> Config:
    """A Config from built-in defaults overlaid by ``text`` (a site YAML file)."""
    from milterguard.config import load_config

    path = os.path.join(directory, "site.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return load_config(path, state_dir=directory)
