"""RFC 7638 JWK thumbprints: what a Mandate's ``cnf.jkt`` holds to bind it to a key.

Used by ``mission-ledger keys thumbprint``: an agent keeps the private key and gives the
server only the thumbprint of its public half (the same for the private JWK, which has the
public members too).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry

PEM_KEY_TYPES = ("EC", "RSA", "OKP")


class KeyFileError(ValueError):
    """The text is not one asymmetric key (JWK or PEM)."""


def generate_private_jwk() -> dict[str, Any]:
    """A fresh EC P-256 private key as a JWK (``kty``, ``crv``, ``x``, ``y``, ``d``)."""
    return dict(ECKey.generate_key("P-256", private=True).as_dict(private=True))


def write_private_jwk(path: Path) -> str:
    """Write a fresh private JWK to a new file (mode 0600) and return its thumbprint.

    An existing file is never overwritten (``FileExistsError``): it may be a key in use.
    """
    jwk = generate_private_jwk()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(jwk, indent=2) + "\n")
    return thumbprint(json.dumps(jwk))


def thumbprint(text: str) -> str:
    """The RFC 7638 SHA-256 thumbprint (base64url) of one JWK or PEM key, public or private."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return _jwk_thumbprint(stripped)
    if stripped.startswith("-----BEGIN"):
        return _pem_thumbprint(stripped.encode())
    msg = "expected a JWK (a JSON object) or a PEM key"
    raise KeyFileError(msg)


def _jwk_thumbprint(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        msg = "the JWK is not valid JSON"
        raise KeyFileError(msg) from None
    if not isinstance(value, dict):
        msg = "expected a JWK (a JSON object)"
        raise KeyFileError(msg)
    if "keys" in value:
        msg = "this is a JWK set: give one key"
        raise KeyFileError(msg)
    if value.get("kty") == "oct":
        msg = "a symmetric (oct) key cannot bind a Mandate: use an EC, RSA or OKP key"
        raise KeyFileError(msg)
    try:
        return str(JWKRegistry.import_key(value).thumbprint())
    except (JoseError, ValueError, TypeError) as error:
        msg = f"not a usable JWK: {error}"
        raise KeyFileError(msg) from None


def _pem_thumbprint(data: bytes) -> str:
    for key_type in PEM_KEY_TYPES:
        try:
            return str(JWKRegistry.import_key(data, key_type).thumbprint())
        except (JoseError, ValueError, TypeError):
            continue
    msg = "not a usable PEM key (an unencrypted EC, RSA or Ed25519 public or private key)"
    raise KeyFileError(msg)
