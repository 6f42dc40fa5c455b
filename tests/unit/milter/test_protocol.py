"""The milter wire codec: framing, round trips, negotiated flags."""

from __future__ import annotations

import struct

import pytest

from milterguard.milter import protocol as mp
from milterguard.errors import ProtocolError


def _unframe(pkt: bytes) -> tuple[bytes, bytes]:
    buf = mp.PacketBuffer()
    buf.feed(pkt)
    got = buf.next_packet()
    assert got is not None
    assert buf.next_packet() is None
    return got


def test_packet_length_counts_the_command_byte():
    pkt = mp.packet(b"H", b"abc\0")
    assert pkt[:4] == struct.pack(">I", 5)
    assert pkt[4:5] == b"H"
    assert pkt[5:] == b"abc\0"


def test_buffer_reassembles_packets_split_anywhere():
    stream = mp.encode_helo("mail.example.com") + mp.encode_simple(mp.C_EOH) + \
        mp.encode_body(b"x" * 1000)
    buf = mp.PacketBuffer()
    out = []
    for i in range(len(stream)):
        buf.feed(stream[i:i + 1])
        while (pkt := buf.next_packet()) is not None:
            out.append(pkt)
    assert [c for c, _ in out] == [b"H", b"N", b"B"]
    assert out[2][1] == b"x" * 1000


def test_buffer_rejects_zero_length():
    buf = mp.PacketBuffer()
    buf.feed(b"\0\0\0\0")
    with pytest.raises(ProtocolError):
        buf.next_packet()


def test_optneg_round_trip():
    cmd = mp.decode_command(*_unframe(mp.encode_optneg(6, 0x1FF, 0x1FFFFF)))
    assert cmd.optneg == (6, 0x1FF, 0x1FFFFF)


@pytest.mark.parametrize("family,port,addr", [
    (mp.FAMILY_INET, 25, "192.0.2.7"),
    (mp.FAMILY_INET6, 54321, "2001:db8::7"),
])
def test_connect_round_trip(family, port, addr):
    cmd = mp.decode_command(*_unframe(mp.encode_connect("mail.example.com", family,
                                                        port, addr)))
    assert cmd.command == mp.C_CONNECT
    assert cmd.family == family and cmd.port == port
    assert cmd.args == [b"mail.example.com", addr.encode()]


def test_connect_unknown_family_has_no_port_or_address():
    cmd, data = _unframe(mp.encode_connect("host.example", mp.FAMILY_UNKNOWN))
    assert data == b"host.example\0U"


def test_macros_round_trip_with_brace_names():
    pkt = mp.encode_macros(mp.C_MAIL, {"i": "ABC123", "mail_addr": "a@example.com",
                                       "{auth_authen}": "alice"})
    cmd = mp.decode_command(*_unframe(pkt))
    assert cmd.args == [b"M"]
    assert cmd.macros == {"i": "ABC123", "{mail_addr}": "a@example.com",
                          "{auth_authen}": "alice"}


def test_mail_rcpt_header_round_trip():
    assert mp.decode_command(*_unframe(mp.encode_mail(["<a@example.com>", "SIZE=10"]))).args \
        == [b"<a@example.com>", b"SIZE=10"]
    assert mp.decode_command(*_unframe(mp.encode_rcpt(["<b@example.net>"]))).args \
        == [b"<b@example.net>"]
    assert mp.decode_command(*_unframe(mp.encode_header(b"Subject", b"hi\n there"))).args \
        == [b"Subject", b"hi\n there"]


def test_body_chunk_limit():
    assert mp.decode_command(*_unframe(mp.encode_body(b"a" * 65535))).body == b"a" * 65535
    with pytest.raises(ValueError):
        mp.encode_body(b"a" * 65536)


def test_nul_inside_string_is_refused():
    with pytest.raises(ValueError):
        mp.encode_helo("bad\0name")


@pytest.mark.parametrize("resp", [
    mp.Response(mp.R_CONTINUE),
    mp.Response(mp.R_ACCEPT),
    mp.Response(mp.R_SKIP),
    mp.Response(mp.R_REPLYCODE, text="550 5.7.1 Message rejected [rule-a]"),
    mp.Response(mp.R_QUARANTINE, text="held"),
    mp.Response(mp.R_ADDHEADER, name="X-Milterguard", value="rule-a, rule-b"),
    mp.Response(mp.R_INSHEADER, index=0, name="X-Top", value="v"),
    mp.Response(mp.R_CHGHEADER, index=2, name="Subject", value=""),
    mp.Response(mp.R_ADDRCPT_PAR, args=["<c@example.org>", "NOTIFY=NEVER"]),
    mp.Response(mp.R_CHGFROM, args=["<d@example.org>"]),
    mp.Response(mp.R_REPLBODY, body=b"new body\r\n"),
])
def test_response_round_trip(resp):
    assert mp.decode_response(*_unframe(mp.encode_response(resp))) == resp


def test_unknown_response_raises():
    with pytest.raises(ProtocolError):
        mp.decode_response(b"Z", b"")


def test_optneg_reply_with_symbol_lists():
    reply = mp.OptNeg(6, mp.F_ADDHDRS, mp.P_NOHELO,
                      {mp.M_CONNECT: ["j", "client_addr"], mp.M_EOM: ["i"]})
    cmd, data = _unframe(mp.encode_optneg_reply(reply))
    assert cmd == mp.C_OPTNEG
    assert mp.decode_optneg(data) == reply


def test_negotiated_flags_decide_what_is_sent_and_awaited():
    neg = mp.Negotiated.from_reply(mp.OptNeg(
        6, mp.F_ADDHDRS,
        mp.P_NOHELO | mp.P_NOBODY | mp.P_NR_CONN | mp.P_NR_HDR | mp.P_HDR_LEADSPC))
    assert not neg.sends("helo") and not neg.expects_reply("helo")
    assert not neg.sends("body")
    assert neg.sends("connect") and not neg.expects_reply("connect")
    assert neg.sends("header") and not neg.expects_reply("header")
    assert neg.sends("mail") and neg.expects_reply("mail")
    assert neg.expects_reply("eom")
    assert neg.header_leading_space
    assert not neg.skip_allowed


def test_every_stage_has_distinct_flags():
    skips = [s.skip_flag for s in mp.STAGE_INFO.values() if s.skip_flag]
    noreplies = [s.noreply_flag for s in mp.STAGE_INFO.values() if s.noreply_flag]
    assert len(set(skips)) == len(skips) and len(set(noreplies)) == len(noreplies)
    assert not set(skips) & set(noreplies)


def test_negotiation_refuses_newer_version_and_unoffered_actions():
    with pytest.raises(ProtocolError):
        mp.Negotiated.from_reply(mp.OptNeg(7, 0, 0))
    with pytest.raises(ProtocolError):
        mp.Negotiated.from_reply(mp.OptNeg(6, 0x400, 0))


def test_symbol_list_filters_macros():
    neg = mp.Negotiated(symlists={mp.M_CONNECT: ["client_addr"]})
    macros = {"j": "mx.example.net", "{client_addr}": "192.0.2.7"}
    assert neg.filter_macros("connect", macros) == {"{client_addr}": "192.0.2.7"}
    assert neg.filter_macros("helo", {"{tls_version}": "TLSv1.3"}) == \
        {"{tls_version}": "TLSv1.3"}
