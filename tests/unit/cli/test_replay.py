"""The replay command's pieces that need no milter (the rest:
tests/e2e/test_replay_milters.py)."""

from __future__ import annotations


def test_progress_line_stays_off_on_pipes(capsys):
    from milterguard.cli.replay import _Progress
    progress = _Progress(1000)        # capsys' stderr is no terminal
    progress.update(10)
    progress.close()
    assert not progress.enabled and capsys.readouterr().err == ""
