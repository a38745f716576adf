"""The digest of a request sent with a nonce (``ledger.application.base.fingerprint``)."""

from __future__ import annotations

import pytest

from ledger.application.base import fingerprint
from ledger.domain.errors import InvalidRequest


def test_the_same_request_has_the_same_fingerprint_whatever_its_member_order() -> None:
    assert fingerprint({"a": 1, "b": "x"}) == fingerprint({"b": "x", "a": 1})


def test_a_request_jcs_cannot_represent_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="RFC 8785"):
        fingerprint({"expected_version": 2**60})
