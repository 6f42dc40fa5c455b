"""The unit tier's promise, enforced: no external programs that need root
or a mail system, and no network beyond loopback.

A unit test that starts Postfix, rbldnsd, nft, ip, chromium, PostgreSQL
or the like, or sends to an address other than 127.0.0.0/8 or ::1, fails
with a message saying so: it belongs in tests/e2e/ (or, for the PostgreSQL
half of the ``database`` fixture, carries the ``e2e`` marker that
tests/conftest.py sets). The check is a Python audit hook (it sees every
subprocess and socket connect/sendto in this process, also in libraries),
active only while a test without the ``e2e`` marker runs, so the e2e tier
in the same pytest run is not affected.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any, Iterator

import pytest

#: Programs that need root, a mail system, a browser or the firewall.
E2E_PROGRAMS = frozenset({
    "postfix", "postconf", "postmap", "postsuper", "postqueue", "sendmail",
    "smtp-source", "smtp-sink", "rbldnsd", "nft", "ip", "ipset", "iptables",
    "chromium", "chromium-browser", "unshare", "nsenter", "sudo", "runuser",
    "initdb", "pg_ctl", "postgres", "pg_ctlcluster",
})

_active = False


def _refuse(what: str) -> None:
    raise RuntimeError(f"unit tier: {what}; tests that need it belong in tests/e2e/")


def _loopback(address: Any) -> bool:
    if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
        return True            # AF_UNIX paths, netlink and the like stay on this machine
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False           # a host name: would need the resolver


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _active:
        return
    if event == "subprocess.Popen":
        executable, argv = args[0], args[1]
        if executable is None:
            executable = argv if isinstance(argv, (str, bytes)) else (argv[0] if argv else "")
        name = os.path.basename(os.fsdecode(executable)).split()[0] if executable else ""
        if name in E2E_PROGRAMS:
            _refuse(f"runs {name}")
    elif event in ("socket.connect", "socket.sendto") and not _loopback(args[1]):
        _refuse(f"{event.split('.')[1]} to {args[1]!r}")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def unit_tier_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    global _active
    _active = request.node.get_closest_marker("e2e") is None
    try:
        yield
    finally:
        _active = False
