"""A real OpenID Provider for tests: a threaded HTTP server on loopback that serves
``/.well-known/openid-configuration`` and its JWKS, and signs tokens with joserfc."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

JWKS_PATH = "/jwks.json"


def new_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig"}, private=True)


@dataclass
class OidcIssuer:
    url: str
    key: ECKey

    def token(
        self, *, now: datetime, key: ECKey | None = None, typ: str | None = None, **claims: Any
    ) -> str:
        """A signed token (header ``typ`` if given); ``claims`` override the defaults."""
        issued = int(now.timestamp())
        payload: dict[str, Any] = {
            "iss": self.url,
            "sub": "alice",
            "iat": issued,
            "exp": issued + 300,
            **claims,
        }
        signer = key or self.key
        header = {"alg": "ES256", "kid": signer.kid}
        if typ is not None:
            header["typ"] = typ
        return jwt.encode(header, payload, signer)

    def unsigned(self, *, now: datetime, **claims: Any) -> str:
        """The same claims with ``alg: none`` and no signature."""
        signed = self.token(now=now, **claims)
        header = _b64(json.dumps({"alg": "none", "kid": self.key.kid}).encode())
        return f"{header}.{signed.split('.')[1]}."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@contextmanager
def serve_issuer() -> Iterator[OidcIssuer]:
    """An issuer at ``http://127.0.0.1:<port>`` until the block ends."""
    key = new_key("issuer-key-1")
    state: dict[str, OidcIssuer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer = state["issuer"]
            if self.path == "/.well-known/openid-configuration":
                body: dict[str, Any] = {"issuer": issuer.url, "jwks_uri": issuer.url + JWKS_PATH}
            elif self.path == JWKS_PATH:
                body = {"keys": [issuer.key.as_dict(private=False)]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["issuer"] = OidcIssuer(url=f"http://127.0.0.1:{server.server_port}", key=key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["issuer"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
