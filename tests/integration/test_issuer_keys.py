"""An external issuer's keys (``api/issuer_keys.py``): a ``jwks_uri`` given by the operator
may be a file; one found in the issuer's metadata must be http(s), so a remote document never
makes the server read a file of its own; a ``jwks_uri`` that is not a URL is the issuer's
failure, not the server's."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey, KeySet

from api.issuer_keys import DISCOVERY_PATH, IssuerKeys
from ledger.domain.errors import LedgerError


class IssuerDown(LedgerError):
    code = "issuer_down"


class Issuer:
    """A loopback issuer whose metadata names ``jwks_uri``."""

    def __init__(self) -> None:
        self.jwks_uri = ""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != DISCOVERY_PATH:
                    self.send_error(404)
                    return
                body = json.dumps({"issuer": outer.url, "jwks_uri": outer.jwks_uri}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    served = Issuer()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    key_set = KeySet([ECKey.generate_key("P-256")])
    path.write_text(json.dumps(key_set.as_dict(private=False)))
    return path


def _keys(keys: IssuerKeys) -> KeySet:
    return asyncio.run(keys.keys())


def test_a_jwks_uri_the_operator_gives_may_be_a_file(jwks_file: Path) -> None:
    keys = IssuerKeys(jwks_uri=jwks_file.as_uri(), failure=IssuerDown)
    assert len(_keys(keys).keys) == 1


def test_a_file_named_by_the_issuers_metadata_is_not_read(issuer: Issuer, jwks_file: Path) -> None:
    issuer.jwks_uri = jwks_file.as_uri()
    with pytest.raises(IssuerDown, match="not http"):
        _keys(IssuerKeys(issuer=issuer.url, failure=IssuerDown))


def test_a_jwks_uri_that_is_not_a_url_is_the_issuers_failure(issuer: Issuer) -> None:
    issuer.jwks_uri = "http://[127.0.0.1"
    with pytest.raises(IssuerDown):
        _keys(IssuerKeys(issuer=issuer.url, failure=IssuerDown))
