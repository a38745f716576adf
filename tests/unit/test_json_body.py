"""The request-body JSON parser (api/json_body.py): its limits, and what it leaves alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from api.json_body import JsonBodyError, parse_json, parse_json_fast

PARSERS = pytest.mark.parametrize("parse", [parse_json, parse_json_fast])
Parse = Callable[[bytes, int], Any]


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@PARSERS
def test_a_document_as_deep_as_the_limit_is_accepted(parse: Parse) -> None:
    assert parse(arrays(8), 8) == [[[[[[[[]]]]]]]]


@PARSERS
def test_a_document_one_level_deeper_than_the_limit_is_refused(parse: Parse) -> None:
    with pytest.raises(JsonBodyError, match="deeper than 8 levels"):
        parse(arrays(9), 8)


@PARSERS
def test_objects_count_towards_the_depth_like_arrays(parse: Parse) -> None:
    with pytest.raises(JsonBodyError, match="deeper than 3 levels"):
        parse(b'{"a": {"b": [{"c": 1}]}}', 3)


@PARSERS
def test_containers_side_by_side_do_not_add_up_to_depth(parse: Parse) -> None:
    wide = b'{"reports": [' + b",".join([b'{"a": ["x"]}'] * 100) + b"]}"
    assert len(parse(wide, 4)["reports"]) == 100
    with pytest.raises(JsonBodyError, match="deeper than 3 levels"):
        parse(wide, 3)


@PARSERS
def test_brackets_inside_strings_do_not_count(parse: Parse) -> None:
    assert parse(b'{"a": "[[[[[[[[[[{{{{{{{{"}', 2) == {"a": "[[[[[[[[[[{{{{{{{{"}


@PARSERS
def test_a_document_too_deep_for_the_parser_itself_is_refused_as_too_deep(parse: Parse) -> None:
    with pytest.raises(JsonBodyError, match="deeper than 64 levels"):
        parse(arrays(50_000), 64)


@PARSERS
def test_a_surrogate_pair_is_one_character_and_accepted(parse: Parse) -> None:
    assert parse(b'["\\ud83d\\ude00"]', 64) == ["\U0001f600"]


@PARSERS
@pytest.mark.parametrize(
    "raw", [b'["\\udfff"]', b'["\\ud83d"]', b'["\\ude00\\ud83d"]', b'{"\\udfff": 1}']
)
def test_a_lone_surrogate_is_refused(parse: Parse, raw: bytes) -> None:
    with pytest.raises(JsonBodyError, match="not valid Unicode"):
        parse(raw, 64)


@PARSERS
@pytest.mark.parametrize("raw", [b"[NaN]", b"[Infinity]", b"[-Infinity]", b"[1e400]", b"[-1e999]"])
def test_non_finite_numbers_are_refused(parse: Parse, raw: bytes) -> None:
    with pytest.raises(JsonBodyError):
        parse(raw, 64)


def test_integers_of_any_size_stay_exact() -> None:
    assert parse_json(b"[123456789012345678901234567890]", 64) == [123456789012345678901234567890]


@PARSERS
@pytest.mark.parametrize("raw", [b"", b"{", b"[1,]", b"\xff", b"nul"])
def test_malformed_json_is_refused_as_not_json(parse: Parse, raw: bytes) -> None:
    with pytest.raises(JsonBodyError, match="not valid JSON"):
        parse(raw, 64)
