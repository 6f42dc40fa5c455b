"""Walking replay inputs: directories, and files that are not messages."""

from __future__ import annotations

import os

import pytest

from milterguard.replay.files import collect_files
from tests.unit.replay.samples import write_corpus


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path)


def test_directory_input_skips_non_message_files(corpus):
    files = collect_files([str(corpus)], exclude=[str(corpus / "expected.yaml")])
    assert [os.path.relpath(f, corpus) for f in files] == \
        ["ham/1.eml", "ham/2.eml", "spam/1.eml"]
