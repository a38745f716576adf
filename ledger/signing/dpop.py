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
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwk import GuestProtocol, Key

from ledger.signing.algorithms import SUPPORTED_ALGS, jose_verification_key, jwk_thumbprint
from ledger.signing.algorithms import jws_registry as _registry

DPOP_TYP: Final = "dpop+jwt"
MAX_AGE_SECONDS: Final = 60
MAX_PROOF_BYTES: Final = 8_192
MAX_JTI_LENGTH: Final = 256

_REGISTRY = _registry(SUPPORTED_ALGS)


class ProofInvalid(ValueError):
    """The proof does not show possession of a key (the message says which check failed)."""


@dataclass(frozen=True)
class VerifiedProof:
    jkt: str
    jti: str
    iat: float


def normalise_htu(value: str) -> str:
    """RFC 9449 section 4.3: compare ``htu`` without query and fragment (scheme and host
    case-insensitive)."""
    parts = urlsplit(value)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", "", ""))


def verify_dpop(token: object, *, htm: object, htu: object, now: float) -> VerifiedProof:
    """Check a DPoP proof for a request ``htm htu`` at ``now`` (seconds since the epoch)."""
    if not isinstance(token, str) or len(token) > MAX_PROOF_BYTES or token.count(".") != 2:
        raise ProofInvalid("context.proof.dpop must be a compact JWS")
    if not isinstance(htm, str) or not htm or not isinstance(htu, str) or not htu:
        raise ProofInvalid("context.proof needs htm and htu: the request the proof was sent with")
    proven: list[str] = []

    def holder_key(guest: GuestProtocol) -> Key:
        header = guest.headers()
        if header.get("typ") != DPOP_TYP:
            raise ProofInvalid(f"a DPoP proof has typ {DPOP_TYP!r}")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or "d" in jwk or not isinstance(jwk.get("kty"), str):
            raise ProofInvalid("a DPoP proof carries its public key (jwk) in the header")
        key, jkt = _key(jwk)
        proven.append(jkt)
        return key

    try:
        verified = jws.deserialize_compact(
            token, holder_key, algorithms=SUPPORTED_ALGS, registry=_REGISTRY
        )
        claims: Any = json.loads(verified.payload)
    except ProofInvalid:
        raise
    except UnsupportedAlgorithmError as error:
        msg = f"DPoP alg must be one of {', '.join(SUPPORTED_ALGS)}"
        raise ProofInvalid(msg) from error
    except (JoseError, ValueError, TypeError, KeyError, UnicodeError) as error:
        raise ProofInvalid("the DPoP proof's signature does not verify") from error
    if not isinstance(claims, dict):
        raise ProofInvalid("the DPoP proof's payload is not a JSON object")
    if claims.get("htm") != htm:
        raise ProofInvalid("the DPoP proof was made for another HTTP method (htm)")
    proven_htu = claims.get("htu")
    if not isinstance(proven_htu, str) or normalise_htu(proven_htu) != normalise_htu(htu):
        raise ProofInvalid("the DPoP proof was made for another URL (htu)")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise ProofInvalid("the DPoP proof has no iat")
    if abs(now - iat) > MAX_AGE_SECONDS:
        raise ProofInvalid(f"the DPoP proof's iat is more than {MAX_AGE_SECONDS} s from now")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise ProofInvalid("the DPoP proof has no usable jti")
    return VerifiedProof(jkt=proven[0], jti=jti, iat=float(iat))


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
        self._lock = threading.Lock()

    def first_use(self, proof: VerifiedProof, now: float) -> bool:
        """Record ``proof``; False when it was seen before (a replay) or the cache is full
        of proofs that are all still inside the window (refused rather than forgotten)."""
        key = f"{proof.jkt}:{proof.jti}"
        with self._lock:
            if key in self._seen:
                return False
            if now >= self._next_sweep or len(self._seen) >= self._capacity:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
                self._next_sweep = now + self._window
                if len(self._seen) >= self._capacity:
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
