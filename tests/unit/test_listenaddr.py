"""Listen addresses of the policy service and the metrics listener."""

from __future__ import annotations

import pytest

from milterguard.listenaddr import parse_listen_address


@pytest.mark.parametrize("text, expected", [
    ("9899", ("127.0.0.1", 9899)), ("127.0.0.2:9000", ("127.0.0.2", 9000)),
    ("[::1]:9899", ("::1", 9899)), (":9899", ("127.0.0.1", 9899)),
    ("mx.example.net:25", ("mx.example.net", 25)), ("[2001:db8::1]:0", ("2001:db8::1", 0)),
])
def test_listen_addresses(text, expected):
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["", "::1:9899", "[::1]9899", "[127.0.0.1]:25", "host:",
                                  "host:port", "70000", "-1", "[::1]:"])
def test_not_listen_addresses(text):
    with pytest.raises(ValueError, match="not a listen address"):
        parse_listen_address(text)
