"""Android Key Attestation against real device chains, and mutations of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from modelseal.attestation import (
    AttestationChainError,
    AttestationChallengeError,
    AttestationExpiredError,
    AttestationKeyMismatchError,
    AttestationPolicyError,
    AttestationResult,
    AttestationRevokedError,
    AttestationRootError,
)
from modelseal.attestation.android import (
    SIGNAL_PATCH_OUTDATED,
    AndroidKeyVerifier,
    default_android_roots,
)
from modelseal.attestation.android_asn1 import KeyPurpose
from modelseal.attestation.android_chain import split_der_chain
from modelseal.keys import KEM, RecipientPrivateKey, RecipientPublicKey
from tests.attestation.android_fixtures import (
    GOOGLE_CHAINS,
    RealChain,
    at,
    google_chain,
    keyattestation_chain,
    real_verifier,
)

ALL_CHAINS = [google_chain(a, lvl) for a, lvl in GOOGLE_CHAINS] + [
    keyattestation_chain("TEE_EC_2026_ROOT"),
    keyattestation_chain("SB_EC_2026_ROOT"),
]


def _verify(
    verifier: AndroidKeyVerifier,
    chain: RealChain,
    *,
    challenge: bytes | None = None,
    evidence: bytes | None = None,
    registered: object = "leaf",
    now: int | None = None,
) -> AttestationResult:
    """Verify through the public ``verify`` for EC leaves, ``verify_chain`` for RSA ones."""
    key = chain.leaf_public_key() if registered == "leaf" else registered
    challenge = chain.challenge if challenge is None else challenge
    evidence = chain.evidence if evidence is None else evidence
    now = chain.now if now is None else now
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        from cryptography.hazmat.primitives import serialization

        raw = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return verifier.verify(
            evidence, challenge=challenge, device_key=RecipientPublicKey(KEM.P256, raw), now=now
        )
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return verifier.verify_chain(
        split_der_chain(evidence), expected_challenge=challenge, registered_key=key, now=now
    )


@pytest.mark.parametrize("chain", ALL_CHAINS, ids=lambda c: c.name)
def test_real_chain_is_accepted_with_its_security_level(chain: RealChain, tmp_path: Path) -> None:
    result = _verify(real_verifier(chain, tmp_path), chain)
    assert result.platform == "android-key"
    assert result.level == chain.level
    assert result.facts["attestation_security_level"] == chain.level
    assert result.facts["revocation_checked"] is True
    assert result.facts["packages"][0]["name"] == chain.packages[0]
    assert result.facts["signing_digests"] == [chain.signing_digest.hex()]


def test_sample_chains_from_unlocked_devices_carry_boot_signals(tmp_path: Path) -> None:
    chain = google_chain("EC", "TEE")
    result = _verify(real_verifier(chain, tmp_path), chain)
    assert "unlocked_bootloader" in result.signals
    assert "unverified_boot" in result.signals
    # The July 2019 patch level is years older than "now" (2024).
    assert SIGNAL_PATCH_OUTDATED in result.signals
    assert result.facts["device_locked"] is False
    assert result.facts["verified_boot_state"] == "unverified"


def test_2026_pixel_chain_is_locked_verified_and_signal_free(tmp_path: Path) -> None:
    chain = keyattestation_chain("TEE_EC_2026_ROOT")
    verifier = real_verifier(chain, tmp_path, roots=default_android_roots(), min_os_version=160000)
    result = _verify(verifier, chain)
    assert result.signals == ()
    assert result.facts["root_subject"].endswith("CN=Key Attestation CA1")
    assert result.facts["chain_method"] == "strict"
    assert result.facts["attestation_version"] == 400


def test_strongbox_ec_sample_uses_the_documented_per_link_fallback(tmp_path: Path) -> None:
    chain = google_chain("EC", "StrongBox")
    result = _verify(real_verifier(chain, tmp_path), chain)
    assert result.facts["chain_method"] == "per-link-leaf"
    assert result.facts["chain_quirks"] == ["leaf_not_der", "leaf_issuer_mismatch"]
    for other in ("TEE", "StrongBox"):
        rsa_chain = google_chain("RSA", other)
        assert _verify(real_verifier(rsa_chain, tmp_path), rsa_chain).facts["chain_method"] == (
            "strict"
        )


def test_strongbox_ec_sample_is_refused_when_quirks_are_disallowed(tmp_path: Path) -> None:
    chain = google_chain("EC", "StrongBox")
    verifier = real_verifier(chain, tmp_path)
    strict = AndroidKeyVerifier(
        policy=verifier.policy,
        revocation=verifier._revocation,
        roots=verifier._chain.roots,
        allowed_quirks=(),
        challenge_binding="raw",
    )
    with pytest.raises(AttestationChainError, match="quirk leaf_not_der"):
        _verify(strict, chain)


# --- mutations of real chains ------------------------------------------------------------------


@pytest.mark.parametrize("chain", ALL_CHAINS, ids=lambda c: c.name)
def test_real_chain_with_another_challenge_is_refused(chain: RealChain, tmp_path: Path) -> None:
    with pytest.raises(AttestationChallengeError) as err:
        _verify(real_verifier(chain, tmp_path), chain, challenge=chain.challenge + b"x")
    assert err.value.code == "attestation_challenge_mismatch"


@pytest.mark.parametrize("chain", ALL_CHAINS, ids=lambda c: c.name)
def test_real_chain_for_another_registered_key_is_refused(chain: RealChain, tmp_path: Path) -> None:
    other = RecipientPrivateKey.generate(KEM.P256).public_key()
    verifier = real_verifier(chain, tmp_path)
    with pytest.raises(AttestationKeyMismatchError) as err:
        verifier.verify(chain.evidence, challenge=chain.challenge, device_key=other, now=chain.now)
    assert err.value.code == "attestation_key_mismatch"


def test_real_chain_with_x25519_device_key_is_refused(tmp_path: Path) -> None:
    chain = google_chain("EC", "TEE")
    x25519 = RecipientPrivateKey.generate(KEM.X25519).public_key()
    with pytest.raises(AttestationKeyMismatchError, match="P-256"):
        real_verifier(chain, tmp_path).verify(
            chain.evidence, challenge=chain.challenge, device_key=x25519, now=chain.now
        )


def test_real_chain_without_a_device_key_is_refused(tmp_path: Path) -> None:
    chain = google_chain("EC", "TEE")
    with pytest.raises(AttestationKeyMismatchError, match="no device key"):
        real_verifier(chain, tmp_path).verify(
            chain.evidence, challenge=chain.challenge, device_key=None, now=chain.now
        )


@pytest.mark.parametrize("chain", ALL_CHAINS, ids=lambda c: c.name)
def test_real_chain_cut_in_the_middle_is_refused(chain: RealChain, tmp_path: Path) -> None:
    cut = b"".join(chain.certificates[:1] + chain.certificates[2:])
    with pytest.raises(AttestationChainError):
        _verify(real_verifier(chain, tmp_path), chain, evidence=cut)


@pytest.mark.parametrize("chain", ALL_CHAINS, ids=lambda c: c.name)
def test_real_chain_without_its_root_is_refused(chain: RealChain, tmp_path: Path) -> None:
    cut = b"".join(chain.certificates[:-1])
    with pytest.raises(AttestationRootError):
        _verify(real_verifier(chain, tmp_path), chain, evidence=cut)


@pytest.mark.parametrize("chain", ALL_CHAINS, ids=lambda c: c.name)
def test_real_chain_with_a_revoked_serial_is_refused(chain: RealChain, tmp_path: Path) -> None:
    intermediate = split_der_chain(chain.evidence)[1]
    from cryptography import x509

    serial = x509.load_der_x509_certificate(intermediate).serial_number
    with pytest.raises(AttestationRevokedError, match=format(serial, "x")) as err:
        _verify(real_verifier(chain, tmp_path, revoked=[serial]), chain)
    assert err.value.code == "attestation_revoked"


def test_sample_strongbox_chains_are_refused_under_the_production_roots(tmp_path: Path) -> None:
    for algorithm in ("EC", "RSA"):
        chain = google_chain(algorithm, "StrongBox")
        verifier = real_verifier(chain, tmp_path, roots=default_android_roots())
        with pytest.raises(AttestationRootError) as err:
            _verify(verifier, chain)
        assert err.value.code == "attestation_root_untrusted"


def test_2026_chain_is_refused_under_a_root_set_without_the_ecdsa_root(tmp_path: Path) -> None:
    chain = keyattestation_chain("SB_EC_2026_ROOT")
    rsa_only = [r for r in default_android_roots() if isinstance(r.public_key(), rsa.RSAPublicKey)]
    with pytest.raises(AttestationRootError):
        _verify(real_verifier(chain, tmp_path, roots=rsa_only), chain)


def test_real_chain_from_unlocked_device_is_refused_by_the_default_boot_policy(
    tmp_path: Path,
) -> None:
    chain = google_chain("EC", "TEE")
    verifier = real_verifier(chain, tmp_path, require_device_locked=True)
    with pytest.raises(AttestationPolicyError, match="unlocked"):
        _verify(verifier, chain)
    from modelseal.attestation.android_asn1 import VerifiedBootState

    verifier = real_verifier(
        chain, tmp_path, allowed_boot_states=frozenset({VerifiedBootState.VERIFIED})
    )
    with pytest.raises(AttestationPolicyError, match="verified boot state unverified"):
        _verify(verifier, chain)


def test_real_chain_for_a_package_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    chain = keyattestation_chain("TEE_EC_2026_ROOT")
    verifier = real_verifier(
        chain, tmp_path, packages={"app.modelseal.demo": frozenset({chain.signing_digest})}
    )
    with pytest.raises(AttestationPolicyError, match="package"):
        _verify(verifier, chain)
    verifier = real_verifier(
        chain, tmp_path, packages={chain.packages[0]: frozenset({b"\x00" * 32})}
    )
    with pytest.raises(AttestationPolicyError, match="digest"):
        _verify(verifier, chain)


def test_real_chain_without_the_agree_key_purpose_is_refused_by_default(tmp_path: Path) -> None:
    chain = keyattestation_chain("TEE_EC_2026_ROOT")
    verifier = real_verifier(chain, tmp_path, required_purposes=frozenset({KeyPurpose.AGREE_KEY}))
    with pytest.raises(AttestationPolicyError, match="AGREE_KEY"):
        _verify(verifier, chain)


def test_real_rsa_chain_is_refused_when_only_p256_is_allowed(tmp_path: Path) -> None:
    chain = google_chain("RSA", "TEE")
    verifier = real_verifier(chain, tmp_path, key_types=frozenset({"ec-p256"}))
    with pytest.raises(AttestationPolicyError, match="RSA"):
        _verify(verifier, chain)


def test_real_chain_is_refused_after_its_intermediate_expires(tmp_path: Path) -> None:
    chain = google_chain("EC", "TEE")
    with pytest.raises(AttestationExpiredError, match="certificate 1") as err:
        _verify(real_verifier(chain, tmp_path), chain, now=at(2028, 6, 1))
    assert err.value.code == "attestation_expired"
    short = keyattestation_chain("TEE_EC_2026_ROOT")
    with pytest.raises(AttestationExpiredError, match="certificate 1"):
        _verify(real_verifier(short, tmp_path), short, now=at(2026, 3, 10))


def test_real_chain_before_the_pinned_root_is_valid_is_refused(tmp_path: Path) -> None:
    chain = google_chain("EC", "TEE")
    with pytest.raises(AttestationExpiredError, match="pinned root"):
        _verify(real_verifier(chain, tmp_path), chain, now=at(2020, 1, 1))


def test_real_chain_below_the_minimum_os_or_patch_level_is_refused(tmp_path: Path) -> None:
    chain = keyattestation_chain("SB_EC_2026_ROOT")
    with pytest.raises(AttestationPolicyError, match="osVersion"):
        _verify(real_verifier(chain, tmp_path, min_os_version=170000), chain)
    with pytest.raises(AttestationPolicyError, match="osPatchLevel"):
        _verify(real_verifier(chain, tmp_path, min_os_patch_level=202603), chain)
    with pytest.raises(AttestationPolicyError, match="vendorPatchLevel"):
        _verify(real_verifier(chain, tmp_path, min_vendor_patch_level=202603), chain)
    accepted = _verify(
        real_verifier(chain, tmp_path, min_os_version=160000, min_os_patch_level=202602), chain
    )
    assert accepted.level == "strongbox"


def test_real_chain_with_a_tampered_leaf_signature_is_refused(tmp_path: Path) -> None:
    chain = keyattestation_chain("TEE_EC_2026_ROOT")
    leaf = bytearray(chain.certificates[0])
    leaf[-5] ^= 0x01
    evidence = bytes(leaf) + b"".join(chain.certificates[1:])
    with pytest.raises(AttestationChainError):
        _verify(real_verifier(chain, tmp_path), chain, evidence=evidence)


def test_real_chain_with_swapped_intermediates_is_refused(tmp_path: Path) -> None:
    chain = keyattestation_chain("TEE_EC_2026_ROOT")
    c = chain.certificates
    swapped = b"".join([c[0], c[2], c[1], *c[3:]])
    with pytest.raises(AttestationChainError):
        _verify(real_verifier(chain, tmp_path), chain, evidence=swapped)
