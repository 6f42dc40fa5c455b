"""Property-based fuzzing of raw milter packets against a running daemon
(issue 12: "one packet kills the daemon").

One real daemon (``milterguard run`` on a unix socket, real libmilter) is
started for the module; every example opens its own connection to it.

Properties:
- arbitrary packets (any command byte, any data, odd macro lists, wrong
  lengths, garbage between packets) never kill the daemon, and afterwards a
  well-formed conversation still gets its verdict at end of message (no
  crash, no wedge);
- a conversation that is well framed and in SMTP order but carries hostile
  contents (odd macro lists, NULs, huge or empty names, binary headers and
  bodies) ends with a decision at some stage, or with the daemon closing
  the connection (which Postfix answers with its tempfail default): never
  with silence, so no message reaches the end without a verdict.

``make fuzz`` runs this with many random examples per round; the ordinary
test run uses the short fixed ``ci`` profile (tests/fuzz/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import sys
import tempfile
from typing import Iterator

import pytest
from hypothesis import given, strategies as st

from milterguard.errors import ProtocolError
from milterguard.milter import protocol as mp
from milterguard.replay.client import MilterClient
from milterguard.replay.conversation import replay_message
from milterguard.socketspec import connect
from tests import REPO_ROOT
from tests.e2e.postfix import MilterProcess, milterguard_argv

#: How long one example may wait for the daemon; silence past it is a hang.
ANSWER_TIMEOUT = 15.0

CONFIG = """\
allowlist: {networks: []}
envelope: {reject_unknown_sender_domain: false, reject_null_mx: false}
helo: {reject_unknown: false}
dnsbl: {zones: []}
dns: {probe_names: []}
rules: {reload_interval: 0}
"""

GOOD_MESSAGE = (b"X-Replay-Client: 192.0.2.9 host.example.net\r\n"
                b"X-Replay-Helo: host.example.net\r\n"
                b"X-Replay-Mail-From: a@example.com\r\nX-Replay-Rcpt-To: b@example.org\r\n"
                b"From: a@example.com\r\nTo: b@example.org\r\nSubject: fuzz check\r\n"
                b"Message-ID: <fuzz.1@example.com>\r\nDate: Tue, 02 Jan 2024 10:00:00 +0000\r\n"
                b"\r\nhello\r\n")


@pytest.fixture(scope="module")
def daemon() -> Iterator[MilterProcess]:
    workdir = tempfile.mkdtemp(prefix="mg-fuzz-")
    config = os.path.join(workdir, "fuzz.yaml")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(CONFIG)
    spec = f"unix:{workdir}/fuzz.sock"
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    proc = MilterProcess(milterguard_argv(config, spec, os.path.join(workdir, "state")),
                         spec, os.path.join(workdir, "daemon.log"), env=env, cwd=REPO_ROOT)
    proc.start(timeout=30)
    try:
        yield proc
    finally:
        proc.stop()
        log = proc.log_text()
        shutil.rmtree(workdir, ignore_errors=True)
        if "Traceback" in log:
            sys.stderr.write(log[-4000:])


def _still_serving(daemon: MilterProcess) -> None:
    assert daemon.alive(), f"daemon died:\n{daemon.log_text()[-3000:]}"
    result = replay_message(daemon.spec, GOOD_MESSAGE, timeout=ANSWER_TIMEOUT)
    assert result.stage == "eom" and result.action in ("accept", "continue", "tag"), \
        f"no verdict for a good message after fuzzing: {result}\n{daemon.log_text()[-3000:]}"


# -- strategies -------------------------------------------------------------

COMMANDS = [bytes([c]) for c in b"ABCDEHKLMNOQRTU"]
names = st.one_of(st.sampled_from([b"j", b"{client_addr}", b"{daemon_name}", b"i",
                                   b"{auth_authen}", b"{mail_addr}", b"_", b"{"]),
                  st.binary(max_size=40))
cstrings = st.binary(max_size=200).map(lambda b: b.replace(b"\0", b"") + b"\0")


@st.composite
def macro_packets(draw: st.DrawFn) -> bytes:
    """``D`` with a stage byte and any number of strings, odd counts included."""
    stage = draw(st.sampled_from(COMMANDS + [b"", b"\0"]))
    strings = draw(st.lists(names, max_size=15))
    return mp.packet(mp.C_MACRO, stage + b"".join(s.replace(b"\0", b"") + b"\0"
                                                  for s in strings))


@st.composite
def raw_packets(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(macro_packets())
    if kind == 1:   # any command, any data, honest length
        return mp.packet(draw(st.sampled_from(COMMANDS + [b"\0", b"\xff", b"z"])),
                         draw(st.binary(max_size=300)))
    if kind == 2:   # a length that lies (short: the rest is read as the next packet)
        data = draw(st.binary(max_size=64))
        return struct.pack(">I", draw(st.integers(0, 70))) + draw(st.sampled_from(COMMANDS)) + data
    if kind == 3:   # a well-formed stage packet
        return draw(st.sampled_from([
            mp.encode_connect("h.example.net", mp.FAMILY_INET, 25, "192.0.2.1"),
            mp.encode_connect("h", mp.FAMILY_INET6, 25, "2001:db8::1"),
            mp.encode_connect("", mp.FAMILY_UNKNOWN),
            mp.encode_helo("h.example.net"), mp.encode_mail(["<a@example.com>"]),
            mp.encode_rcpt(["<b@example.org>"]), mp.encode_simple(mp.C_DATA),
            mp.encode_header("Subject", "x"), mp.encode_simple(mp.C_EOH),
            mp.encode_body(b"body"), mp.encode_simple(mp.C_EOM),
            mp.encode_simple(mp.C_ABORT), mp.encode_optneg()]))
    if kind == 4:   # connect with a broken address part
        return mp.packet(mp.C_CONNECT, draw(cstrings) + draw(st.sampled_from(
            [b"4", b"6", b"L", b"U", b"x"])) + draw(st.binary(max_size=40)))
    return draw(st.binary(min_size=1, max_size=100))   # bytes with no framing at all


# -- properties ---------------------------------------------------------------

def _send_and_drain(spec: str, payload: bytes) -> None:
    """Send everything, then read until the daemon closes or goes quiet."""
    sock = connect(spec, ANSWER_TIMEOUT)
    try:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return            # the daemon closed on us mid-way: allowed
        sock.settimeout(2.0)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass              # quiet: it waits for the rest of a packet we never sent
    finally:
        sock.close()


@given(st.booleans(), st.lists(raw_packets(), min_size=1, max_size=12))
def test_random_packets_never_kill_or_wedge_the_daemon(daemon, negotiate, packets):
    payload = (mp.encode_optneg() if negotiate else b"") + b"".join(packets)
    _send_and_drain(daemon.spec, payload)
    _still_serving(daemon)


header_names = st.one_of(st.sampled_from(["Subject", "From", "To", "Received", "X-A"]),
                         st.text(min_size=1, max_size=30).filter(lambda t: "\0" not in t))
header_values = st.text(max_size=300).filter(lambda t: "\0" not in t)


@given(macros=st.lists(macro_packets(), max_size=4),
       helo=st.text(max_size=80).filter(lambda t: "\0" not in t),
       sender=st.text(max_size=80).filter(lambda t: "\0" not in t),
       headers=st.lists(st.tuples(header_names, header_values), max_size=8),
       body=st.lists(st.binary(max_size=2000), max_size=4))
def test_hostile_contents_in_good_framing_always_get_a_verdict(daemon, macros, helo, sender,
                                                               headers, body):
    sock = connect(daemon.spec, ANSWER_TIMEOUT)
    client = MilterClient(sock)
    stages = [("connect", mp.encode_connect("h.example.net", mp.FAMILY_INET, 25, "192.0.2.1")),
              ("helo", mp.encode_helo(helo)), ("mail", mp.encode_mail([f"<{sender}>"])),
              ("rcpt", mp.encode_rcpt(["<b@example.org>"])),
              ("data", mp.encode_simple(mp.C_DATA))]
    stages += [("header", mp.encode_header(n, v)) for n, v in headers]
    stages += [("eoh", mp.encode_simple(mp.C_EOH))]
    stages += [("body", mp.encode_body(chunk)) for chunk in body]
    stages += [("eom", mp.encode_simple(mp.C_EOM))]
    decided = closed = False
    try:
        client.negotiate()
        for macro in macros:
            client.out += macro
        for stage, pkt in stages:
            answer = client.event(stage, pkt)
            if answer is not None and answer.kind not in (mp.R_CONTINUE, mp.R_SKIP):
                decided = True
                break
            if stage == "eom":
                decided = answer is not None
    except (ProtocolError, ConnectionError):
        closed = True         # Postfix would answer its tempfail default
    except TimeoutError:
        pytest.fail(f"silence instead of a verdict\n{daemon.log_text()[-3000:]}")
    finally:
        sock.close()
    assert decided or closed
    _still_serving(daemon)
