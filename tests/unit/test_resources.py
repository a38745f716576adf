"""Resource URIs: validation, RFC 3986 normalisation for comparison, coverage and containment."""

from __future__ import annotations

import pytest

from ledger.domain.errors import InvalidRequest
from ledger.domain.resources import normalize, resource_covers, resource_within, validate_resource

BASE = "https://api.example/orders"


def _invalid(value: object, *, hierarchical: bool = False) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        validate_resource(value, "/x/resource", hierarchical=hierarchical)
    assert caught.value.errors[0].pointer == "/x/resource"
    return caught.value


def test_valid_resource_is_returned_unchanged() -> None:
    value = "HTTPS://API.Example:443/a/%7euser"
    assert validate_resource(value, "/r", hierarchical=True) is value


def test_urn_is_an_absolute_uri() -> None:
    assert validate_resource("urn:example:ledger", "/r", hierarchical=False) == (
        "urn:example:ledger"
    )


def test_relative_reference_is_rejected() -> None:
    _invalid("/orders/1")


def test_non_string_resource_is_rejected() -> None:
    _invalid(42)


def test_fragment_is_rejected() -> None:
    assert "fragment" in _invalid("https://api.example/a#b").detail


def test_non_rfc3986_character_is_rejected() -> None:
    _invalid("https://api.example/a b")


def test_bad_percent_encoding_is_rejected() -> None:
    _invalid("https://api.example/%zz")


def test_overlong_uri_is_rejected() -> None:
    _invalid("https://api.example/" + "a" * 2048)


def test_uri_of_2048_characters_is_accepted() -> None:
    value = "https://api.example/" + "a" * (2048 - len("https://api.example/"))
    assert validate_resource(value, "/r", hierarchical=True) == value


def test_prefix_resource_must_be_hierarchical() -> None:
    _invalid("urn:example:orders", hierarchical=True)


def test_prefix_resource_must_not_carry_a_query() -> None:
    _invalid("https://api.example/orders?all=1", hierarchical=True)


def test_normalize_lowercases_scheme_and_host_only() -> None:
    assert normalize("HTTPS://API.EXAMPLE/Orders") == "https://api.example/Orders"


def test_normalize_drops_default_ports() -> None:
    assert normalize("http://a.example:80/x") == "http://a.example/x"
    assert normalize("https://a.example:443/x") == "https://a.example/x"


def test_normalize_keeps_other_ports() -> None:
    assert normalize("https://a.example:8443/x") == "https://a.example:8443/x"


def test_normalize_uppercases_percent_hex() -> None:
    assert normalize("https://a.example/a%2fb") == "https://a.example/a%2Fb"


def test_normalize_decodes_unreserved_octets() -> None:
    assert normalize("https://a.example/%7Euser%41") == "https://a.example/~userA"


def test_normalize_removes_dot_segments_after_decoding() -> None:
    assert normalize("https://a.example/a/b/%2E%2E/./c") == "https://a.example/a/c"


def test_normalize_gives_http_an_empty_path_of_slash() -> None:
    assert normalize("https://a.example") == "https://a.example/"


def test_normalize_rejects_non_uris() -> None:
    with pytest.raises(ValueError, match="not an absolute URI"):
        normalize("not a uri")


def test_exact_covers_only_the_same_resource() -> None:
    assert resource_covers(BASE, "exact", "HTTPS://api.example:443/orders")
    assert not resource_covers(BASE, "exact", BASE + "/1")


def test_prefix_covers_the_base_and_below_at_segment_boundary() -> None:
    assert resource_covers(BASE, "prefix", BASE)
    assert resource_covers(BASE, "prefix", BASE + "/1/lines")
    assert not resource_covers(BASE, "prefix", BASE + "X")


def test_prefix_with_trailing_slash_covers_children() -> None:
    assert resource_covers(BASE + "/", "prefix", BASE + "/1")
    assert not resource_covers(BASE + "/", "prefix", BASE)


def test_prefix_does_not_cover_a_request_with_a_query() -> None:
    assert not resource_covers(BASE, "prefix", BASE + "?id=1")


def test_prefix_does_not_cross_hosts() -> None:
    assert not resource_covers("https://api.example", "prefix", "https://api.example.evil/x")


def test_prefix_does_not_cross_ports() -> None:
    assert not resource_covers("https://api.example", "prefix", "https://api.example:8443/x")


def test_host_only_prefix_covers_every_path() -> None:
    assert resource_covers("https://erp.example.com", "prefix", "https://erp.example.com/a/b")


def test_dot_segments_cannot_escape_a_prefix() -> None:
    assert not resource_covers(BASE, "prefix", BASE + "/../admin")


def test_unparseable_request_is_never_covered() -> None:
    assert not resource_covers(BASE, "prefix", "orders/1")


def test_unknown_match_mode_covers_nothing() -> None:
    assert not resource_covers(BASE, "glob", BASE)


def test_exact_within_prefix_when_covered() -> None:
    assert resource_within(BASE + "/1", "exact", BASE, "prefix")
    assert not resource_within("https://api.example/other", "exact", BASE, "prefix")


def test_prefix_never_within_exact() -> None:
    assert not resource_within(BASE, "prefix", BASE, "exact")


def test_prefix_within_prefix_when_base_covered() -> None:
    assert resource_within(BASE + "/1", "prefix", BASE, "prefix")
    assert resource_within(BASE, "prefix", BASE, "prefix")
    assert not resource_within("https://api.example", "prefix", BASE, "prefix")


def test_exact_within_exact_only_when_equal_after_normalisation() -> None:
    assert resource_within("HTTPS://API.EXAMPLE/orders", "exact", BASE, "exact")
    assert not resource_within(BASE + "/1", "exact", BASE, "exact")
