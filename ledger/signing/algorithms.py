"""The signature algorithms Mission Ledger signs with, and the keys for them.

Three algorithms, each tied to one key type (SPEC decision 7):

* ``ES256``: ECDSA on P-256 with SHA-256, the default for Mandates and Mission Status;
* ``EdDSA``: Ed25519, written ``alg: EdDSA`` because several verifiers still reject
  RFC 9864's ``Ed25519`` name;
* ``RS256``: RSA 2048 PKCS#1 v1.5, for the CAEP interoperability profile of SETs.

``none`` and every symmetric algorithm are refused everywhere. A key's ``kid`` is
its RFC 7638 JWK thumbprint (SHA-256, base64url), so it is unique and anyone can
recompute it from the published key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Collection, Mapping
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.errors import UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import ECKey, JWKRegistry, Key, KeyParameters, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

ES256: Final = "ES256"
EDDSA: Final = "EdDSA"
RS256: Final = "RS256"
SUPPORTED_ALGS: Final[tuple[str, ...]] = (ES256, EDDSA, RS256)

RSA_KEY_BITS: Final = 2048
RSA_PUBLIC_EXPONENT: Final = 65537

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

# RFC 7638 section 3.2: the required members of each key type, in the thumbprint input.
_REQUIRED_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


class UnsupportedAlgorithm(ValueError):
    """An ``alg`` Mission Ledger does not sign or verify with (``none``, HMAC, unknown)."""


def check_alg(alg: str) -> str:
    """Return ``alg`` when it is one of ``SUPPORTED_ALGS``, else raise ``UnsupportedAlgorithm``."""
    if alg not in SUPPORTED_ALGS:
        msg = f"unsupported signing algorithm {alg!r}; use one of {', '.join(SUPPORTED_ALGS)}"
        raise UnsupportedAlgorithm(msg)
    return alg


def generate_private_key(alg: str) -> PrivateKey:
    """A fresh private key for ``alg`` (P-256, Ed25519 or RSA 2048)."""
    check_alg(alg)
    if alg == ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if alg == EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)


def private_key_to_der(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER: the plaintext that ``sealing`` encrypts. Never store it as is."""
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(der: bytes, alg: str) -> PrivateKey:
    """Parse PKCS#8 DER and check that the key is the right type for ``alg``."""
    check_alg(alg)
    key = serialization.load_der_private_key(der, password=None)
    if isinstance(key, PrivateKey) and key_matches_alg(key, alg):
        return key
    msg = f"the stored private key is not a {alg} key"
    raise ValueError(msg)


def key_matches_alg(key: object, alg: str) -> bool:
    if alg == ES256:
        return isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    if alg == EDDSA:
        return isinstance(key, ed25519.Ed25519PrivateKey)
    if alg == RS256:
        return isinstance(key, rsa.RSAPrivateKey) and key.key_size >= RSA_KEY_BITS
    return False


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64url(value.to_bytes(size, "big"))


def public_members(key: PrivateKey) -> dict[str, str]:
    """The RFC 7638 required public members of ``key`` (no ``kid``, ``use`` or ``alg``)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = key.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": _uint(numbers.x, 32), "y": _uint(numbers.y, 32)}
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(key.public_key().public_bytes_raw())}
    numbers_rsa = key.public_key().public_numbers()
    return {"kty": "RSA", "n": _uint(numbers_rsa.n), "e": _uint(numbers_rsa.e)}


def jwk_thumbprint(jwk: Mapping[str, object]) -> str:
    """RFC 7638 JWK SHA-256 thumbprint, base64url without padding."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _REQUIRED_MEMBERS:
        msg = f"cannot compute a thumbprint for key type {kty!r}"
        raise ValueError(msg)
    missing = [name for name in _REQUIRED_MEMBERS[kty] if name not in jwk]
    if missing:
        msg = f"an {kty} key needs {', '.join(missing)} for its thumbprint"
        raise ValueError(msg)
    members = {name: jwk[name] for name in _REQUIRED_MEMBERS[kty]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwk(key: PrivateKey, alg: str) -> dict[str, str]:
    """The JWK to publish: public members plus ``kid`` (thumbprint), ``use: sig`` and ``alg``."""
    check_alg(alg)
    if not key_matches_alg(key, alg):
        msg = f"a {type(key).__name__} cannot sign {alg}"
        raise ValueError(msg)
    members = public_members(key)
    return {**members, "kid": jwk_thumbprint(members), "use": "sig", "alg": alg}


def jose_signing_key(key: PrivateKey, jwk: Mapping[str, str]) -> Key:
    """A joserfc private key carrying the ``kid``, ``use`` and ``alg`` of its public JWK."""
    parameters: KeyParameters = {"kid": jwk["kid"], "use": "sig", "alg": jwk["alg"]}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ECKey(key, key, parameters)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return OKPKey(key, key, parameters)
    return RSAKey(key, key, parameters)


def jose_verification_key(jwk: Mapping[str, str]) -> Key:
    """A joserfc public key imported from a published JWK."""
    return JWKRegistry.import_key(dict(jwk))


class _LedgerJWSRegistry(JWSRegistry):
    """A JWS registry pinned to an allowlist drawn from ``SUPPORTED_ALGS``.

    joserfc warns (``SecurityWarning``) whenever ``EdDSA`` is looked up, because RFC
    9864 deprecates the name. Mission Ledger writes ``EdDSA`` on purpose (SPEC
    decision 7), so this registry skips exactly that warning instead of wrapping
    every call in ``warnings.catch_warnings()``, which is not thread-safe on
    Python 3.11 and the server signs from worker threads.
    """

    def get_alg(self, name: str) -> JWSAlgModel:
        if name not in SUPPORTED_ALGS or not self.allowed or name not in self.allowed:
            msg = f"Algorithm of '{name}' is not allowed"
            raise UnsupportedAlgorithmError(msg)
        if name == EDDSA:
            return self.algorithms[name]
        return super().get_alg(name)


def jws_registry(algorithms: Collection[str]) -> JWSRegistry:
    """A joserfc registry that accepts only ``algorithms`` (each must be supported).

    Header members outside the JOSE registry are allowed (callers set ``typ`` and
    may add their own); ``crit`` is still enforced.
    """
    allowed = [check_alg(alg) for alg in algorithms]
    if not allowed:
        msg = "at least one algorithm must be allowed"
        raise UnsupportedAlgorithm(msg)
    return _LedgerJWSRegistry(algorithms=allowed, strict_check_header=False)
