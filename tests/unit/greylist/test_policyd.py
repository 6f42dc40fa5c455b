"""The policy delegation protocol over real TCP on 127.0.0.1."""

from __future__ import annotations

import io
import socket
import threading

import pytest

from milterguard.errors import ConfigError
from milterguard.greylist.settings import GreylistSettings
from milterguard.greylist.policyd import (MAX_LINE, PolicyRequest, PolicyServer, policy_action,
                                          read_request, serve)
from milterguard.greylist.triplets import Greylist
from milterguard.yamlsrc import load_yaml_text


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def request_text(client="192.0.2.10", sender="news@example.org",
                 rcpt="alice@example.com", state="RCPT", **extra) -> str:
    attrs = {"request": "smtpd_access_policy", "protocol_state": state,
             "protocol_name": "ESMTP", "client_address": client,
             "client_name": "mail.example.org", "helo_name": "mail.example.org",
             "sender": sender, "recipient": rcpt, "queue_id": "", "size": "0"}
    attrs.update(extra)
    return "".join(f"{k}={v}\n" for k, v in attrs.items()) + "\n"


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.rfile = self.sock.makefile("rb")

    def ask(self, text: str) -> str:
        self.sock.sendall(text.encode())
        return self.read_answer()

    def read_answer(self) -> str:
        lines = []
        while True:
            line = self.rfile.readline().decode()
            assert line, "server closed the connection"
            if line == "\n":
                assert len(lines) == 1, lines
                return lines[0].rstrip("\n")
            lines.append(line)

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def server(tmp_path, clock):
    greylist = Greylist(GreylistSettings(delay=300), str(tmp_path / "mg.db"), clock)
    srv = PolicyServer(("127.0.0.1", 0), greylist, idle_timeout=30)
    stop = threading.Event()
    runner = threading.Thread(target=serve, args=(srv, stop), daemon=True)
    runner.start()
    try:
        yield srv
    finally:
        stop.set()
        runner.join(10)
        greylist.close()
    assert not runner.is_alive()


def test_defer_then_dunno_after_delay_on_one_connection(server, clock):
    client = Client(server.server_address[1])
    try:
        assert client.ask(request_text()) == (
            "action=DEFER_IF_PERMIT 4.7.1 Greylisted, please retry in 300 seconds")
        clock.now += 100
        assert client.ask(request_text()) == (
            "action=DEFER_IF_PERMIT 4.7.1 Greylisted, please retry in 200 seconds")
        clock.now += 201
        assert client.ask(request_text()) == "action=DUNNO"
        assert client.ask(request_text()) == "action=DUNNO"
    finally:
        client.close()
    assert server.counts == {"new": 1, "early": 1, "passed": 1, "known": 1}


def test_greylists_even_when_milter_greylisting_is_disabled(server):
    """Running policyd is the opt-in; `enabled` is about the milter."""
    assert server.greylist.settings.enabled is False
    client = Client(server.server_address[1])
    try:
        assert client.ask(request_text()).startswith("action=DEFER_IF_PERMIT")
    finally:
        client.close()


def test_pipelined_requests_get_answers_in_order(server, clock):
    client = Client(server.server_address[1])
    try:
        client.sock.sendall((request_text(rcpt="a@example.com")
                             + request_text(state="DATA")
                             + request_text(rcpt="a@example.com")).encode())
        answers = [client.read_answer() for _ in range(3)]
    finally:
        client.close()
    assert answers[0].endswith("retry in 300 seconds")
    assert answers[1] == "action=DUNNO"          # not at RCPT: not ours to decide
    assert answers[2].startswith("action=DEFER_IF_PERMIT 4.7.1")


def test_malformed_request_gets_dunno_and_connection_survives(server, caplog):
    client = Client(server.server_address[1])
    other = Client(server.server_address[1])
    try:
        assert client.ask("request=smtpd_access_policy\nthis line has no equals sign\n"
                          "client_address=192.0.2.10\nrecipient=a@example.com\n\n") \
            == "action=DUNNO"
        assert client.ask("request=smtpd_access_policy\nprotocol_state=RCPT\n\n") \
            == "action=DUNNO"                     # no client or recipient
        assert client.ask("request=something_else\nfoo=bar\n\n") == "action=DUNNO"
        # The same connection still works, and so does another one.
        assert client.ask(request_text()).startswith("action=DEFER_IF_PERMIT")
        assert other.ask(request_text(rcpt="b@example.com")).startswith(
            "action=DEFER_IF_PERMIT")
    finally:
        client.close()
        other.close()
    assert server.counts["malformed"] == 3
    assert "event=policy-malformed" in caplog.text


def test_overlong_line_closes_only_that_connection(server):
    bad = Client(server.server_address[1])
    good = Client(server.server_address[1])
    try:
        bad.sock.sendall(b"request=" + b"x" * (MAX_LINE + 10) + b"\n\n")
        assert bad.read_answer() == "action=DUNNO"
        assert bad.rfile.readline() == b""        # closed after answering
        assert good.ask(request_text()).startswith("action=DEFER_IF_PERMIT")
    finally:
        bad.close()
        good.close()


def test_many_concurrent_connections(server, clock):
    n_clients, n_requests = 30, 10
    errors: list[str] = []
    answers: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n_clients)

    def worker(i: int) -> None:
        try:
            client = Client(server.server_address[1])
            try:
                barrier.wait(10)  # every connection open at once
                for j in range(n_requests):
                    answer = client.ask(request_text(client=f"198.51.100.{i}",
                                                     rcpt=f"u{j}@example.com"))
                    with lock:
                        answers.append(answer)
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            with lock:
                errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    # All clients share 198.51.100.0/24: each (sender, rcpt) is new exactly once.
    assert len(answers) == n_clients * n_requests
    assert server.counts == {"new": n_requests, "early": n_clients * n_requests - n_requests}
    assert all(a.startswith("action=DEFER_IF_PERMIT 4.7.1 Greylisted") for a in answers)


def test_read_request_parsing():
    stream = io.BytesIO(b"\nrequest=smtpd_access_policy\r\nsender=a=b@example.org\n\n")
    request = read_request(stream)
    assert request.attrs == {"request": "smtpd_access_policy", "sender": "a=b@example.org"}
    assert not request.errors
    assert read_request(stream) is None
    truncated = read_request(io.BytesIO(b"request=smtpd_access_policy\n"))
    assert truncated.fatal and truncated.errors


def test_policy_action_without_network(tmp_path, clock):
    greylist = Greylist(GreylistSettings(), str(tmp_path / "mg.db"), clock)
    try:
        req = PolicyRequest(attrs={"request": "smtpd_access_policy",
                                   "client_address": "2001:db8::5", "sender": "",
                                   "recipient": "alice@example.com"})
        action, result = policy_action(greylist, req)
        assert action.startswith("DEFER_IF_PERMIT 4.7.1")
        assert result.client_net == "2001:db8::/64" and result.sender == ""
    finally:
        greylist.close()


def test_policyd_listen_setting():
    def read(text: str) -> GreylistSettings:
        section = load_yaml_text(f"greylist:\n  policyd_listen: {text!r}\n", "site.yaml")
        return GreylistSettings.from_section(section["greylist"])

    assert read("[::1]:10023").policyd_listen == ("::1", 10023)
    assert read("10023").policyd_listen == ("127.0.0.1", 10023)
    with pytest.raises(ConfigError, match="site.yaml:2: field policyd_listen"):
        read("localhost:port")


def test_sasl_users_and_allowlisted_networks_are_not_greylisted(tmp_path, clock):
    """Issue 12, finding 9: the milter exempts them, policyd did not."""
    from milterguard.config import load_config
    from milterguard.greylist.policyd import Exemptions

    site = tmp_path / "site.yaml"
    site.write_text("allowlist: {networks: [203.0.113.0/24], authenticated: true}\n")
    exemptions = Exemptions.from_config(load_config(str(site), str(tmp_path)))
    greylist = Greylist(GreylistSettings(delay=300), str(tmp_path / "mg.db"), clock)
    srv = PolicyServer(("127.0.0.1", 0), greylist, idle_timeout=30, exemptions=exemptions)
    stop = threading.Event()
    runner = threading.Thread(target=serve, args=(srv, stop), daemon=True)
    runner.start()
    client = Client(srv.server_address[1])
    try:
        assert client.ask(request_text(client="198.51.100.9", sasl_username="alice")) == \
            "action=DUNNO"
        assert client.ask(request_text(client="203.0.113.40")) == "action=DUNNO"
        # Everyone else still is.
        assert client.ask(request_text(client="198.51.100.9")).startswith(
            "action=DEFER_IF_PERMIT")
    finally:
        client.close()
        stop.set()
        runner.join(10)
        greylist.close()
    assert srv.counts == {"authenticated": 1, "allowlisted": 1, "new": 1}
    # With authenticated: false a SASL login alone does not exempt.
    assert Exemptions([], authenticated=False).reason(
        {"client_address": "198.51.100.9", "sasl_username": "alice"}) == ""
