"""Integrity anchors: RFC 8785 (JCS) canonical JSON, SHA-256, ``sha-256:`` + base64url.

An anchor hashes an *envelope* ``{"iss": issuer, "typ": object kind, "value": object}`` so
the same object committed by two issuers, or as two kinds, never shares a digest. Values are
hashed exactly as submitted: URI normalisation is for comparison only, never for hashing.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
import rfc8785

DIGEST_PREFIX = "sha-256:"

TYP_INTENT = "mission-intent"
TYP_PROPOSAL = "mission-proposed-authority"
TYP_AUTHORITY_SET = "mission-authority-set"
TYP_ENTRY = "mission-authority-entry"


def _plain(value: object) -> object:
    """Turn any ``Mapping`` into a ``dict`` and any tuple into a list, recursively."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


#: The largest integer magnitude I-JSON (RFC 7493) allows, which JCS serialises exactly.
_SAFE_INTEGER = 2**53 - 1


def _sorted_orjson_is_jcs(value: object) -> bool:
    """Whether orjson's sorted-keys output of ``value`` is exactly its JCS form.

    It is for plain dicts with ASCII keys (sorted by UTF-16 code units in JCS, by bytes in
    orjson: the same order for ASCII), lists, strings (both escape only ``"``, ``\\`` and
    control characters, in the same notation, and write everything else as UTF-8), booleans,
    null and integers within the I-JSON range. Floats (JCS writes them the ECMAScript way,
    e.g. ``1`` for ``1.0``) and anything else take the reference implementation.
    """
    kind = type(value)
    if kind is str:
        return True
    if kind is dict:
        assert isinstance(value, dict)
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            if type(item) is not str and not _sorted_orjson_is_jcs(item):
                return False
        return True
    if kind is list:
        assert isinstance(value, list)
        return all(map(_sorted_orjson_is_jcs, value))
    if kind is bool or value is None:
        return True
    if kind is int:
        assert isinstance(value, int)
        return -_SAFE_INTEGER <= value <= _SAFE_INTEGER
    return False


def jcs(value: object) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value.

    Values orjson serialises exactly as JCS does (see ``_sorted_orjson_is_jcs``; a request on
    the decision path) are serialised by orjson, about five times faster; everything else by
    the reference implementation ``rfc8785`` (tests/unit/test_canonical.py holds the two to
    the same output).

    Raises ``rfc8785.CanonicalizationError`` (and its subclasses) for values JCS cannot
    represent: non-finite floats, integers outside the I-JSON range, non-string keys.
    """
    if _sorted_orjson_is_jcs(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate: the reference implementation says what is wrong
    plain: Any = _plain(value)  # rfc8785 types its input as a JSON-value union
    encoded: bytes = rfc8785.dumps(plain)
    return encoded


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 4648 section 5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sha256_b64url(data: bytes) -> str:
    """The bare base64url SHA-256 of some bytes (no ``sha-256:`` prefix)."""
    return b64url(hashlib.sha256(data).digest())


def raw_digest(value: object) -> str:
    """``sha-256:`` + base64url(SHA-256(JCS(value))): a digest of an object with no envelope."""
    return DIGEST_PREFIX + sha256_b64url(jcs(value))


def envelope(typ: str, iss: str, value: object) -> dict[str, object]:
    """The object an integrity anchor hashes."""
    return {"iss": iss, "typ": typ, "value": value}


def anchor(typ: str, iss: str, value: object) -> str:
    """``sha-256:`` + base64url(SHA-256(JCS({"iss", "typ", "value"}))), as the drafts define."""
    return raw_digest(envelope(typ, iss, value))


def intent_hash(iss: str, intent_json: object) -> str:
    """The anchor of an approved Mission Intent (as submitted)."""
    return anchor(TYP_INTENT, iss, intent_json)


def proposal_hash(iss: str, proposal_entries_json: object) -> str:
    """The anchor of the client's proposed ``authorization_details`` (as submitted)."""
    return anchor(TYP_PROPOSAL, iss, proposal_entries_json)


def authority_hash(iss: str, entries_json: object) -> str:
    """The anchor of the Authority Set the approver consented to."""
    return anchor(TYP_AUTHORITY_SET, iss, entries_json)


def entry_digest(iss: str, entry_json: object) -> str:
    """The anchor of one Authority Set entry (discharge, containment and evidence name it)."""
    return anchor(TYP_ENTRY, iss, entry_json)
