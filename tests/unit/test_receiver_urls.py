"""Receiver URLs (an SSF push endpoint, an access request's callback) that ``urlsplit``
itself refuses are refused as bad input, not a server error."""

from __future__ import annotations

import pytest

from ledger.domain.callbacks import CallbackRefused, parse_callback
from ledger.domain.errors import InvalidRequest
from ledger.domain.streams import PUSH, validate_receiver_config

NOT_URLS = ["https://[::1", "https://[zz]/events", "https://[1.2.3.4.5]/events"]


@pytest.mark.parametrize("url", NOT_URLS)
def test_a_push_endpoint_that_is_not_a_url_is_invalid(url: str) -> None:
    with pytest.raises(InvalidRequest, match="https URL"):
        validate_receiver_config(
            {"delivery": {"method": PUSH, "endpoint_url": url}}, allow_http_loopback=True
        )


@pytest.mark.parametrize("url", NOT_URLS)
def test_a_callback_endpoint_that_is_not_a_url_is_refused(url: str) -> None:
    with pytest.raises(CallbackRefused):
        parse_callback(url, None, None)
