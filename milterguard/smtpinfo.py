"""What the session knows about the client and the current message.

Plain data handed to checks, so a check needs no milter context to be tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ClientInfo:
    """Per-connection facts, filled in as the SMTP stages arrive."""

    addr: str = ""             # "192.0.2.7", "2001:db8::7"; "" for a local socket
    name: str = ""             # reverse DNS name as the MTA saw it ("unknown" if none)
    port: int = 0
    helo: str = ""
    authenticated: str = ""    # SASL login name ({auth_authen}), "" if none
    macros: dict[str, str] = field(default_factory=dict)


@dataclass
class MessageInfo:
    """Per-message facts; reset at every MAIL FROM."""

    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    queue_id: str = ""
