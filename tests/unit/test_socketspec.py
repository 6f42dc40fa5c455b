"""Socket specs: libmilter's and Postfix's syntax, written back, connected to."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from milterguard.errors import MilterguardError
from milterguard.socketspec import SocketSpec, connect, parse_socket_spec

AF_UNIX, AF_INET, AF_INET6 = socket.AF_UNIX, socket.AF_INET, socket.AF_INET6


@pytest.mark.parametrize("spec, want", [
    # libmilter
    ("unix:/run/m.sock", SocketSpec(AF_UNIX, path="/run/m.sock")),
    ("local:/run/m.sock", SocketSpec(AF_UNIX, path="/run/m.sock")),
    ("/run/m.sock", SocketSpec(AF_UNIX, path="/run/m.sock")),
    ("inet:8891@127.0.0.1", SocketSpec(AF_INET, host="127.0.0.1", port=8891)),
    ("inet:8891", SocketSpec(AF_INET, port=8891)),
    ("inet:8891@localhost", SocketSpec(AF_INET, host="localhost", port=8891)),
    ("inet6:8891@[::1]", SocketSpec(AF_INET6, host="::1", port=8891)),
    ("inet6:8891@::1", SocketSpec(AF_INET6, host="::1", port=8891)),
    ("INET:8891@127.0.0.1", SocketSpec(AF_INET, host="127.0.0.1", port=8891)),
    # Postfix
    ("inet:127.0.0.1:8891", SocketSpec(AF_INET, host="127.0.0.1", port=8891)),
    ("inet:localhost:8891", SocketSpec(AF_INET, host="localhost", port=8891)),
    ("inet:[::1]:8891", SocketSpec(AF_INET6, host="::1", port=8891)),
])
def test_both_syntaxes_parse(spec: str, want: SocketSpec) -> None:
    assert parse_socket_spec(spec) == want


@pytest.mark.parametrize("spec, why", [
    ("tcp:1@x", "unknown kind"),
    ("inet:port@127.0.0.1", "bad port"),
    ("unix:", "no path"),
    ("inet:0@h", "bad port"),
    ("inet:70000@h", "bad port"),
    ("inet:127.0.0.1:http", "bad port"),
    ("inet::8891", "want inet:PORT@HOST"),
    ("m.sock", "want unix:/path"),
])
def test_bad_specs_say_what_is_wrong(spec: str, why: str) -> None:
    with pytest.raises(MilterguardError) as err:
        parse_socket_spec(spec)
    assert repr(spec) in str(err.value) and why in str(err.value)


@pytest.mark.parametrize("spec, libmilter, postfix", [
    ("unix:/run/m.sock", "unix:/run/m.sock", "unix:/run/m.sock"),
    ("local:/run/m.sock", "unix:/run/m.sock", "unix:/run/m.sock"),
    ("inet:8891@127.0.0.1", "inet:8891@127.0.0.1", "inet:127.0.0.1:8891"),
    ("inet:127.0.0.1:8891", "inet:8891@127.0.0.1", "inet:127.0.0.1:8891"),
    ("inet6:8891@[::1]", "inet6:8891@::1", "inet:[::1]:8891"),
    ("inet:[::1]:8891", "inet6:8891@::1", "inet:[::1]:8891"),
    # No host: a listener binds every address; Postfix connects to loopback.
    ("inet:8891", "inet:8891", "inet:127.0.0.1:8891"),
])
def test_written_back_in_either_syntax(spec: str, libmilter: str, postfix: str) -> None:
    parsed = parse_socket_spec(spec)
    assert parsed.libmilter() == libmilter
    assert parsed.postfix() == postfix
    assert parse_socket_spec(parsed.libmilter()) == parsed
    assert parse_socket_spec(parsed.postfix()).connect_address() == parsed.connect_address()


def _accept_one(server: socket.socket, seen: list[bytes]) -> None:
    conn, _ = server.accept()
    with conn:
        seen.append(conn.recv(16))


@pytest.mark.parametrize("kind", ["unix", "inet", "inet6", "postfix-inet"])
def test_connect_reaches_a_real_listener(kind: str, tmp_path) -> None:
    if kind == "unix":
        server = socket.socket(AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(tmp_path / "s.sock"))
        spec = f"unix:{tmp_path}/s.sock"
    else:
        family = AF_INET6 if kind == "inet6" else AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind(("::1" if kind == "inet6" else "127.0.0.1", 0))
        port = server.getsockname()[1]
        spec = {"inet": f"inet:{port}@127.0.0.1", "inet6": f"inet6:{port}@[::1]",
                "postfix-inet": f"inet:127.0.0.1:{port}"}[kind]
    server.listen(1)
    seen: list[bytes] = []
    thread = threading.Thread(target=_accept_one, args=(server, seen))
    thread.start()
    try:
        with connect(spec, 5.0) as sock:
            if kind != "unix":
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            sock.sendall(b"hello")
        thread.join(5.0)
    finally:
        server.close()
    assert seen == [b"hello"]


def test_connect_to_nothing_is_an_oserror(tmp_path) -> None:
    with pytest.raises(OSError):
        connect(f"unix:{tmp_path}/nobody.sock", 1.0)


def test_run_refuses_a_bad_socket_naming_where_it_was_written(tmp_path) -> None:
    cfg = tmp_path / "mg.yaml"
    cfg.write_text("rules: {shipped: false}\nsocket: tcp:8894@127.0.0.1\n")
    res = subprocess.run([sys.executable, "-m", "milterguard", "run", "-c", str(cfg),
                          "--state-dir", str(tmp_path / "state")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert f"{cfg}:2: field socket: bad socket spec 'tcp:8894@127.0.0.1'" in res.stderr
    # A bad --socket is refused too (over a config whose own socket is
    # fine: a bad socket: key is a config error whatever --socket says,
    # as `check` reports it).
    cfg.write_text("rules: {shipped: false}\n")
    res = subprocess.run([sys.executable, "-m", "milterguard", "run", "-c", str(cfg),
                          "--state-dir", str(tmp_path / "state"), "--socket", "inet:x@y"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "bad socket spec 'inet:x@y': bad port" in res.stderr
    assert "Traceback" not in res.stderr
