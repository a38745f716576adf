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


#: The I-JSON integer range (RFC 7493), which JCS serialises as plain decimals.
_MAX_SAFE_INTEGER = 2**53 - 1


class _NotSimple(Exception):
    """A value outside the subset ``_simple`` serialises (control flow only)."""


def _simple(value: object) -> object:
    """``value`` as plain dicts and lists, when it holds only strings, booleans, nulls,
    integers of the I-JSON range, and objects whose keys are ASCII; else ``_NotSimple``.

    For that subset the RFC 8785 form is exactly what orjson writes with sorted keys:
    keys sort by code unit, which for ASCII is byte order; strings escape ``"``, ``\\``
    and control characters alike (short escapes, else lowercase ``\\u00xx``) and keep
    everything else as UTF-8; integers are plain decimals. Floats, whose ECMAScript form
    differs from orjson's, are left to the reference implementation."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return value
    if kind is dict:  # the common case, without the abstract-class check below
        out = {}
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not key.isascii():
                raise _NotSimple
            leaf = type(item)
            # String, null and boolean members inline: most members are leaves, and a call
            # per leaf was most of the cost of hashing a decision's binding.
            out[key] = item if leaf is str or item is None or leaf is bool else _simple(item)
        return out
    if isinstance(value, str | bool):  # subclasses
        return value
    if isinstance(value, int):
        if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
            return value
        raise _NotSimple
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise _NotSimple
            out[key] = _simple(item)
        return out
    if isinstance(value, list | tuple):
        return [_simple(item) for item in value]
    raise _NotSimple


def _json_plain(value: object) -> bool:
    """Whether ``value`` is already in ``_simple``'s subset *and* made only of ``dict``,
    ``list``, ``str``, ``int``, ``bool`` and ``None`` (a parsed JSON document, such as a
    decision's request): then orjson writes it as it is, with nothing copied."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not key.isascii():
                return False
            leaf = type(item)
            if not (leaf is str or item is None or leaf is bool or _json_plain(item)):
                return False
        return True
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER  # type: ignore[operator]
    if kind is list:
        return all(_json_plain(item) for item in value)  # type: ignore[attr-defined]
    return False


def jcs(value: object) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value.

    Decision-time bindings hash long strings (a Mandate token) on the hot path, and the
    reference implementation (``rfc8785``) escapes strings one character at a time: values
    in the subset ``_simple`` describes are written by orjson instead (the same bytes,
    checked against ``rfc8785`` by property tests), everything else by ``rfc8785``.

    Raises ``rfc8785.CanonicalizationError`` (and its subclasses) for values JCS cannot
    represent: non-finite floats, integers outside the I-JSON range, non-string keys.
    """
    try:
        fast: bytes = orjson.dumps(
            value if _json_plain(value) else _simple(value), option=orjson.OPT_SORT_KEYS
        )
    except (_NotSimple, orjson.JSONEncodeError):
        plain: Any = _plain(value)  # rfc8785 types its input as a JSON-value union
        encoded: bytes = rfc8785.dumps(plain)
        return encoded
    return fast


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
