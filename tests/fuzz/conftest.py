"""Hypothesis profiles for the fuzz tests.

The ordinary test run (and CI) uses the short, derandomised ``ci`` profile:
the same examples every run, a few seconds per test, so CI never turns red
by chance. ``make fuzz`` selects ``fuzz`` (HYPOTHESIS_PROFILE=fuzz): random
examples, many of them, failures kept in .hypothesis/ so they replay first
next time; it repeats rounds until FUZZ_SECONDS are used up.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "1500")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
