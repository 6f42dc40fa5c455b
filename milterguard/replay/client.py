"""The MTA side of one milter connection: negotiation, stages, replies.

``MilterClient`` sends what Postfix sends at each stage (the packet, and
the macros first, even for a stage the milter disabled, so its later
callbacks can still read them) and honours what the milter negotiated:
stages it does not want are not sent, stages it answers without a reply
are not waited for (pymilter's ``Milter.Base`` disables every callback a
milter does not define; an MTA side that waits for those replies hangs),
and a SKIP ends the rest of that stage. What a stage's answer means for
the message is the conversation's business (``replay.conversation``).
"""

from __future__ import annotations

import socket

from milterguard.errors import ProtocolError
from milterguard.milter import protocol as mp

_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class MilterClient:
    """One MTA-side milter connection; stage methods return the decision."""

    def __init__(self, sock: socket.socket, quickack: bool = True) -> None:
        self.sock = sock
        self.buffer = mp.PacketBuffer()
        self.out = bytearray()
        self.neg = mp.Negotiated()
        self.skip_stage = ""
        self.modifications: list[mp.Response] = []
        #: TCP_QUICKACK's option number when it is to be set after each read.
        self.quickack_option = (_TCP_QUICKACK if quickack and sock.family != socket.AF_UNIX
                                else None)

    def _flush(self) -> None:
        if self.out:
            self.sock.sendall(bytes(self.out))
            self.out.clear()

    def _read_packet(self) -> tuple[bytes, bytes]:
        self._flush()
        while True:
            pkt = self.buffer.next_packet()
            if pkt is not None:
                return pkt
            data = self.sock.recv(65536)
            if self.quickack_option is not None:
                # libmilter writes each eom modification and the final reply
                # separately; with Nagle on its side and delayed ACK on ours
                # every message with an added header stalls ~40 ms on TCP.
                self.sock.setsockopt(socket.IPPROTO_TCP, self.quickack_option, 1)
            if not data:
                raise ProtocolError("milter closed the connection")
            self.buffer.feed(data)

    def negotiate(self) -> mp.Negotiated:
        self.out += mp.encode_optneg()
        command, data = self._read_packet()
        if command != mp.C_OPTNEG:
            raise ProtocolError(f"expected OPTNEG reply, got {command!r}")
        self.neg = mp.Negotiated.from_reply(mp.decode_optneg(data))
        return self.neg

    def event(self, stage: str, pkt: bytes, macros: dict[str, str] | None = None
              ) -> mp.Response | None:
        """Send one stage; the milter's decision, or None if none is due."""
        if self.skip_stage:
            if stage == self.skip_stage:
                return None      # milter said SKIP for the rest of this stage
            self.skip_stage = ""
        # Like Postfix, send the macros even for a stage the milter disabled,
        # so later callbacks can still read them.
        if macros:
            wanted = self.neg.filter_macros(stage, macros)
            if wanted:
                self.out += mp.encode_macros(mp.STAGE_INFO[stage].command, wanted)
        if not self.neg.sends(stage):
            return None
        self.out += pkt
        if not self.neg.expects_reply(stage):
            return None
        while True:
            command, data = self._read_packet()
            resp = mp.decode_response(command, data)
            if resp.kind == mp.R_PROGRESS:
                continue
            if resp.is_decision:
                if resp.kind == mp.R_SKIP:
                    self.skip_stage = stage
                return resp
            if stage != "eom":
                raise ProtocolError(f"response {command!r} not allowed at {stage}")
            self.modifications.append(resp)

    def send_only(self, command: bytes) -> None:
        """Abort and quit: no reply is due."""
        self.out += mp.encode_simple(command)
        self._flush()
