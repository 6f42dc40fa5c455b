"""The addresses milterguard's own TCP services listen on.

The policy service (``greylist.policyd_listen``, ``policyd --listen``) and
the metrics listener (``metrics.listen``) take the same notation: ``PORT``
(on 127.0.0.1, so nothing is exposed beyond the host unless the admin
writes a host), ``HOST:PORT``, or ``[IPV6]:PORT``. An IPv6 address needs
its brackets: ``::1:9899`` could be an address or an address and a port.
"""

from __future__ import annotations

LOOPBACK = "127.0.0.1"
FORMS = '"PORT", "HOST:PORT" or "[IPV6]:PORT"'


def parse_listen_address(text: str) -> tuple[str, int]:
    """(host, port) from the notation above; ValueError naming the text."""
    text = str(text).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        ok = bool(sep) and ":" in host
    else:
        host, _, port = text.rpartition(":")
        ok = ":" not in host
    host = host or LOOPBACK
    if not ok or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not a listen address: {text!r} (want {FORMS})")
    return host, int(port)
