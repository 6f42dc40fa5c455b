"""Registered domains by the Public Suffix List's rules."""

from __future__ import annotations

import os

import pytest

from milterguard.content.suffixes import DEFAULT_PATH, SuffixList, suffix_list
from milterguard.errors import MilterguardError

SMALL = """\
// a comment line
com
uk
co.uk
*.ck
!www.ck
blogspot.com
"""


@pytest.mark.parametrize("host,expected", [
    ("www.example.com", "example.com"),
    ("example.com", "example.com"),
    ("com", None),
    ("a.b.example.co.uk", "example.co.uk"),
    ("co.uk", None),
    ("x.y.blogspot.com", "y.blogspot.com"),       # a private suffix counts as one
    ("foo.bar.ck", "foo.bar.ck"),                 # *.ck: bar.ck is a suffix
    ("bar.ck", None),
    ("x.www.ck", "www.ck"),                       # !www.ck: www.ck is registered
    ("host.example.test", "example.test"),        # no rule: the implicit "*"
    ("EXAMPLE.COM.", "example.com"),
    ("localhost", None),
    ("a..example.com", None),
])
def test_rules_wildcards_and_exceptions(host, expected):
    assert SuffixList.parse(SMALL).registered_domain(host) == expected


def test_the_distributions_list_is_read():
    if not os.path.exists(DEFAULT_PATH):
        pytest.fail(f"{DEFAULT_PATH} missing: scripts/install-deps.sh installs publicsuffix")
    psl = suffix_list()
    assert psl.registered_domain("www.example.co.uk") == "example.co.uk"
    assert psl.registered_domain("mail.example.com.au") == "example.com.au"
    assert suffix_list() is psl            # read once


def test_a_missing_or_wrong_file_is_a_clear_error(tmp_path):
    with pytest.raises(MilterguardError, match="publicsuffix"):
        SuffixList.load(str(tmp_path / "nope.dat"))
    short = tmp_path / "short.dat"
    short.write_text(SMALL)
    with pytest.raises(MilterguardError, match="not a public suffix list"):
        SuffixList.load(str(short))
