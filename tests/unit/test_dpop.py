"""DPoP proof checks (RFC 9449 section 4.3) and the per-replica replay cache."""

from __future__ import annotations

import json

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, OctKey

from ledger.signing.dpop import ProofInvalid, ReplayCache, VerifiedProof, verify_dpop

NOW = 1_800_000_000.0
KEY = ECKey.generate_key("P-256")


def proof(header: dict[str, object] | None = None, **claims: object) -> str:
    protected = {"alg": "ES256", "typ": "dpop+jwt", "jwk": KEY.as_dict(private=False)}
    protected.update(header or {})
    body = {"htm": "POST", "htu": "https://api.example.com/x", "iat": NOW, "jti": "j-1"}
    body.update(claims)
    return jws.serialize_compact(protected, json.dumps(body).encode(), KEY)


def check(token: str, htu: str = "https://api.example.com/x") -> VerifiedProof:
    return verify_dpop(token, htm="POST", htu=htu, now=NOW)


def test_a_good_proof_yields_the_thumbprint_of_its_key() -> None:
    assert check(proof()).jkt == KEY.thumbprint()


def test_htu_is_compared_without_query_and_fragment() -> None:
    assert check(proof(htu="https://API.example.com/x?a=1#f")).jti == "j-1"


def test_another_typ_is_refused() -> None:
    with pytest.raises(ProofInvalid, match="typ"):
        check(proof({"typ": "JWT"}))


def test_a_private_key_in_the_header_is_refused() -> None:
    with pytest.raises(ProofInvalid, match="public key"):
        check(proof({"jwk": KEY.as_dict(private=True)}))


def test_a_symmetric_algorithm_is_refused() -> None:
    secret = OctKey.generate_key(256)
    token = jws.serialize_compact(
        {"alg": "HS256", "typ": "dpop+jwt", "jwk": {"kty": "EC"}},
        b'{"htm":"POST"}',
        secret,
        algorithms=["HS256"],
    )
    with pytest.raises(ProofInvalid, match="alg"):
        check(token)


def test_iat_older_than_the_window_is_refused() -> None:
    with pytest.raises(ProofInvalid, match="iat"):
        check(proof(iat=NOW - 61))


def test_iat_in_the_future_beyond_the_window_is_refused() -> None:
    with pytest.raises(ProofInvalid, match="iat"):
        check(proof(iat=NOW + 61))


def test_missing_jti_is_refused() -> None:
    with pytest.raises(ProofInvalid, match="jti"):
        check(proof(jti=""))


def test_a_request_without_htm_and_htu_is_refused() -> None:
    with pytest.raises(ProofInvalid, match="htm and htu"):
        verify_dpop(proof(), htm=None, htu=None, now=NOW)


def test_the_replay_cache_accepts_a_proof_once() -> None:
    cache = ReplayCache()
    seen = check(proof())
    assert cache.first_use(seen, NOW) is True
    assert cache.first_use(seen, NOW + 1) is False


def test_the_replay_cache_forgets_proofs_after_the_window() -> None:
    cache = ReplayCache(window=120)
    cache.first_use(VerifiedProof("k", "a", NOW), NOW)
    cache.first_use(VerifiedProof("k", "b", NOW + 121), NOW + 121)
    assert len(cache) == 1


def test_a_full_replay_cache_refuses_rather_than_forgets() -> None:
    cache = ReplayCache(window=120, capacity=2)
    assert cache.first_use(VerifiedProof("k", "a", NOW), NOW)
    assert cache.first_use(VerifiedProof("k", "b", NOW), NOW)
    assert cache.first_use(VerifiedProof("k", "c", NOW), NOW) is False
    assert cache.first_use(VerifiedProof("k", "a", NOW), NOW) is False
