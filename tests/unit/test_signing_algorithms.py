"""Key generation, RFC 7638 kids and the published JWK of each signing algorithm."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jws
from joserfc.errors import UnsupportedAlgorithmError
from joserfc.jwk import JWKRegistry
from jwcrypto import jwk as jwcrypto_jwk

from ledger.signing.algorithms import (
    SUPPORTED_ALGS,
    UnsupportedAlgorithm,
    check_alg,
    generate_private_key,
    jose_signing_key,
    jose_verification_key,
    jwk_thumbprint,
    jws_registry,
    load_private_key,
    private_key_to_der,
    public_jwk,
)

PUBLIC_MEMBERS = {
    "ES256": {"kty", "crv", "x", "y"},
    "EdDSA": {"kty", "crv", "x"},
    "RS256": {"kty", "n", "e"},
}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture(scope="module", params=SUPPORTED_ALGS)
def alg(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_rfc7638_thumbprint_reproduces_the_rfc_example() -> None:
    # RFC 7638 section 3.1.
    example = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
            "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj"
            "QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
            "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_a_key_missing_a_thumbprint_member_is_refused_by_name(alg: str) -> None:
    """A corrupted JWK Set in an evidence bundle is a finding, not a ``KeyError``."""
    jwk = public_jwk(generate_private_key(alg), alg)
    member = "crv" if "crv" in jwk else "e"
    del jwk[member]
    with pytest.raises(ValueError, match=member):
        jwk_thumbprint(jwk)


def test_kid_is_the_thumbprint_other_libraries_compute(alg: str) -> None:
    jwk = public_jwk(generate_private_key(alg), alg)
    assert jwk["kid"] == JWKRegistry.import_key(dict(jwk)).thumbprint()
    assert jwk["kid"] == jwcrypto_jwk.JWK(**jwk).thumbprint()


def test_public_jwk_has_only_public_members_use_sig_alg_and_kid(alg: str) -> None:
    jwk = public_jwk(generate_private_key(alg), alg)
    assert set(jwk) == PUBLIC_MEMBERS[alg] | {"kid", "use", "alg"}
    assert jwk["use"] == "sig"
    assert jwk["alg"] == alg
    assert not PRIVATE_MEMBERS & set(jwk)


@pytest.mark.parametrize(
    ("alg_name", "check"),
    [
        (
            "ES256",
            lambda k: isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp256r1",
        ),
        ("EdDSA", lambda k: isinstance(k, ed25519.Ed25519PrivateKey)),
        ("RS256", lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 2048),
    ],
)
def test_each_alg_gets_its_own_key_type(alg_name: str, check: Callable[[object], bool]) -> None:
    assert check(generate_private_key(alg_name))


def test_ec_coordinates_keep_their_leading_zero_bytes() -> None:
    # About one P-256 key in 64 has a coordinate below 2**248; RFC 7518 6.2.1.2 keeps it 32 bytes.
    for _ in range(3_000):
        key = generate_private_key("ES256")
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        numbers = key.public_key().public_numbers()
        if min(numbers.x, numbers.y) < 2**248:
            jwk = public_jwk(key, "ES256")
            assert len(jwk["x"]) == len(jwk["y"]) == 43
            return
    pytest.fail("no key with a short coordinate turned up")


def test_private_key_round_trips_through_pkcs8(alg: str) -> None:
    key = generate_private_key(alg)
    loaded = load_private_key(private_key_to_der(key), alg)
    assert public_jwk(loaded, alg) == public_jwk(key, alg)


def test_a_stored_key_loaded_under_another_alg_is_refused() -> None:
    der = private_key_to_der(generate_private_key("ES256"))
    with pytest.raises(ValueError, match="not a EdDSA key"):
        load_private_key(der, "EdDSA")


def test_public_jwk_refuses_a_key_of_another_type() -> None:
    with pytest.raises(ValueError, match="cannot sign RS256"):
        public_jwk(generate_private_key("ES256"), "RS256")


@pytest.mark.parametrize("name", ["none", "HS256", "HS512", "ES384", "Ed25519", "PS256", ""])
def test_none_hmac_and_unlisted_algorithms_are_refused(name: str) -> None:
    with pytest.raises(UnsupportedAlgorithm):
        check_alg(name)
    with pytest.raises(UnsupportedAlgorithm):
        generate_private_key(name)
    with pytest.raises(UnsupportedAlgorithm):
        jws_registry([name])


def test_registry_refuses_an_algorithm_outside_its_allowlist() -> None:
    key = generate_private_key("ES256")
    jwk = public_jwk(key, "ES256")
    with pytest.raises(UnsupportedAlgorithmError):
        jws.serialize_compact(
            {"alg": "ES256"}, b"x", jose_signing_key(key, jwk), registry=jws_registry(["RS256"])
        )


def test_eddsa_signs_and_verifies_without_a_security_warning() -> None:
    key = generate_private_key("EdDSA")
    jwk = public_jwk(key, "EdDSA")
    registry = jws_registry(["EdDSA"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token = jws.serialize_compact(
            {"alg": "EdDSA", "kid": jwk["kid"]},
            b"payload",
            jose_signing_key(key, jwk),
            registry=registry,
        )
        verified = jws.deserialize_compact(token, jose_verification_key(jwk), registry=registry)
    assert verified.payload == b"payload"


def test_es256_signature_is_raw_r_and_s_not_der() -> None:
    key = generate_private_key("ES256")
    jwk = public_jwk(key, "ES256")
    token = jws.serialize_compact(
        {"alg": "ES256"}, b"x", jose_signing_key(key, jwk), registry=jws_registry(["ES256"])
    )
    signature = token.rsplit(".", 1)[1]
    assert len(signature) == 86  # 64 bytes, base64url without padding
