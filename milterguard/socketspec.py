"""Milter socket specs, in the two syntaxes an admin meets, parsed in one place.

The daemon takes libmilter's syntax (``unix:/path``, ``local:/path``,
``inet:PORT@HOST``, ``inet6:PORT@HOST``); Postfix's ``smtpd_milters`` writes
the same sockets as ``unix:/path`` and ``inet:HOST:PORT`` (``inet:[::1]:PORT``
for IPv6). Admins copy one into the place of the other, so every command
accepts both and says clearly what is wrong with a spec that is neither.

``SocketSpec`` holds what a spec names; ``libmilter()`` and ``postfix()``
write it back in either syntax (the daemon hands libmilter its own syntax,
the tests write main.cf in Postfix's), and ``connect()`` opens the MTA side
of it (replay, tests).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from milterguard.errors import MilterguardError

_UNIX_KINDS = ("unix", "local")
_INET_KINDS = ("inet", "inet6")


@dataclass(frozen=True)
class SocketSpec:
    """One stream socket: a unix path, or a TCP host and port.

    ``host`` is empty when the spec names none (libmilter's ``inet:PORT``):
    a listener then binds every address, a client connects to loopback.
    """

    family: socket.AddressFamily
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def is_unix(self) -> bool:
        return self.family == socket.AF_UNIX

    def connect_address(self) -> str | tuple[str, int]:
        """What socket.connect takes; loopback when no host was named."""
        if self.is_unix:
            return self.path
        return self.host or ("::1" if self.family == socket.AF_INET6 else "127.0.0.1"), self.port

    def libmilter(self) -> str:
        """``unix:/path``, ``inet:PORT@HOST`` or ``inet6:PORT@HOST``."""
        if self.is_unix:
            return f"unix:{self.path}"
        kind = "inet6" if self.family == socket.AF_INET6 else "inet"
        return f"{kind}:{self.port}@{self.host}" if self.host else f"{kind}:{self.port}"

    def postfix(self) -> str:
        """``unix:/path`` or ``inet:HOST:PORT`` (an IPv6 host in brackets)."""
        if self.is_unix:
            return f"unix:{self.path}"
        host = self.connect_address()[0]
        return f"inet:[{host}]:{self.port}" if ":" in host else f"inet:{host}:{self.port}"


def parse_socket_spec(spec: str) -> SocketSpec:
    """A SocketSpec from libmilter or Postfix syntax; MilterguardError naming
    the spec and what is wrong with it otherwise.

    ``inet:`` is libmilter's when what follows is ``PORT@HOST`` or a bare
    port, Postfix's when it is ``HOST:PORT``. A bare ``/path`` is a unix
    socket, as libmilter reads it.
    """
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if not sep:
        if text.startswith("/"):
            return SocketSpec(socket.AF_UNIX, path=text)
        raise MilterguardError(f"bad socket spec {spec!r} (want unix:/path, inet:PORT@HOST "
                               "or inet:HOST:PORT)")
    kind = kind.lower()
    if kind in _UNIX_KINDS:
        if not rest:
            raise MilterguardError(f"bad socket spec {spec!r}: no path")
        return SocketSpec(socket.AF_UNIX, path=rest)
    if kind not in _INET_KINDS:
        raise MilterguardError(f"bad socket spec {spec!r}: unknown kind {kind!r} "
                               "(want unix, local, inet or inet6)")
    if "@" in rest or rest.isdigit():
        port_text, _, host = rest.partition("@")        # libmilter: PORT@HOST
    else:
        host, _, port_text = rest.rpartition(":")       # Postfix: HOST:PORT
        if not host:
            raise MilterguardError(f"bad socket spec {spec!r}: want {kind}:PORT@HOST "
                                   "or inet:HOST:PORT")
    host = host.strip().strip("[]")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise MilterguardError(f"bad socket spec {spec!r}: bad port {port_text!r}")
    family = socket.AF_INET6 if kind == "inet6" or ":" in host else socket.AF_INET
    return SocketSpec(family, host=host, port=int(port_text))


def connect(spec: str | SocketSpec, timeout: float) -> socket.socket:
    """A connected stream socket to ``spec`` (the MTA's side), with
    ``timeout`` on every operation; TCP with Nagle off.

    A host name is resolved and the first address of the spec's family
    taken, as libmilter does.
    """
    target = parse_socket_spec(spec) if isinstance(spec, str) else spec
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        address: Any = target.connect_address()
        if not target.is_unix:
            host, port = address
            infos = socket.getaddrinfo(host, port, target.family, socket.SOCK_STREAM)
            address = infos[0][4]
            # The client batches its writes until a reply is due, so Nagle
            # only adds delay (and a delayed-ACK stall on the other side).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock
