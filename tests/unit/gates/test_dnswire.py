"""The fast path's DNS packets, checked against dnspython as the reference.

dnspython builds the answers (with name compression, several strings per
TXT record, SOA in the authority section) and reads our queries, so these
tests say that the hand-written codec agrees with a full implementation.
"""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from milterguard.gates.dnswire import (FAST_TYPES, WireAnswer, parse_response, query_packet,
                                       unique_ids)

NAME = "7.2.0.192.bl.test"
A, TXT = FAST_TYPES["A"], FAST_TYPES["TXT"]


def answer(name=NAME, rdtype="A", records=(), ttl=300, rcode=dns.rcode.NOERROR,
           soa=None, qid=4242) -> bytes:
    query = dns.message.make_query(name, rdtype)
    query.id = qid
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if records:
        response.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", rdtype, *records))
    if soa is not None:
        soa_ttl, minimum = soa
        response.authority.append(dns.rrset.from_text(
            "bl.test.", soa_ttl, "IN", "SOA",
            f"ns.bl.test. hostmaster.bl.test. 1 3600 600 86400 {minimum}"))
    return response.to_wire()


def test_query_packet_is_what_dnspython_reads():
    packet = query_packet(0xBEEF, NAME + ".", A)
    msg = dns.message.from_wire(packet)
    assert msg.id == 0xBEEF and msg.flags & dns.flags.RD and not msg.flags & dns.flags.QR
    assert [(str(q.name), q.rdtype) for q in msg.question] == [(NAME + ".", A)]


@pytest.mark.parametrize("name", ["a..test", "x" * 64 + ".test", "bücher.test",
                                  ".".join(["y" * 60] * 9)])
def test_query_packet_refuses_names_the_wire_cannot_carry(name):
    with pytest.raises(ValueError):
        query_packet(1, name, A)


def test_a_answer_records_and_smallest_ttl():
    got = parse_response(answer(records=("127.0.0.2", "127.0.0.4"), ttl=120), NAME, A)
    assert got is not None and (got.rcode, got.ttl, got.negative_ttl, got.error) == (0, 120, 0, "")
    assert sorted(got.records) == ["127.0.0.2", "127.0.0.4"]   # dnspython's order is its own


def test_txt_strings_are_joined_and_case_of_the_name_does_not_matter():
    wire = answer(rdtype="TXT", records=('"Listed: see " "https://bl.test/q?ip=192.0.2.7"',))
    got = parse_response(wire, NAME.upper() + ".", TXT)
    assert got is not None and got.records == ("Listed: see https://bl.test/q?ip=192.0.2.7",)


def test_nxdomain_and_nodata_carry_the_negative_ttl():
    nx = parse_response(answer(rcode=dns.rcode.NXDOMAIN, soa=(900, 60)), NAME, A)
    assert nx == WireAnswer(rcode=3, negative_ttl=60)
    nodata = parse_response(answer(soa=(30, 600)), NAME, A)
    assert nodata == WireAnswer(rcode=0, negative_ttl=30)


def test_servfail_is_reported_with_its_rcode():
    assert parse_response(answer(rcode=dns.rcode.SERVFAIL), NAME, A).rcode == 2


def test_records_of_another_type_are_not_answers():
    wire = answer(rdtype="TXT", records=('"hello"',))
    # Same name, but we asked for A: the question does not match.
    assert parse_response(wire, NAME, A) is None


def test_packets_that_answer_something_else_are_ignored():
    assert parse_response(answer(records=("127.0.0.2",)), "8.2.0.192.bl.test", A) is None
    query = query_packet(4242, NAME, A)
    assert parse_response(query, NAME, A) is None          # a query, not a response


def test_truncated_answer_says_so():
    wire = bytearray(answer(records=("127.0.0.2",)))
    flags = struct.unpack_from("!H", wire, 2)[0] | 0x0200
    struct.pack_into("!H", wire, 2, flags)
    assert parse_response(bytes(wire), NAME, A) == WireAnswer(error="truncated")


def test_broken_packets_are_malformed_never_raised():
    good = answer(records=("127.0.0.2",))
    assert parse_response(good[:-2], NAME, A) == WireAnswer(error="malformed")   # short rdata
    assert parse_response(good[:5], NAME, A) == WireAnswer(error="malformed")    # short header
    # An answer whose owner name points at itself: a compression loop.
    loop = bytearray(good)
    at = len(query_packet(4242, NAME, A))
    loop[at:at + 2] = bytes([0xC0 | (at >> 8), at & 0xFF])
    assert parse_response(bytes(loop), NAME, A) == WireAnswer(error="malformed")
    # An A record of five bytes.
    bad_a = bytearray(good)
    struct.pack_into("!H", bad_a, len(good) - 6, 5)
    assert parse_response(bytes(bad_a) + b"\0", NAME, A) == WireAnswer(error="malformed")


def test_unique_ids_are_distinct_16_bit_values():
    ids = unique_ids(500)
    assert len(set(ids)) == 500 and all(0 <= i < 65536 for i in ids)
