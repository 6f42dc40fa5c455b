"""The shipped samples through the Session in process, on the demo's
configuration (samples/demo.yaml: built-in defaults and shipped rules), held
against samples/expected.yaml with the comparison `milterguard replay
--expect` uses. `make demo` and the e2e tier replay the same files through
the daemon's real socket; this is the fast check that a rule or session
change keeps the samples' outcomes."""

from __future__ import annotations

import os

import pytest

from milterguard.cli.replay import compare, load_expectations
from milterguard.config import load_config
from milterguard.milter.engine import Engine
from milterguard.milter.session import Session
from milterguard.replay.conversation import CLIENT_PORT, ReplayResult, _collect_hits
from milterguard.replay.files import collect_files
from milterguard.replay.message import ParsedMessage, parse_message
from milterguard.verdict import Action, Verdict
from tests import REPO_ROOT

SAMPLES = os.path.join(REPO_ROOT, "samples")
EXPECTED = os.path.join(SAMPLES, "expected.yaml")


class _Ended(Exception):
    """The MTA would stop talking about this message here."""


def _decide(result: ReplayResult, verdict: Verdict) -> None:
    """Stop at a final answer, as Postfix would (it ignores DISCARD for a connection)."""
    result.stage = verdict.stage
    if verdict.action in (Action.CONTINUE, Action.TAG):
        return
    if verdict.action == Action.DISCARD and verdict.stage in ("connect", "helo"):
        return
    result.action = verdict.action.value
    result.reply = str(verdict.reply) if verdict.reply else ""
    raise _Ended


def _converse(session: Session, msg: ParsedMessage, result: ReplayResult) -> None:
    """The stages in the order and form the adapter hands them to the Session."""
    env = msg.envelope
    name = env.client_name or "unknown"
    _decide(result, session.connect(name if name != "unknown" else f"[{env.client_addr}]",
                                    env.client_addr, CLIENT_PORT,
                                    {"{client_addr}": env.client_addr, "{client_name}": name}))
    _decide(result, session.helo(env.helo))
    mail_macros = {"{auth_type}": "PLAIN", "{auth_authen}": env.auth} if env.auth else {}
    _decide(result, session.mail(f"<{env.sender}>", mail_macros))
    refusals = []
    for rcpt in env.recipients:
        verdict = session.rcpt(f"<{rcpt}>")
        if verdict.action in (Action.REJECT, Action.TEMPFAIL):
            refusals.append(verdict)       # that recipient only
            result.refused_rcpts.append((rcpt, str(verdict.reply or "")))
            continue
        _decide(result, verdict)
    if len(refusals) == len(env.recipients):
        _decide(result, refusals[0])
    _decide(result, session.data())
    for header, value in msg.milter_headers():
        _decide(result, session.header(header, value))
    _decide(result, session.eoh())
    _decide(result, session.body(msg.body))
    eom = session.eom()
    result.added_headers = list(eom.add_headers)
    result.changed_headers = [(header, value) for header, _, value in eom.change_headers]
    result.quarantine = eom.quarantine
    _decide(result, eom.verdict)
    tagged = any(header.lower() == "x-spam-flag" and value.strip().upper() == "YES"
                 for header, value in result.added_headers)
    result.action = "quarantine" if eom.quarantine else "tag" if tagged else "accept"


def replay_in_process(engine: Engine, path: str) -> ReplayResult:
    with open(path, "rb") as handle:
        msg = parse_message(handle.read())
    result = ReplayResult(file=path)
    session = Session(engine)
    try:
        _converse(session, msg, result)
    except _Ended:
        pass
    finally:
        session.close()
    _collect_hits(result)              # the hit ids as replay reads them off the answers
    return result


@pytest.fixture(scope="module")
def demo_engine(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("state")
    engine = Engine.from_config(load_config(os.path.join(SAMPLES, "demo.yaml"), str(state)),
                                with_store=False)
    try:
        yield engine
    finally:
        engine.close()


def test_every_sample_gets_its_expected_outcome(demo_engine: Engine) -> None:
    files = collect_files([SAMPLES], exclude=[EXPECTED])
    assert len(files) >= 15
    results = [replay_in_process(demo_engine, path) for path in files]
    assert compare(results, load_expectations(EXPECTED), EXPECTED) == []
    # Not vacuous: every ham is delivered, no spam is.
    actions: dict[str, set[str]] = {}
    for result in results:
        actions.setdefault(os.path.basename(os.path.dirname(result.file)), set()).add(result.action)
    assert actions["ham"] == {"accept"} and "accept" not in actions["spam"]


def test_a_changed_expectation_is_reported(demo_engine: Engine, tmp_path) -> None:
    # The same comparison catches a sample whose outcome moved.
    gtube = os.path.join(SAMPLES, "spam", "01-gtube.eml")
    result = replay_in_process(demo_engine, gtube)
    assert (result.action, result.stage, result.hits) == ("reject", "eom", ["gtube"])
    wrong = tmp_path / "expected.yaml"
    wrong.write_text("spam/01-gtube.eml: {action: accept}\n")
    os.symlink(os.path.join(SAMPLES, "spam"), tmp_path / "spam")
    result.file = str(tmp_path / "spam" / "01-gtube.eml")
    assert compare([result], load_expectations(str(wrong)), str(wrong)) == \
        [f"{result.file}: action reject, expected accept ({result.reply})"]
