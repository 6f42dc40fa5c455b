"""DnsQuery: the cache (TTL floor and cap, negative answers, SERVFAIL never
cached), TCP answers, batches of lookups under one deadline, and the second
nameserver."""

from __future__ import annotations

import socket
import threading

from milterguard.gates.dns import NXDOMAIN, OK, UNKNOWN, DnsQuery, ResolverSettings
from tests.dnsfixtures import DnsAuthority


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_query(port: int, clock: FakeClock, **kw) -> DnsQuery:
    settings = ResolverSettings(nameservers=("127.0.0.1",), port=port, timeout=0.5, **kw)
    return DnsQuery(settings, clock=clock)


def test_cache_ttl_floor(tmp_path):
    auth = DnsAuthority({"floor.example.com": {"A": ["192.0.2.1"]}}, ttl=1).start()
    try:
        clock = FakeClock()
        query = make_query(auth.port, clock, min_ttl=60, max_ttl=3600)
        assert query.lookup("floor.example.com", "A").records == ("192.0.2.1",)
        clock.now += 30   # past the record's TTL of 1 s, inside the floor
        assert query.lookup("floor.example.com", "A").status == OK
        assert auth.count("floor.example.com", "A") == 1
        clock.now += 31
        query.lookup("floor.example.com", "A")
        assert auth.count("floor.example.com", "A") == 2
    finally:
        auth.stop()


def test_cache_ttl_cap_and_negative_answers(tmp_path):
    auth = DnsAuthority({"cap.example.com": {"A": ["192.0.2.1"]}}, ttl=86400).start()
    try:
        clock = FakeClock()
        query = make_query(auth.port, clock, min_ttl=10, max_ttl=600)
        query.lookup("cap.example.com", "A")
        assert query.lookup("missing.example.com", "A").status == NXDOMAIN
        clock.now += 500
        query.lookup("cap.example.com", "A")
        query.lookup("missing.example.com", "A")
        assert auth.count("cap.example.com", "A") == 1
        assert auth.count("missing.example.com", "A") == 1
        clock.now += 101
        query.lookup("cap.example.com", "A")
        assert auth.count("cap.example.com", "A") == 2
    finally:
        auth.stop()


def test_servfail_is_unknown_and_not_cached():
    auth = DnsAuthority({}, servfail=["broken.example"]).start()
    try:
        query = make_query(auth.port, FakeClock())
        first = query.lookup("x.broken.example", "A")
        assert (first.status, first.error) == (UNKNOWN, "servfail")
        query.lookup("x.broken.example", "A")
        assert auth.count("x.broken.example", "A") == 2
    finally:
        auth.stop()


def test_cache_can_be_disabled():
    auth = DnsAuthority({"a.example.com": {"A": ["192.0.2.1"]}}).start()
    try:
        query = make_query(auth.port, FakeClock(), cache=False)
        query.lookup("a.example.com", "A")
        query.lookup("a.example.com", "A")
        assert auth.count("a.example.com", "A") == 2
    finally:
        auth.stop()


def test_tcp_answers_from_authority():
    # The authority serves TCP too (large answers fall back to it).
    import dns.message
    import dns.query
    auth = DnsAuthority({"a.example.com": {"A": ["192.0.2.1"]}}).start()
    try:
        reply = dns.query.tcp(dns.message.make_query("a.example.com", "A"), "127.0.0.1",
                              port=auth.port, timeout=2)
        assert reply.answer[0][0].to_text() == "192.0.2.1"
    finally:
        auth.stop()


def test_lookup_many_mixed_batch():
    auth = DnsAuthority({"a.example.com": {"A": ["192.0.2.1", "192.0.2.2"],
                                           "TXT": ['"one" "two"']},
                         "txt.example.com": {"TXT": ['"x"']}},
                        servfail=["broken.example"], silent=["silent.example"]).start()
    try:
        query = make_query(auth.port, FakeClock())
        names = ["a.example.com", "missing.example.com", "txt.example.com",
                 "x.broken.example", "x.silent.example", "x" * 64 + ".example"]
        results = query.lookup_many(names, "A", 0.5)
        assert [r.status for r in results] == [OK, NXDOMAIN, "nodata", UNKNOWN, UNKNOWN, UNKNOWN]
        assert sorted(results[0].records) == ["192.0.2.1", "192.0.2.2"]
        assert results[3].error == "servfail" and results[4].error == "timeout"
        assert query.lookup_many(["a.example.com"], "TXT", 0.5)[0].records == ("onetwo",)
        # Cached now: a second batch does not ask again.
        query.lookup_many(["a.example.com"], "A", 0.5)
        assert auth.count("a.example.com", "A") == 1
    finally:
        auth.stop()


def test_lookup_many_retries_on_second_nameserver():
    # Two nameservers on one port: 127.0.0.1 takes queries and never answers,
    # 127.0.0.2 answers. Both note what reached them, in order.
    auth = DnsAuthority({"a.example.com": {"A": ["192.0.2.1"]}})  # answers by hand below
    second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second.bind(("127.0.0.2", 0))
    port = second.getsockname()[1]
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    first.bind(("127.0.0.1", port))
    received: list[str] = []
    stop = threading.Event()

    def serve(sock: socket.socket, name: str, answers: bool) -> None:
        sock.settimeout(0.05)
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except OSError:
                continue
            received.append(name)
            out = auth.answer(data) if answers else None
            if out:
                sock.sendto(out, peer)

    threads = [threading.Thread(target=serve, args=(first, "first", False), daemon=True),
               threading.Thread(target=serve, args=(second, "second", True), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        query = make_query(port, FakeClock())
        query.resolver.nameservers = ["127.0.0.1", "127.0.0.2"]
        result = query.lookup_many(["a.example.com"], "A", 0.6)[0]
        assert result.records == ("192.0.2.1",)
        # Asked the first server once; when it stayed silent, resent to the second.
        assert received == ["first", "second"]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        second.close()
        first.close()
