"""Text grammars end at the end of the text: a trailing newline is not part of any of them.

(Python's ``$`` also matches just before a final newline, so ``"5\\n"`` once passed as the
decimal 5 and ``"1.5\\n"`` reached ``int()`` and failed there; every pattern now ends in
``\\Z``.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ledger.domain.actions import is_valid_action
from ledger.domain.apikeys import api_key_id
from ledger.domain.constraints import parse_decimal
from ledger.domain.delegation import validate_jkt
from ledger.domain.errors import InvalidRequest
from ledger.domain.instants import parse_instant
from ledger.domain.metering import parse_units
from ledger.domain.resources import is_absolute_uri

JKT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def _raises(check: Callable[[], object]) -> bool:
    try:
        check()
    except InvalidRequest:
        return True
    return False


@pytest.mark.parametrize(
    ("grammar", "accepts"),
    [
        ("decimal (metering)", lambda text: parse_units(text) is not None),
        ("decimal (constraints)", lambda text: parse_decimal(text) is not None),
        ("action name", is_valid_action),
        ("API key name", lambda text: not _raises(lambda: api_key_id(text))),
        ("JWK thumbprint", lambda text: not _raises(lambda: validate_jkt(text))),
        ("resource URI", is_absolute_uri),
        ("RFC 3339 instant", lambda text: not _raises(lambda: parse_instant(text))),
    ],
)
def test_a_trailing_newline_is_outside_every_text_grammar(
    grammar: str, accepts: Callable[[str], bool]
) -> None:
    valid = {
        "decimal (metering)": "1.5",
        "decimal (constraints)": "1.5",
        "action name": "invoices.read",
        "API key name": "pep-1",
        "JWK thumbprint": JKT,
        "resource URI": "https://erp.example.com/invoices",
        "RFC 3339 instant": "2026-12-05T12:00:00Z",
    }[grammar]
    assert accepts(valid)
    assert not accepts(valid + "\n")
