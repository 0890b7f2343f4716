"""Apple App Attest: genuine test-root objects pass; every mutation is refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from modelseal.attestation import (
    AttestationChainError,
    AttestationChallengeError,
    AttestationCounterError,
    AttestationError,
    AttestationExpiredError,
    AttestationKeyMismatchError,
    AttestationMalformedError,
    AttestationPolicyError,
    AttestationRootError,
    Signal,
    client_data,
    client_data_hash,
)
from modelseal.attestation.apple import AppleAppAttestVerifier
from modelseal.keys import KEM, RecipientPrivateKey
from tests.attestation.apple_factory import (
    AAGUID_DEVELOPMENT,
    APP_ID,
    NOW,
    AppleFactory,
    make_intermediate,
    make_root,
    p256_point,
)

CHALLENGE = bytes(range(32))


@pytest.fixture(scope="module")
def factory() -> AppleFactory:
    return AppleFactory()


@pytest.fixture(scope="module")
def verifier(factory: AppleFactory) -> AppleAppAttestVerifier:
    return AppleAppAttestVerifier([APP_ID], roots=[factory.root.cert])


@pytest.fixture(scope="module")
def device_key() -> RecipientPrivateKey:
    return RecipientPrivateKey.generate(KEM.P256)


def _cdh(device_key: RecipientPrivateKey, challenge: bytes = CHALLENGE) -> bytes:
    return client_data_hash(challenge, device_key.public_key())


def _verify(
    verifier: AppleAppAttestVerifier,
    evidence: bytes,
    device_key: RecipientPrivateKey,
    *,
    challenge: bytes = CHALLENGE,
    now: int = NOW,
) -> object:
    return verifier.verify(
        evidence, challenge=challenge, device_key=device_key.public_key(), now=now
    )


# --- accepted -------------------------------------------------------------------------------


def test_genuine_production_attestation_is_accepted(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, key = factory.attestation(_cdh(device_key))
    result = verifier.verify(
        evidence, challenge=CHALLENGE, device_key=device_key.public_key(), now=NOW
    )
    assert result.platform == "apple-appattest"
    assert result.level == "production"
    assert result.signals == ()
    assert result.facts["app_id"] == APP_ID
    import base64

    assert base64.b64decode(result.key_id or "") == hashlib.sha256(p256_point(key)).digest()
    assert base64.b64decode(result.facts["public_key"]) == p256_point(key)


def test_development_aaguid_is_accepted_only_when_configured(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key), aaguid=AAGUID_DEVELOPMENT)
    with pytest.raises(AttestationPolicyError, match="development"):
        _verify(verifier, evidence, device_key)
    dev = AppleAppAttestVerifier([APP_ID], roots=[factory.root.cert], environments=("development",))
    result = dev.verify(evidence, challenge=CHALLENGE, device_key=device_key.public_key(), now=NOW)
    assert result.level == "development"
    assert Signal.DEVELOPMENT_ENVIRONMENT in result.signals
    prod_evidence, _ = factory.attestation(_cdh(device_key))
    with pytest.raises(AttestationPolicyError, match="production"):
        _verify(dev, prod_evidence, device_key)


def test_root_included_verbatim_at_the_end_of_x5c_is_accepted(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    assert factory.intermediate is not None
    evidence, _ = factory.attestation(
        _cdh(device_key), x5c_tail=[factory.intermediate.der, factory.root.der]
    )
    assert _verify(verifier, evidence, device_key)


# --- mutations of the attestation -----------------------------------------------------------


def test_wrong_nonce_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key), nonce=os.urandom(32))
    with pytest.raises(AttestationChallengeError) as info:
        _verify(verifier, evidence, device_key)
    assert info.value.code == "attestation_challenge_mismatch"


def test_attestation_for_another_challenge_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key))
    with pytest.raises(AttestationChallengeError):
        _verify(verifier, evidence, device_key, challenge=bytes(32))


def test_attestation_for_another_device_key_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key))
    other = RecipientPrivateKey.generate(KEM.P256)
    with pytest.raises(AttestationChallengeError):
        _verify(verifier, evidence, other)


def test_claimed_key_id_of_another_key_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key), claimed_key_id=os.urandom(32))
    with pytest.raises(AttestationKeyMismatchError, match="keyId"):
        _verify(verifier, evidence, device_key)


def test_credential_id_of_another_key_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key), credential_id=os.urandom(32))
    with pytest.raises(AttestationKeyMismatchError, match="credentialId"):
        _verify(verifier, evidence, device_key)


def test_cose_key_of_another_key_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    other = p256_point(ec.generate_private_key(ec.SECP256R1()))
    evidence, _ = factory.attestation(_cdh(device_key), cose_point=other)
    with pytest.raises(AttestationKeyMismatchError, match="credential public key"):
        _verify(verifier, evidence, device_key)


def test_other_app_id_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key), app_id="TEAM123456.com.example.other")
    with pytest.raises(AttestationPolicyError, match="app id"):
        _verify(verifier, evidence, device_key)


def test_unknown_aaguid_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key), aaguid=b"appattestXXXXXXX")
    with pytest.raises(AttestationMalformedError, match="AAGUID"):
        _verify(verifier, evidence, device_key)


def test_nonzero_counter_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key), counter=1)
    with pytest.raises(AttestationPolicyError, match="counter"):
        _verify(verifier, evidence, device_key)


def test_chain_to_a_foreign_root_is_rejected(
    verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    foreign = AppleFactory()  # same structure, names and sizes; another root key
    evidence, _ = foreign.attestation(_cdh(device_key))
    with pytest.raises(AttestationRootError) as info:
        _verify(verifier, evidence, device_key)
    assert info.value.code == "attestation_root_untrusted"


def test_intermediate_with_the_pinned_root_name_but_another_key_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    impostor_root = make_root()  # same subject name as the pinned test root
    impostor = AppleFactory(impostor_root, make_intermediate(impostor_root))
    evidence, _ = impostor.attestation(_cdh(device_key))
    assert impostor_root.cert.subject == factory.root.cert.subject
    with pytest.raises(AttestationRootError):
        _verify(verifier, evidence, device_key)


def test_chain_to_an_os_trusted_root_is_rejected(
    verifier: AppleAppAttestVerifier,
    device_key: RecipientPrivateKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Make a root that the OS trust store (as OpenSSL and certifi see it) trusts, and
    # chain a genuine-shaped attestation to it: only the pinned roots may count.
    system = AppleFactory()
    bundle = tmp_path / "system-roots.pem"
    bundle.write_bytes(system.root.pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    import ssl

    import certifi

    monkeypatch.setattr(certifi, "where", lambda: str(bundle))
    context = ssl.create_default_context()
    assert any(c["subject"] for c in context.get_ca_certs()), (
        "the simulated system store must hold the root"
    )
    evidence, _ = system.attestation(_cdh(device_key))
    with pytest.raises(AttestationRootError):
        _verify(verifier, evidence, device_key)


def test_packaged_apple_root_is_the_default_and_refuses_test_chains(
    factory: AppleFactory, device_key: RecipientPrivateKey
) -> None:
    real = AppleAppAttestVerifier([APP_ID])
    evidence, _ = factory.attestation(_cdh(device_key))
    with pytest.raises(AttestationRootError):
        _verify(real, evidence, device_key)


def test_expired_leaf_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key), leaf_not_after=NOW - 1)
    with pytest.raises(AttestationExpiredError, match="leaf"):
        _verify(verifier, evidence, device_key)


def test_leaf_not_yet_valid_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key))
    with pytest.raises(AttestationExpiredError):
        _verify(verifier, evidence, device_key, now=NOW - 2 * 86400)


def test_chain_past_the_intermediate_validity_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    far = NOW + 11 * 365 * 86400
    evidence, _ = factory.attestation(_cdh(device_key), leaf_not_after=far + 86400)
    with pytest.raises(AttestationExpiredError, match="intermediate"):
        _verify(verifier, evidence, device_key, now=far)


def test_cut_chain_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    evidence, _ = factory.attestation(_cdh(device_key), x5c_tail=[])
    with pytest.raises(AttestationMalformedError, match="x5c"):
        _verify(verifier, evidence, device_key)


def test_leaf_signed_directly_by_a_non_ca_is_rejected(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    # A first leaf (not a CA) is used as the issuer of a second one.
    first, first_key = factory.attestation(_cdh(device_key))
    from cryptography import x509

    from tests.attestation.apple_factory import CA, _cbor_x5c

    leaf_cert = x509.load_der_x509_certificate(_cbor_x5c(first)[0])
    evidence, _ = factory.attestation(
        _cdh(device_key),
        issuer=CA(leaf_cert, first_key),
        x5c_tail=_cbor_x5c(first),
    )
    with pytest.raises(AttestationChainError):
        _verify(verifier, evidence, device_key)


@pytest.mark.parametrize(
    "evidence",
    [b"", b"\x00" * 32, b"\x00" * 33, b"\x00" * 32 + b"\xa0", b"\x00" * 32 + b"\xff" * 70_000],
)
def test_garbage_evidence_is_malformed(
    verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey, evidence: bytes
) -> None:
    with pytest.raises(AttestationMalformedError):
        _verify(verifier, evidence, device_key)


# --- assertions -----------------------------------------------------------------------------


def test_assertion_counter_must_strictly_increase(factory: AppleFactory) -> None:
    verifier = AppleAppAttestVerifier([APP_ID], roots=[factory.root.cert])
    key = ec.generate_private_key(ec.SECP256R1())
    data = client_data(CHALLENGE, None)
    good = factory.assertion(key, data, 5)
    assert (
        verifier.verify_assertion(
            good, client_data=data, public_key=p256_point(key), app_id=APP_ID, stored_count=4
        ).sign_count
        == 5
    )
    for stored in (5, 6):  # a replay of the same counter, and a counter going back
        with pytest.raises(AttestationCounterError) as info:
            verifier.verify_assertion(
                good,
                client_data=data,
                public_key=p256_point(key),
                app_id=APP_ID,
                stored_count=stored,
            )
        assert info.value.code == "attestation_counter_replayed"


def test_assertion_with_another_rp_id_is_rejected(factory: AppleFactory) -> None:
    verifier = AppleAppAttestVerifier([APP_ID], roots=[factory.root.cert])
    key = ec.generate_private_key(ec.SECP256R1())
    data = b"request"
    bad = factory.assertion(key, data, 1, app_id="TEAM123456.com.example.other")
    with pytest.raises(AttestationPolicyError, match="app id"):
        verifier.verify_assertion(
            bad, client_data=data, public_key=p256_point(key), app_id=APP_ID, stored_count=0
        )


def test_assertion_over_other_client_data_or_by_another_key_is_rejected(
    factory: AppleFactory,
) -> None:
    verifier = AppleAppAttestVerifier([APP_ID], roots=[factory.root.cert])
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    assertion = factory.assertion(key, b"request", 1)
    with pytest.raises(AttestationChainError):
        verifier.verify_assertion(
            assertion,
            client_data=b"other",
            public_key=p256_point(key),
            app_id=APP_ID,
            stored_count=0,
        )
    with pytest.raises(AttestationChainError):
        verifier.verify_assertion(
            assertion,
            client_data=b"request",
            public_key=p256_point(other),
            app_id=APP_ID,
            stored_count=0,
        )


@pytest.mark.parametrize(
    "assertion", [b"", b"\xa0", b"\xa2\x41a\x41b\x41c\x41d", b"\xff" * 2000, bytes(37)]
)
def test_garbage_assertions_are_malformed(factory: AppleFactory, assertion: bytes) -> None:
    verifier = AppleAppAttestVerifier([APP_ID], roots=[factory.root.cert])
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AttestationError):
        verifier.verify_assertion(
            assertion, client_data=b"x", public_key=p256_point(key), app_id=APP_ID, stored_count=0
        )


def test_certificate_with_an_invalid_version_is_malformed(
    factory: AppleFactory, verifier: AppleAppAttestVerifier, device_key: RecipientPrivateKey
) -> None:
    # Found by the fuzzer: pyca raises InvalidVersion, which is not a ValueError.
    import cbor2

    from tests.attestation.apple_factory import _cbor_x5c

    evidence, _ = factory.attestation(_cdh(device_key))
    leaf, *tail = _cbor_x5c(evidence)
    assert b"\xa0\x03\x02\x01\x02" in leaf
    bad_leaf = leaf.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x22", 1)
    obj = cbor2.loads(evidence[32:])
    obj["attStmt"]["x5c"] = [bad_leaf, *tail]
    with pytest.raises(AttestationMalformedError, match="x5c"):
        _verify(verifier, evidence[:32] + cbor2.dumps(obj), device_key)
