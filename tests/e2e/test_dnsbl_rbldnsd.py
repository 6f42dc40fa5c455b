"""The DNSBL tests of tests/unit/gates/test_dnsbl.py, against the real
rbldnsd serving the same zone texts: what the unit tier's in-process zones
emulate is what rbldnsd answers."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.dnsfixtures import Rbldnsd
from tests.unit.gates.test_dnsbl import (  # collected here again, with the fixture below
    ZONES, test_allowlist_zone_in_immediate_mode, test_bitmask_filter_and_per_code_category,
    test_code_ranges_map_to_different_actions, test_codes_outside_the_configured_set_are_unknown,
    test_error_answer_for_everything_never_rejects, test_ipv4_listing_rejects_with_zone_text,
    test_ipv6_listing_uses_nibbles, test_ipv6_not_asked_of_an_ipv4_only_zone,
    test_ipv6_only_zone_uses_ipv6_test_points, test_secret_zone_name_is_hidden,
    test_self_test_suspends_failing_zone, test_silent_zone_does_not_hold_back_the_others,
    test_weighted_mode_adds_up_with_allowlist)

__all__ = [
    "test_allowlist_zone_in_immediate_mode", "test_bitmask_filter_and_per_code_category",
    "test_code_ranges_map_to_different_actions", "test_codes_outside_the_configured_set_are_unknown",
    "test_error_answer_for_everything_never_rejects", "test_ipv4_listing_rejects_with_zone_text",
    "test_ipv6_listing_uses_nibbles", "test_ipv6_not_asked_of_an_ipv4_only_zone",
    "test_ipv6_only_zone_uses_ipv6_test_points", "test_secret_zone_name_is_hidden",
    "test_self_test_suspends_failing_zone", "test_silent_zone_does_not_hold_back_the_others",
    "test_weighted_mode_adds_up_with_allowlist",
]


@pytest.fixture(scope="module")
def blocklists() -> Iterator[Rbldnsd]:
    """rbldnsd on 127.0.0.1 serving the unit tests' ZONES."""
    server = Rbldnsd(ZONES).start()
    try:
        yield server
    finally:
        server.stop()
