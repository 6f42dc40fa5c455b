"""The pymilter adapter's pieces that can be tested without libmilter running."""

from __future__ import annotations

import socket

from milterguard.milter_adapter import _client_address, _nodelay_on_listeners


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
