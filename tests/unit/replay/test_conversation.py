"""The conversation without a milter process: hit ids read off the answers,
and a socket that is missing or never answers. Against real pymilter
milters: tests/e2e/test_replay_milters.py."""

from __future__ import annotations

import socket
import threading

from milterguard.replay.conversation import ids_from_header, ids_from_reply, replay_message
from tests.unit.replay.samples import BASIC


def test_rule_ids_from_header_and_reply():
    assert ids_from_header("rule-a, rule-b") == ["rule-a", "rule-b"]
    assert ids_from_header("hits=rule-a,rule-b score=3.5") == ["rule-a", "rule-b"]
    assert ids_from_reply("550 5.7.1 Message rejected [rule-a, rule-b]") == \
        ["rule-a", "rule-b"]
    assert ids_from_reply("550 5.7.1 [not at end] text") == []


def test_connection_errors_are_results(tmp_path):
    res = replay_message(f"unix:{tmp_path}/nothing.sock", BASIC, name="m", timeout=1)
    assert res.action == "error" and res.reply
    assert res.to_dict()["file"] == "m"


def test_silent_milter_times_out(tmp_path):
    path = str(tmp_path / "silent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    held: list[socket.socket] = []
    thread = threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True)
    thread.start()
    try:
        res = replay_message(f"unix:{path}", BASIC, timeout=0.3)
        assert (res.stage, res.action) == ("connect", "error")
        assert "timeout" in res.reply
    finally:
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()
