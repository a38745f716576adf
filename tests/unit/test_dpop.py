"""DPoP proof checks (RFC 9449 section 4.3) and the per-replica replay cache."""

from __future__ import annotations

import json

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey
from joserfc.util import urlsafe_b64decode, urlsafe_b64encode

from ledger.signing.algorithms import jws_registry
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


@pytest.mark.parametrize(("proven", "requested"), [("http://[::1", None), (None, "http://[zz]/x")])
def test_an_htu_that_is_not_a_url_is_refused(proven: str | None, requested: str | None) -> None:
    token = proof() if proven is None else proof(htu=proven)
    with pytest.raises(ProofInvalid, match="htu"):
        check(token, htu=requested or "https://api.example.com/x")


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


# ---------------------------------------------------------------------- the header cache


def signed(key: Key, header: dict[str, object] | None = None, signer: Key | None = None) -> str:
    """A proof whose header carries ``key`` (public) and is signed by ``signer`` (``key``)."""
    alg = {"EC": "ES256", "OKP": "EdDSA", "RSA": "RS256"}[str(key.key_type)]
    protected = {"alg": alg, "typ": "dpop+jwt", "jwk": key.as_dict(private=False)}
    protected.update(header or {})
    body = {"htm": "POST", "htu": "https://api.example.com/x", "iat": NOW, "jti": "j-1"}
    return jws.serialize_compact(
        protected, json.dumps(body).encode(), signer or key, registry=jws_registry([alg])
    )


def tampered(token: str) -> str:
    """The same proof with its signature's first byte changed."""
    head, _, signature = token.rpartition(".")
    raw = bytearray(urlsafe_b64decode(signature.encode()))
    raw[0] ^= 0x01
    return f"{head}.{urlsafe_b64encode(bytes(raw)).decode()}"


def test_a_key_under_the_same_kid_as_a_cached_one_is_its_own_key() -> None:
    first = ECKey.generate_key("P-256", parameters={"kid": "agent-key"})
    second = ECKey.generate_key("P-256", parameters={"kid": "agent-key"})
    assert check(signed(first)).jkt == first.thumbprint()
    assert check(signed(second)).jkt == second.thumbprint()


def test_a_cached_key_never_verifies_a_proof_another_key_signed() -> None:
    holder = ECKey.generate_key("P-256", parameters={"kid": "agent-key"})
    forger = ECKey.generate_key("P-256", parameters={"kid": "agent-key"})
    check(signed(holder))  # the holder's header is now cached
    with pytest.raises(ProofInvalid, match="signature"):
        check(signed(holder, signer=forger))


@pytest.mark.parametrize(
    "key",
    [ECKey.generate_key("P-256"), OKPKey.generate_key("Ed25519"), RSAKey.generate_key(2048)],
    ids=["ES256", "EdDSA", "RS256"],
)
def test_every_supported_algorithm_verifies_and_refuses_a_tampered_signature(key: Key) -> None:
    token = signed(key)
    assert check(token).jkt == key.thumbprint()
    with pytest.raises(ProofInvalid, match="signature"):
        check(tampered(token))


def test_an_es256_signature_of_the_wrong_length_is_refused() -> None:
    head, _, signature = proof().rpartition(".")
    longer = urlsafe_b64encode(urlsafe_b64decode(signature.encode()) + b"\0").decode()
    with pytest.raises(ProofInvalid, match="signature"):
        check(f"{head}.{longer}")


@pytest.mark.parametrize(
    "members",
    [{"use": "enc"}, {"alg": "ES384"}, {"key_ops": ["sign"]}],
    ids=["use-enc", "other-alg", "no-verify-op"],
)
def test_a_key_not_meant_for_verifying_this_algorithm_is_refused(
    members: dict[str, object],
) -> None:
    key = ECKey.generate_key("P-256")
    jwk = {**key.as_dict(private=False), **members}
    with pytest.raises(ProofInvalid, match="signature"):
        check(signed(key, {"jwk": jwk}))


@pytest.mark.parametrize(
    "header",
    [{"crit": ["b64"], "b64": True}, {"b64": False, "crit": ["b64"]}],
    ids=["crit", "unencoded-payload"],
)
def test_a_header_with_extensions_is_refused(header: dict[str, object]) -> None:
    with pytest.raises(ProofInvalid, match="no crit"):
        check(signed(ECKey.generate_key("P-256"), header))


def test_a_refused_header_is_refused_every_time() -> None:
    token = proof({"typ": "JWT"})
    for _ in range(2):
        with pytest.raises(ProofInvalid, match="typ"):
            check(token)


def test_a_full_replay_cache_sweeps_at_most_once_a_second() -> None:
    cache = ReplayCache(window=120, capacity=2)
    assert cache.first_use(VerifiedProof("k", "a", NOW), NOW)
    assert cache.first_use(VerifiedProof("k", "b", NOW + 0.5), NOW + 0.5)
    # "a" expires at NOW + 120; the cache is full just after: refused until the next sweep
    assert cache.first_use(VerifiedProof("k", "c", NOW + 120.2), NOW + 120.2) is True
    assert cache.first_use(VerifiedProof("k", "d", NOW + 120.3), NOW + 120.3) is False
    assert cache.first_use(VerifiedProof("k", "e", NOW + 120.6), NOW + 120.6) is False
    # "b" expired at NOW + 120.5, but a full cache sweeps again only a second later
    assert cache.first_use(VerifiedProof("k", "f", NOW + 121.3), NOW + 121.3) is True
