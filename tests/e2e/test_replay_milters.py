"""The replay harness against real pymilter milters (tests/e2e/testmilter.py),
each a spawned process on a unix or TCP socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from milterguard.cli import main as cli
from milterguard.replay.conversation import ReplayResult, replay_message
from milterguard.replay.files import replay_paths
from milterguard.socketspec import connect
from tests.unit.replay.samples import BASIC, write_corpus

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_connectable(spec: str, proc: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"test milter exited early: {spec}")
        try:
            connect(spec, 1.0).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"test milter not listening: {spec}")


@pytest.fixture(scope="module")
def milters(tmp_path_factory):
    """Both test milters: ``full`` on a unix socket, ``lean`` on TCP."""
    tmp = tmp_path_factory.mktemp("milters")
    specs = {"full": f"unix:{tmp}/full.sock", "lean": f"inet:{_free_port()}@127.0.0.1"}
    procs = {}
    try:
        for variant, spec in specs.items():
            procs[variant] = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "testmilter.py"), variant, spec],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        for variant, spec in specs.items():
            _wait_connectable(spec, procs[variant], deadline)
        yield specs
    finally:
        # pymilter takes ~4 s to stop after SIGTERM: signal both, then wait.
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _seen(result: ReplayResult) -> dict[str, str]:
    return {n[len("X-Seen-"):]: v for n, v in result.added_headers if n.startswith("X-Seen-")}


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path)


def test_accept_delivers_what_postfix_would_send(milters):
    res = replay_message(milters["full"], BASIC, name="basic", timeout=5)
    assert (res.stage, res.action, res.reply) == ("eom", "accept", "")
    assert res.hits == ["test-accept"]
    seen = _seen(res)
    assert seen["Client"] == "mail.example.com 192.0.2.7"
    assert seen["Helo"] == "helo.example.com"
    assert seen["From"] == "<s@example.org>"
    assert seen["Rcpts"] == "x@example.net"
    assert seen["Headers"] == "From|To|Subject|X-Folded"
    assert seen["Folded"] == repr("one\n two")
    assert seen["Body"] == "chunks=1 len=11"  # "Body line" + CRLF
    assert seen["Macros"] == (f"j=mx.example.net client_addr=192.0.2.7 mail_addr=s@example.org"
                              f" auth=alice i={res.queue_id} i_eom={res.queue_id} tls=TLSv1.3")
    assert ["X-Milterguard", "hits=test-accept"] in res.to_dict()["added_headers"]


def test_ipv6_client(milters):
    raw = BASIC.replace(b"192.0.2.7", b"2001:db8::7")
    res = replay_message(milters["full"], raw, timeout=5)
    assert res.action == "accept"
    assert _seen(res)["Client"] == "mail.example.com 2001:db8::7"


def test_reject_at_header_names_the_rule(milters):
    res = replay_message(milters["full"], BASIC.replace(b"hello", b"FORBIDDEN"),
                                timeout=5)
    assert (res.stage, res.action) == ("header", "reject")
    assert res.reply == "550 5.7.1 Message rejected [subject-keyword]"
    assert res.hits == ["subject-keyword"]


def test_reject_at_helo(milters):
    raw = BASIC.replace(b"helo.example.com", b"reject.helo.invalid")
    res = replay_message(milters["full"], raw, timeout=5)
    assert (res.stage, res.action, res.hits) == ("helo", "reject", ["helo-invalid"])


def test_per_recipient_refusals(milters):
    spec = milters["full"]
    some = replay_message(
        spec, b"X-Replay-Rcpt-To: grey@example.net, ok@example.net\n" + BASIC, timeout=5)
    assert (some.stage, some.action) == ("eom", "accept")
    assert _seen(some)["Rcpts"] == "ok@example.net"
    assert some.refused_rcpts == [("grey@example.net", "451 4.7.1 Greylisted [greylist]")]
    assert some.hits == ["test-accept", "greylist"]
    mixed = replay_message(
        spec, b"X-Replay-Rcpt-To: deny@example.net, grey@example.net\n" + BASIC, timeout=5)
    assert (mixed.stage, mixed.action, mixed.reply) == \
        ("rcpt", "tempfail", "451 4.7.1 Greylisted [greylist]")
    denied = replay_message(
        spec, b"X-Replay-Rcpt-To: deny1@example.net, deny2@example.net\n" + BASIC, timeout=5)
    assert (denied.stage, denied.action, denied.hits) == ("rcpt", "reject", ["rcpt-unknown"])


def test_quarantine_and_discard(milters):
    quarantined = replay_message(milters["full"], BASIC.replace(b"hello", b"QUARANTINE"),
                                        timeout=5)
    assert (quarantined.stage, quarantined.action) == ("eom", "quarantine")
    assert quarantined.quarantine == "held for review [quarantine-rule]"
    discarded = replay_message(milters["full"], BASIC.replace(b"hello", b"DISCARD"),
                                      timeout=5)
    assert (discarded.stage, discarded.action) == ("eom", "discard")
    tagged = replay_message(milters["full"], BASIC.replace(b"hello", b"TAGME"),
                                   timeout=5)
    assert (tagged.stage, tagged.action, tagged.hits) == ("eom", "tag", ["test-accept"])


def test_body_chunks_and_skip(milters):
    body = b"".join(b"%06d " % i + b"x" * 73 + b"\n" for i in range(2000))  # 80+1 bytes a line
    wire_len = 2000 * 82
    full = replay_message(milters["full"], BASIC + body, timeout=5)
    expect_chunks = -(-(wire_len + 11) // 65535)
    assert _seen(full)["Body"] == f"chunks={expect_chunks} len={wire_len + 11}"
    skipped = replay_message(milters["full"], b"X-Test-Skip: yes\n" + BASIC + body,
                                    timeout=5)
    assert skipped.action == "accept"
    assert _seen(skipped)["Body"] == "chunks=1 len=65535"


def test_lean_milter_negotiates_stages_and_replies_away(milters):
    # If the harness waited for a reply the milter negotiated away, this
    # would end in a timeout error instead.
    res = replay_message(milters["lean"], BASIC, timeout=3)
    assert (res.stage, res.action) == ("eom", "accept")
    assert res.hits == ["lean-ok", "headers-4"]
    rej = replay_message(milters["lean"], BASIC.replace(b"hello", b"FORBIDDEN"),
                                timeout=3)
    assert (rej.stage, rej.action, rej.hits) == ("eom", "reject", ["lean-keyword"])


def test_parallel_replay_keeps_order(milters, corpus):
    serial = [(r.file, r.action) for r in replay_paths(milters["full"], [str(corpus)])]
    parallel = [(r.file, r.action) for r in
                replay_paths(milters["full"], [str(corpus)], jobs=3)]
    assert serial == parallel
    assert [a for _, a in serial] == ["accept", "accept", "reject"]


def test_cli_expect_passes(milters, corpus, capsys):
    rc = cli.main(["replay", "--socket", milters["full"], "--expect",
                   str(corpus / "expected.yaml"), str(corpus)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.splitlines()[0].split() == ["FILE", "STAGE", "ACTION", "REPLY", "HITS"]
    assert "0 differences" in out


def test_cli_expect_mismatch_exits_1(milters, corpus, capsys):
    (corpus / "expected.yaml").write_text(
        "ham/1.eml: reject\nham/2.eml: accept\nspam/gone.eml: reject\n")
    rc = cli.main(["replay", "--socket", milters["full"], "--expect",
                   str(corpus / "expected.yaml"), str(corpus)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "ham/1.eml: action accept, expected reject" in out
    assert "spam/1.eml: no expectation" in out
    assert "spam/gone.eml: expected" in out


def test_cli_bad_expectation_names_file_and_line(milters, corpus, capsys):
    (corpus / "expected.yaml").write_text("ham/1.eml: accept\nham/2.eml:\n  action: maybe\n")
    rc = cli.main(["replay", "--socket", milters["full"], "--expect",
                   str(corpus / "expected.yaml"), str(corpus)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "expected.yaml:3" in err and "action" in err


def test_cli_json_lines_and_error_exit(milters, corpus, tmp_path, capsys):
    rc = cli.main(["replay", "--socket", milters["full"], "--json", str(corpus / "spam")])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    rows = [json.loads(line) for line in lines]
    assert rows[0]["action"] == "reject" and rows[0]["hits"] == ["subject-keyword"]
    assert {"file", "stage", "action", "reply", "hits", "added_headers"} <= set(rows[0])
    rc = cli.main(["replay", "--socket", f"unix:{tmp_path}/none.sock", "--timeout", "1",
                   str(corpus / "ham" / "1.eml")])
    out = capsys.readouterr().out
    assert rc == 1 and "error" in out
