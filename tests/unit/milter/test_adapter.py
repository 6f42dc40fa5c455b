"""The pymilter adapter's pieces that can be tested without libmilter running."""

from __future__ import annotations

import socket

from milterguard.milter.adapter import _client_address, _nodelay_on_listeners


def test_nodelay_is_set_on_listening_tcp_sockets_only():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert _nodelay_on_listeners() >= 1
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert plain.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        # and accepted connections inherit it (Linux), which is what matters
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client.close()
        conn.close()
    finally:
        listener.close()
        plain.close()


def test_client_address_forms():
    assert _client_address(socket.AF_INET, ("192.0.2.1", 2525)) == ("192.0.2.1", 2525)
    assert _client_address(socket.AF_INET6, ("2001:db8::1", 25, 0, 0)) == ("2001:db8::1", 25)
    assert _client_address(socket.AF_UNIX, None) == ("", 0)


class _FakeContext:
    """What Milter.Base reaches through self._ctx."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, str, str]] = []

    def setreply(self, code, xcode, *text):
        self.replies.append((code, xcode, " ".join(text)))

    def getsymval(self, name):
        return None


class _Policy:
    on_internal_error = "tempfail"


class _Engine:
    policy = _Policy()
    metrics = None


def _milter(protocol: int):
    import Milter

    from milterguard.milter.adapter import MilterguardMilter

    milter = MilterguardMilter.__new__(MilterguardMilter)
    milter.engine = _Engine()
    milter._protocol = protocol
    milter._silent_error = False
    milter._ctx = _FakeContext()
    return milter, Milter


class _BrokenHeaders:
    """A session whose header stage fails; it records what else is called."""

    client = type("C", (), {"addr": "192.0.2.1"})()

    def __init__(self) -> None:
        self.calls: list[str] = []

    def header(self, name, value):
        raise RuntimeError("boom")

    def eoh(self, macros):
        from milterguard.verdict import Verdict

        self.calls.append("eoh")
        return Verdict(stage="eoh")

    def abort(self):
        self.calls.append("abort")


def test_no_reply_header_is_not_answered_and_its_error_surfaces_at_end_of_headers():
    milter, Milter = _milter(protocol=0x80)   # SMFIP_NR_HDR
    milter.session = _BrokenHeaders()
    assert milter.header("Subject", "x") == Milter.NOREPLY
    assert milter.eoh() == Milter.TEMPFAIL
    assert milter.session.calls == []   # the header error answered first
    assert milter._ctx.replies[0][0] == "451"
    assert "boom" not in milter._ctx.replies[0][2]


def test_answered_header_keeps_the_normal_error_path():
    milter, Milter = _milter(protocol=0)
    milter.session = _BrokenHeaders()
    assert milter.header("Subject", "x") == Milter.TEMPFAIL
    assert milter._silent_error is False


def test_abort_forgets_a_silent_error():
    milter, Milter = _milter(protocol=0x80)
    milter.session = _BrokenHeaders()
    milter.header("Subject", "x")
    assert milter._silent_error
    milter.abort()
    assert not milter._silent_error
    assert milter.eoh() == Milter.CONTINUE and milter.session.calls == ["abort", "eoh"]


def test_unanswered_connect_holds_a_final_verdict_for_the_first_rcpt():
    from milterguard.verdict import Action, Reply, Verdict

    milter, Milter = _milter(protocol=0x1000)   # SMFIP_NR_CONN
    held = []
    refusal = Verdict(Action.REJECT, Reply("554", "5.7.1", "no"), "connect")

    class Session:
        client = type("C", (), {"addr": "192.0.2.1"})()

        def connect(self, name, addr, port, macros):
            return refusal

        def hold(self, verdict):
            held.append(verdict)

    milter.session = Session()
    assert milter.connect("client.example.com", 2, ("192.0.2.1", 25)) == Milter.NOREPLY
    assert held == [refusal]
    assert milter._ctx.replies == []
