"""Which authorities a stream scoped to ``resources`` carries (SPEC 7.3 signal scoping)."""

from __future__ import annotations

import pytest

from ledger.domain.errors import InvalidRequest
from ledger.domain.resources import resources_meet
from ledger.domain.streams import scope_touches, validate_receiver_config

ORDERS = "https://erp.example.com/orders"


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (ORDERS, "exact"),
        (ORDERS + "/42", "exact"),
        (ORDERS + "/42/", "prefix"),
        ("https://ERP.example.com:443/orders", "exact"),  # the same URI, normalised
        ("https://erp.example.com/", "prefix"),  # an authority over all of it
    ],
)
def test_a_stream_resource_is_touched_by_itself_below_and_by_a_prefix_above(
    entry: str, match: str
) -> None:
    assert scope_touches([ORDERS], [(entry, match)])


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ("https://erp.example.com/orders-archive", "exact"),  # not at a segment boundary
        ("https://erp.example.com/invoices", "prefix"),
        ("https://erp.example.com/", "exact"),  # the parent itself, not what is below it
        ("http://erp.example.com/orders", "exact"),  # another scheme
        ("not a uri", "exact"),
        (ORDERS, "regex"),  # an unknown match mode meets nothing
    ],
)
def test_other_resources_do_not_touch_a_stream_resource(entry: str, match: str) -> None:
    assert not scope_touches([ORDERS], [(entry, match)])


def test_a_non_hierarchical_stream_resource_matches_only_itself() -> None:
    assert scope_touches(["urn:example:ledger:book"], [("urn:example:ledger:book", "exact")])
    assert not scope_touches(["urn:example:ledger"], [("urn:example:ledger:book", "exact")])


def test_an_authority_that_names_nothing_touches_no_scope() -> None:
    assert not scope_touches([ORDERS], [])


def test_two_prefixes_meet_whichever_contains_the_other() -> None:
    assert resources_meet(ORDERS, "prefix", "https://erp.example.com/", "prefix")
    assert resources_meet("https://erp.example.com/", "prefix", ORDERS, "prefix")
    assert not resources_meet(ORDERS, "exact", "https://erp.example.com/", "exact")


def test_the_resources_member_keeps_order_and_drops_duplicates() -> None:
    config = validate_receiver_config(
        {"resources": [ORDERS, "urn:x:y", ORDERS]}, allow_http_loopback=False
    )
    assert config["resources"] == [ORDERS, "urn:x:y"]


@pytest.mark.parametrize("value", [[], ["relative/path"], [ORDERS + "#top"], "x", [None]])
def test_a_malformed_resources_member_is_refused(value: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validate_receiver_config({"resources": value}, allow_http_loopback=False)
    assert refused.value.errors[0].pointer.startswith("/resources")
