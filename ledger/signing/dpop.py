"""DPoP proofs (RFC 9449) presented to the decision point as proof of key possession.

A PEP that received a DPoP-protected request may pass the proof itself at
``context.proof.dpop`` (with the method and URL it was received on at ``htm``/``htu``)
instead of the thumbprint it verified: the decision point then checks the proof
(signature with the key in its header, ``typ``, ``htm``, ``htu``, ``iat`` within the
window, ``jti`` never seen before within that window) and compares the key's RFC 7638
thumbprint with the Mandate's ``cnf.jkt``.

No I/O and no clock reads: ``now`` is passed in. The replay cache is per process (each
replica keeps its own): a proof replayed to another replica within the window is caught
only there if it reaches the same replica; PEPs that need global single use send the
proof to one replica, as RFC 9449 section 11.1 leaves replay detection to each server.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import Key
from joserfc.util import urlsafe_b64decode

from ledger.signing.algorithms import (
    EDDSA,
    ES256,
    SUPPORTED_ALGS,
    jose_verification_key,
    jwk_thumbprint,
)
from ledger.signing.algorithms import jws_registry as _registry

DPOP_TYP: Final = "dpop+jwt"
MAX_AGE_SECONDS: Final = 60
MAX_PROOF_BYTES: Final = 8_192
MAX_JTI_LENGTH: Final = 256
BAD_SIGNATURE: Final = "the DPoP proof's signature does not verify"

_REGISTRY = _registry(SUPPORTED_ALGS)
# A proof's header carries the holder's public key: an RSA 2048 JWK alone is larger than
# joserfc's default header bound (512 bytes), which refused every RS256 proof. The whole
# proof is bounded by MAX_PROOF_BYTES before anything is decoded.
_REGISTRY.max_header_length = MAX_PROOF_BYTES


class ProofInvalid(ValueError):
    """The proof does not show possession of a key (the message says which check failed)."""


@dataclass(frozen=True)
class VerifiedProof:
    jkt: str
    jti: str
    iat: float


@lru_cache(maxsize=1_024)
def normalise_htu(value: str) -> str:
    """RFC 9449 section 4.3: compare ``htu`` without query and fragment (scheme and host
    case-insensitive)."""
    parts = urlsplit(value)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", "", ""))


def _url(value: str) -> str | None:
    """``normalise_htu``, or None for a text ``urlsplit`` refuses (a bracketed host that is
    not an IP address, an unclosed bracket)."""
    try:
        return normalise_htu(value)
    except ValueError:
        return None


def verify_dpop(token: object, *, htm: object, htu: object, now: float) -> VerifiedProof:
    """Check a DPoP proof for a request ``htm htu`` at ``now`` (seconds since the epoch)."""
    holder, signing_input, signature, claims = _parts(token, htm, htu)
    if not _verifies(holder, signing_input, signature):
        raise ProofInvalid(BAD_SIGNATURE)
    return _checked(claims, holder, htm, htu, now)


@dataclass(frozen=True)
class ReadProof:
    """A DPoP proof whose header and claims are checked, all but its signature: for a
    caller that has the signature checked elsewhere (``signature_verifies``) while it goes
    on. ``proof`` holds only once the signature verifies."""

    token: str
    header_segment: str
    signing_input: bytes
    signature: bytes
    proof: VerifiedProof


def read_dpop(token: object, *, htm: object, htu: object, now: float) -> ReadProof:
    """Every check of ``verify_dpop`` but the signature's (ProofInvalid names the failed one)."""
    holder, signing_input, signature, claims = _parts(token, htm, htu)
    assert isinstance(token, str)  # _parts refuses anything else
    return ReadProof(
        token=token,
        header_segment=token[: token.index(".")],
        signing_input=signing_input,
        signature=signature,
        proof=_checked(claims, holder, htm, htu, now),
    )


def signature_verifies(header_segment: str, signing_input: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``signing_input`` verifies with the key of the proof
    header ``header_segment`` (False too when the header is not a DPoP proof's)."""
    try:
        return _verifies(_holder(header_segment), signing_input, signature)
    except ProofInvalid:
        return False


def _verifies(holder: _Holder, signing_input: bytes, signature: bytes) -> bool:
    try:
        return holder.verifies(signing_input, signature)
    except (JoseError, ValueError, TypeError) as error:  # joserfc's algorithms: a bad signature
        raise ProofInvalid(BAD_SIGNATURE) from error


def _parts(token: object, htm: object, htu: object) -> tuple[_Holder, bytes, bytes, Any]:
    """A proof's checked header, signing input, signature and (decoded) claims."""
    if not isinstance(token, str) or len(token) > MAX_PROOF_BYTES or token.count(".") != 2:
        raise ProofInvalid("context.proof.dpop must be a compact JWS")
    if not isinstance(htm, str) or not htm or not isinstance(htu, str) or not htu:
        raise ProofInvalid("context.proof needs htm and htu: the request the proof was sent with")
    header_segment, payload_segment, signature_segment = token.split(".")
    holder = _holder(header_segment)
    try:
        signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
        signature = urlsafe_b64decode(signature_segment.encode("ascii"))
        claims: Any = orjson.loads(urlsafe_b64decode(payload_segment.encode("ascii")))
    except (JoseError, ValueError, TypeError, UnicodeError) as error:
        raise ProofInvalid(BAD_SIGNATURE) from error
    return holder, signing_input, signature, claims


def _checked(claims: Any, holder: _Holder, htm: object, htu: object, now: float) -> VerifiedProof:
    """The proof the claims describe, once they fit the request ``htm htu`` at ``now``."""
    assert isinstance(htu, str)  # _parts refuses anything else
    if not isinstance(claims, dict):
        raise ProofInvalid("the DPoP proof's payload is not a JSON object")
    if claims.get("htm") != htm:
        raise ProofInvalid("the DPoP proof was made for another HTTP method (htm)")
    proven_htu = claims.get("htu")
    if not isinstance(proven_htu, str) or _url(proven_htu) != _url(htu) or _url(htu) is None:
        raise ProofInvalid("the DPoP proof was made for another URL (htu)")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise ProofInvalid("the DPoP proof has no iat")
    if abs(now - iat) > MAX_AGE_SECONDS:
        raise ProofInvalid(f"the DPoP proof's iat is more than {MAX_AGE_SECONDS} s from now")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise ProofInvalid("the DPoP proof has no usable jti")
    return VerifiedProof(jkt=holder.jkt, jti=jti, iat=float(iat))


Verifier = Callable[[bytes, bytes], bool]  # (signing input, signature) -> valid


@dataclass(frozen=True)
class _Holder:
    """What a proof's protected header says, checked: how to verify its signature with the
    public key it carries (imported once), and that key's RFC 7638 thumbprint."""

    verifies: Verifier
    jkt: str


def _verifier(alg: JWSAlgModel, key: Key) -> Verifier:
    """Signature verification for ``alg`` with ``key``, whose fitness for it (type, curve,
    ``use``, ``alg``, ``key_ops``) is already checked. ES256 and EdDSA go straight to
    ``cryptography`` on the key object (RFC 7518 3.4: ``r || s``, 32 bytes each, for P-256);
    anything else through joserfc's algorithm."""
    native = key.get_op_key("verify")
    if alg.name == ES256 and isinstance(native, ec.EllipticCurvePublicKey):
        ecdsa = ec.ECDSA(hashes.SHA256())

        def es256(signing_input: bytes, signature: bytes) -> bool:
            if len(signature) != _P256_SIGNATURE_BYTES:
                return False
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            try:
                native.verify(encode_dss_signature(r, s), signing_input, ecdsa)
            except InvalidSignature:
                return False
            return True

        return es256
    if alg.name == EDDSA and isinstance(native, ed25519.Ed25519PublicKey):

        def ed25519_verifies(signing_input: bytes, signature: bytes) -> bool:
            try:
                native.verify(signature, signing_input)
            except InvalidSignature:
                return False
            return True

        return ed25519_verifies
    return lambda signing_input, signature: alg.verify(signing_input, signature, key)


_P256_SIGNATURE_BYTES: Final = 64


@lru_cache(maxsize=4_096)
def _holder(header_segment: str) -> _Holder:
    """The checked header of a proof, remembered by its exact (base64url) text: an agent
    sends the same header with every proof, so each is parsed, checked and its key imported
    once. The text is the whole header (key members included), so a proof whose header
    names another key — even under the same ``kid`` — is another entry; a header that
    fails a check raises and is not remembered."""
    try:
        # The header alone, as joserfc reads a compact JWS (size, base64url, JSON, alg).
        compact = f"{header_segment}..".encode("ascii")
        header = jws.extract_compact(compact, registry=_REGISTRY).headers()
        _REGISTRY.check_header(header)  # crit, and the registered members' types
    except (JoseError, ValueError, TypeError, UnicodeError) as error:
        raise ProofInvalid("the DPoP proof's header is not a JWS header") from error
    if header.get("typ") != DPOP_TYP:
        raise ProofInvalid(f"a DPoP proof has typ {DPOP_TYP!r}")
    try:
        alg = _REGISTRY.get_alg(str(header["alg"]))
    except UnsupportedAlgorithmError as error:
        msg = f"DPoP alg must be one of {', '.join(SUPPORTED_ALGS)}"
        raise ProofInvalid(msg) from error
    if "crit" in header or header.get("b64", True) is not True:
        raise ProofInvalid("a DPoP proof is a JWT: no crit, its payload base64url-encoded")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or "d" in jwk or not isinstance(jwk.get("kty"), str):
        raise ProofInvalid("a DPoP proof carries its public key (jwk) in the header")
    try:
        key, jkt = _key(jwk)
        alg.check_key(key)  # key type, curve, "use" and "alg" of the key fit the algorithm
        return _Holder(verifies=_verifier(alg, key), jkt=jkt)  # key_ops must allow verify
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise ProofInvalid(BAD_SIGNATURE) from error


@lru_cache(maxsize=4_096)
def _imported(members: str) -> tuple[Key, str]:
    jwk = json.loads(members)
    return jose_verification_key(jwk), jwk_thumbprint(jwk)


def _key(jwk: dict[str, Any]) -> tuple[Key, str]:
    """The joserfc key and RFC 7638 thumbprint of a proof's ``jwk`` (an agent signs every
    proof with the same key, so both are remembered, keyed by the canonical members)."""
    return _imported(json.dumps(jwk, sort_keys=True, separators=(",", ":")))


class ReplayCache:
    """The ``jti`` of every proof accepted within the window, per key (bounded)."""

    def __init__(self, *, window: float = 2 * MAX_AGE_SECONDS, capacity: int = 200_000) -> None:
        self._window = window
        self._capacity = capacity
        self._seen: dict[str, float] = {}
        self._next_sweep = 0.0
        self._full_sweep_after = 0.0
        self._lock = threading.Lock()

    def first_use(self, proof: VerifiedProof, now: float) -> bool:
        """Record ``proof``; False when it was seen before (a replay) or the cache is full
        of proofs that are all still inside the window (refused rather than forgotten).

        Expired entries are swept every quarter window, and when the cache is full at most
        once a second: a full cache must not cost a sweep of every entry per proof."""
        key = f"{proof.jkt}:{proof.jti}"
        with self._lock:
            if key in self._seen:
                return False
            full = len(self._seen) >= self._capacity
            if now >= self._next_sweep or (full and now >= self._full_sweep_after):
                self._seen = {k: t for k, t in self._seen.items() if t > now}
                self._next_sweep = now + self._window / 4
                self._full_sweep_after = now + 1.0
                full = len(self._seen) >= self._capacity
            if full:
                return False
            self._seen[key] = now + self._window
            return True

    def __len__(self) -> int:
        return len(self._seen)


def proven_key(proof: object) -> str | None:
    """The thumbprint of the key a ``context.proof`` names: its ``jkt``, or the key in its
    DPoP proof's header (read, not verified: for binding a request to a key, which the
    decision point verifies when it decides). None when it names none."""
    if not isinstance(proof, Mapping):
        return None
    jkt = proof.get("jkt")
    if isinstance(jkt, str) and jkt:
        return jkt
    dpop = proof.get("dpop")
    if not isinstance(dpop, str) or dpop.count(".") != 2 or len(dpop) > MAX_PROOF_BYTES:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(dpop.split(".")[0] + "=="))
        jwk = header["jwk"]
        if not isinstance(jwk, dict) or "d" in jwk:
            return None
        return _key(jwk)[1]
    except (ValueError, KeyError, TypeError, JoseError, UnicodeError):
        return None
