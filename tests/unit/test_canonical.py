"""Integrity anchors reproduce the drafts' vectors byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain.canonical import (
    DIGEST_PREFIX,
    TYP_AUTHORITY_SET,
    TYP_ENTRY,
    TYP_INTENT,
    TYP_PROPOSAL,
    anchor,
    authority_hash,
    b64url,
    entry_digest,
    envelope,
    intent_hash,
    jcs,
    proposal_hash,
    raw_digest,
    sha256_b64url,
)
from tests.vectors import load_mission_vector

ANCHORS: list[dict[str, Any]] = load_mission_vector("integrity-anchors.json")["vectors"]
COMPANIONS: list[dict[str, Any]] = load_mission_vector("companion-digests.json")["vectors"]

HELPERS: dict[str, tuple[str, Callable[[str, object], str]]] = {
    "intent_hash": (TYP_INTENT, intent_hash),
    "authority_hash": (TYP_AUTHORITY_SET, authority_hash),
    "proposal_hash": (TYP_PROPOSAL, proposal_hash),
    "entry_digest": (TYP_ENTRY, entry_digest),
}


def _by_id(vectors: list[dict[str, Any]]) -> list[Any]:
    return [pytest.param(vector, id=vector["id"]) for vector in vectors]


@pytest.mark.parametrize("vector", _by_id(ANCHORS))
def test_anchor_envelope_canonical_bytes_match_vector(vector: dict[str, Any]) -> None:
    canonical = jcs(envelope(vector["typ"], vector["iss"], vector["value"]))
    assert canonical == vector["canonical_envelope"].encode("utf-8")


@pytest.mark.parametrize("vector", _by_id(ANCHORS))
def test_anchor_matches_vector(vector: dict[str, Any]) -> None:
    assert anchor(vector["typ"], vector["iss"], vector["value"]) == vector["expected"]


@pytest.mark.parametrize("vector", _by_id(ANCHORS))
def test_named_anchor_helper_uses_the_vector_typ(vector: dict[str, Any]) -> None:
    typ, helper = HELPERS[vector["anchor"]]
    assert typ == vector["typ"]
    assert helper(vector["iss"], vector["value"]) == vector["expected"]


def _companion_params(*, with_canonical: bool = False) -> list[Any]:
    """One param per companion vector, labelled by its stated construction.

    ``with_canonical`` keeps only the vectors that record the canonical JCS string.
    """
    params = []
    for vector in COMPANIONS:
        if with_canonical and not ({"canonical", "canonical_envelope"} & vector.keys()):
            continue
        if "typ" in vector:
            kind = "envelope"
        elif isinstance(vector.get("input"), dict) and "expected_digest_b64url" in vector:
            kind = "raw-bare"
        elif isinstance(vector.get("input"), dict) and "expected" in vector:
            kind = "raw-prefixed"
        else:
            params.append(
                pytest.param(
                    vector,
                    "other",
                    id=vector["id"],
                    marks=pytest.mark.skip(
                        reason=f"construction is not a JCS digest: {vector['construction']}"
                    ),
                )
            )
            continue
        params.append(pytest.param(vector, kind, id=vector["id"]))
    return params


@pytest.mark.parametrize(("vector", "kind"), _companion_params(with_canonical=True))
def test_companion_digest_canonical_bytes_match_vector(vector: dict[str, Any], kind: str) -> None:
    if kind == "envelope":
        canonical = jcs(envelope(vector["typ"], vector["iss"], vector["value"]))
        assert canonical == vector["canonical_envelope"].encode("utf-8")
    else:
        assert jcs(vector["input"]) == vector["canonical"].encode("utf-8")


@pytest.mark.parametrize(("vector", "kind"), _companion_params())
def test_companion_digest_matches_vector(vector: dict[str, Any], kind: str) -> None:
    if kind == "envelope":
        assert "envelope" in vector["construction"]
        assert anchor(vector["typ"], vector["iss"], vector["value"]) == vector["expected"]
    elif kind == "raw-bare":
        assert sha256_b64url(jcs(vector["input"])) == vector["expected_digest_b64url"]
    else:
        assert raw_digest(vector["input"]) == vector["expected"]


def test_base64url_has_no_padding() -> None:
    assert b64url(b"\xff") == "_w"


def test_raw_digest_has_the_sha256_prefix() -> None:
    assert raw_digest({}).startswith(DIGEST_PREFIX)


def test_envelope_members_are_iss_typ_value() -> None:
    assert envelope("t", "https://as.example", [1]) == {
        "iss": "https://as.example",
        "typ": "t",
        "value": [1],
    }


def test_jcs_sorts_keys_and_keeps_array_order() -> None:
    assert jcs({"b": [2, 1], "a": "x"}) == b'{"a":"x","b":[2,1]}'


def test_jcs_accepts_tuples_and_read_only_mappings() -> None:
    assert jcs(MappingProxyType({"a": (1, 2)})) == b'{"a":[1,2]}'


def test_issuer_changes_the_anchor() -> None:
    value = {"goal": "x"}
    assert intent_hash("https://a.example", value) != intent_hash("https://b.example", value)


def test_typ_changes_the_anchor() -> None:
    value = [{"type": "mission_resource_access"}]
    assert authority_hash("https://a.example", value) != proposal_hash("https://a.example", value)


# ---------------------------------------------------------------------- the fast path

_JSON_SIMPLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(alphabet=st.characters(exclude_categories=("Cs",))),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(max_codepoint=127), max_size=6), children, max_size=4
        )
    ),
    max_leaves=20,
)


@given(_JSON_SIMPLE)
def test_the_fast_path_writes_exactly_what_rfc8785_writes(value: object) -> None:
    assert jcs(value) == rfc8785.dumps(value)


@given(
    st.dictionaries(
        st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=4),
        st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
        max_size=4,
    )
)
def test_values_outside_the_fast_paths_subset_are_canonicalised_by_rfc8785(
    value: dict[str, object],
) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(rfc8785.CanonicalizationError):
            jcs(value)
    else:
        assert jcs(value) == expected


def test_jcs_sorts_keys_outside_the_basic_plane_by_utf16_code_units() -> None:
    # U+1F600 is D83D DE00 in UTF-16, before U+FF61; in UTF-8 (and code points) after it.
    assert jcs({"\uff61": 1, "\U0001f600": 2}) == rfc8785.dumps({"\uff61": 1, "\U0001f600": 2})
    assert jcs({"\uff61": 1, "\U0001f600": 2}).index("\U0001f600".encode()) < 4


def test_jcs_refuses_integers_outside_the_i_json_range() -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        jcs({"n": 2**53})


def test_jcs_refuses_a_lone_surrogate_even_in_a_plain_document() -> None:
    """Strings JCS cannot encode as UTF-8 are refused by every path (orjson's refusal falls
    back to rfc8785, which says why)."""
    with pytest.raises(rfc8785.CanonicalizationError):
        jcs({"model": "\ud800"})
