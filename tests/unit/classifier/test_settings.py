"""The classifier: section: bands and limits, errors with file, line and field."""

from __future__ import annotations

import textwrap

import pytest

from milterguard.classifier.settings import ClassifierSettings
from milterguard.errors import ConfigErrors
from tests.dnsfixtures import load_test_config


def test_band_errors_name_file_line_and_field(tmp_path):
    config = load_test_config(textwrap.dedent("""\
        classifier:
          bands:
            - {id: ok, min: 0.9, action: tag}
            - {id: bad, min: 0.5, max: 0.4, action: score, score: 1}
            - {id: worse, min: 0.1, action: explode}
        """), str(tmp_path))
    with pytest.raises(ConfigErrors) as info:
        ClassifierSettings.from_config(config)
    text = "\n".join(str(e) for e in info.value.errors)
    assert "site.yaml:4" in text and "min must be below max" in text
    assert "site.yaml:5" in text and "action" in text
