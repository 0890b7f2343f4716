"""Android Key Attestation: re-signed synthetic chains, one mutation per check.

Every chain here is built by ``android_fixtures`` under a test root that the test verifier
pins. The genuine chain is accepted, and each mutation changes exactly one thing.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from modelseal.attestation import (
    AttestationChainError,
    AttestationChallengeError,
    AttestationConfigError,
    AttestationError,
    AttestationExpiredError,
    AttestationKeyMismatchError,
    AttestationMalformedError,
    AttestationPolicyError,
    AttestationRevokedError,
    AttestationRootError,
    Verifier,
)
from modelseal.attestation.android import (
    SIGNAL_OS_OUTDATED,
    SIGNAL_PATCH_OUTDATED,
    AndroidKeyVerifier,
)
from modelseal.attestation.android_asn1 import (
    KEY_DESCRIPTION_OID,
    ECCurve,
    KeyOrigin,
    KeyPurpose,
    VerifiedBootState,
)
from modelseal.attestation.android_chain import encode_chain, split_der_chain
from modelseal.attestation.base import client_data_hash
from modelseal.attestation.revocation import RevocationUnavailableError, StatusListCache
from tests.attestation.android_fixtures import (
    SYNTHETIC_CHALLENGE,
    SYNTHETIC_NOW,
    TEST_DIGEST,
    TEST_PACKAGE,
    KeyDescriptionSpec,
    SyntheticPKI,
    bound_challenge,
    device_public,
    explicit,
    make_leaf,
    synthetic_evidence,
    synthetic_verifier,
)

CHALLENGE = SYNTHETIC_CHALLENGE


@pytest.fixture(scope="module")
def pki() -> SyntheticPKI:
    return SyntheticPKI.create()


def _genuine(pki: SyntheticPKI, spec: KeyDescriptionSpec | None = None) -> tuple[bytes, object]:
    spec = spec or KeyDescriptionSpec()
    leaf, key = make_leaf(pki, spec)
    return synthetic_evidence(pki, leaf), device_public(key)


def _spec(**changes: object) -> KeyDescriptionSpec:
    return KeyDescriptionSpec().replace(**changes)


def test_verifier_satisfies_the_protocol(pki: SyntheticPKI, tmp_path: Path) -> None:
    assert isinstance(synthetic_verifier(pki, tmp_path), Verifier)


def test_genuine_synthetic_chain_is_accepted(pki: SyntheticPKI, tmp_path: Path) -> None:
    evidence, device_key = _genuine(pki)
    result = synthetic_verifier(pki, tmp_path).verify(
        evidence, challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW
    )
    assert result.level == "tee"
    assert result.signals == ()
    assert result.facts["chain_method"] == "strict"
    assert result.facts["purposes"] == [KeyPurpose.AGREE_KEY]
    assert result.facts["packages"] == [{"name": TEST_PACKAGE, "version": 42}]
    assert "unique_id" not in result.facts


def test_strongbox_level_is_reported(pki: SyntheticPKI, tmp_path: Path) -> None:
    evidence, device_key = _genuine(pki, _spec(security_level=2, keymint_level=2))
    result = synthetic_verifier(pki, tmp_path).verify(
        evidence, challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW
    )
    assert result.level == "strongbox"


# Each row: the mutation, the error class, and a fragment of the message naming the check.
KEY_DESCRIPTION_MUTATIONS = [
    ("raw_challenge", _spec(challenge=CHALLENGE), AttestationChallengeError, "chall"),
    ("other_challenge", _spec(challenge=bytes(32)), AttestationChallengeError, "chall"),
    ("software_level", _spec(security_level=0, keymint_level=0), AttestationPolicyError, "level"),
    ("software_keymint", _spec(keymint_level=0), AttestationPolicyError, "level"),
    ("unlocked", _spec(locked=False), AttestationPolicyError, "unlocked"),
    ("unverified", _spec(boot_state=VerifiedBootState.UNVERIFIED), AttestationPolicyError, "boot"),
    (
        "self_signed",
        _spec(boot_state=VerifiedBootState.SELF_SIGNED),
        AttestationPolicyError,
        "boot",
    ),
    ("failed_boot", _spec(boot_state=VerifiedBootState.FAILED), AttestationPolicyError, "boot"),
    ("package", _spec(packages=(("com.evil.clone", 42),)), AttestationPolicyError, "package"),
    (
        "extra_package",
        _spec(packages=((TEST_PACKAGE, 42), ("com.evil.shareduid", 1))),
        AttestationPolicyError,
        "package",
    ),
    ("digest", _spec(digests=(b"\x01" * 32,)), AttestationPolicyError, "digest"),
    ("extra_digest", _spec(digests=(TEST_DIGEST, b"\x01" * 32)), AttestationPolicyError, "digest"),
    ("no_digest", _spec(digests=()), AttestationPolicyError, "digest"),
    ("purpose", _spec(purposes=(KeyPurpose.SIGN,)), AttestationPolicyError, "AGREE_KEY"),
    ("curve", _spec(ec_curve=ECCurve.P_384), AttestationPolicyError, "P-256"),
    ("curve_absent_bad_size", _spec(ec_curve=None, key_size=384), AttestationPolicyError, "size"),
    ("algorithm", _spec(algorithm=1), AttestationPolicyError, "algorithm"),
    ("imported", _spec(origin=KeyOrigin.IMPORTED), AttestationPolicyError, "origin"),
    ("old_format", _spec(attestation_version=2), AttestationPolicyError, "version"),
    ("sw_only", _spec(hardware_in_software_list=True), AttestationPolicyError, "hardware"),
]


@pytest.mark.parametrize(
    ("spec", "error", "fragment"),
    [m[1:] for m in KEY_DESCRIPTION_MUTATIONS],
    ids=[m[0] for m in KEY_DESCRIPTION_MUTATIONS],
)
def test_key_description_mutation_is_refused(
    pki: SyntheticPKI,
    tmp_path: Path,
    spec: KeyDescriptionSpec,
    error: type[AttestationError],
    fragment: str,
) -> None:
    evidence, device_key = _genuine(pki, spec)
    verifier = synthetic_verifier(pki, tmp_path)
    with pytest.raises(error, match=fragment) as err:
        verifier.verify(evidence, challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW)
    assert err.value.code == error.code


def test_minimum_os_and_patch_levels_are_enforced(pki: SyntheticPKI, tmp_path: Path) -> None:
    evidence, device_key = _genuine(pki)
    for option, fragment in (
        ({"min_os_version": 160000}, "osVersion"),
        ({"min_os_patch_level": 202610}, "osPatchLevel"),
        ({"min_vendor_patch_level": 202610}, "vendorPatchLevel"),
        ({"min_boot_patch_level": 202610}, "bootPatchLevel"),
    ):
        verifier = synthetic_verifier(pki, tmp_path, **option)
        with pytest.raises(AttestationPolicyError, match=fragment):
            verifier.verify(evidence, challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW)
    at_minimum = synthetic_verifier(pki, tmp_path, min_os_version=150000, min_os_patch_level=202609)
    at_minimum.verify(evidence, challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW)


def test_policy_that_tolerates_weak_devices_reports_them_as_signals(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    spec = _spec(
        locked=False,
        boot_state=VerifiedBootState.SELF_SIGNED,
        security_level=0,
        keymint_level=0,
        os_patch_level=202401,
    )
    leaf, key = make_leaf(pki, spec)
    # A software-level key has its properties in the software-enforced list.
    spec_sw = spec.replace(hardware_in_software_list=True)
    leaf, key = make_leaf(pki, spec_sw, device_key=key)
    verifier = synthetic_verifier(
        pki,
        tmp_path,
        allowed_levels=frozenset({"software", "tee", "strongbox"}),
        require_device_locked=False,
        allowed_boot_states=frozenset({VerifiedBootState.VERIFIED, VerifiedBootState.SELF_SIGNED}),
        os_outdated_below=160000,
    )
    result = verifier.verify(
        synthetic_evidence(pki, leaf),
        challenge=CHALLENGE,
        device_key=device_public(key),
        now=SYNTHETIC_NOW,
    )
    assert result.level == "software"
    assert result.signals == (
        "software_key",
        "unlocked_bootloader",
        "unverified_boot",
        SIGNAL_OS_OUTDATED,
        SIGNAL_PATCH_OUTDATED,
    )


def test_attested_key_that_differs_from_the_registered_key_is_refused(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    # The app attests key A but registers key B, with the client data computed for B:
    # the challenge matches, and only the key comparison can catch it.
    other = device_public(ec.generate_private_key(ec.SECP256R1()))
    leaf, _ = make_leaf(pki, _spec(challenge=client_data_hash(CHALLENGE, other)))
    verifier = synthetic_verifier(pki, tmp_path)
    with pytest.raises(AttestationKeyMismatchError) as err:
        verifier.verify(
            synthetic_evidence(pki, leaf), challenge=CHALLENGE, device_key=other, now=SYNTHETIC_NOW
        )
    assert err.value.code == "attestation_key_mismatch"
    # Without that effort, the client-data binding already refuses the swap.
    evidence, _ = _genuine(pki)
    with pytest.raises(AttestationChallengeError):
        verifier.verify(evidence, challenge=CHALLENGE, device_key=other, now=SYNTHETIC_NOW)


def test_p384_attested_key_is_refused_even_when_it_is_the_registered_key(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    leaf, _ = make_leaf(pki, _spec(ec_curve=ECCurve.P_384, key_size=384), device_key=key)
    verifier = synthetic_verifier(pki, tmp_path)
    with pytest.raises(AttestationPolicyError, match="curve"):
        verifier.verify_chain(
            split_der_chain(synthetic_evidence(pki, leaf)),
            expected_challenge=bound_challenge(key),
            registered_key=key.public_key(),
            now=SYNTHETIC_NOW,
        )


def test_revoked_intermediate_serial_is_refused(pki: SyntheticPKI, tmp_path: Path) -> None:
    evidence, device_key = _genuine(pki)
    verifier = synthetic_verifier(pki, tmp_path, revoked=[pki.intermediate.serial_number])
    with pytest.raises(AttestationRevokedError, match="abcdef0123"):
        verifier.verify(evidence, challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW)


def test_suspended_root_serial_is_refused(pki: SyntheticPKI, tmp_path: Path) -> None:
    evidence, device_key = _genuine(pki)
    verifier = synthetic_verifier(pki, tmp_path)
    verifier._revocation = StatusListCache(  # a list naming the root, status SUSPENDED
        _write(tmp_path, {format(pki.root.serial_number, "x"): {"status": "SUSPENDED"}})
    )
    with pytest.raises(AttestationRevokedError, match="SUSPENDED"):
        verifier.verify(evidence, challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW)


def _write(directory: Path, entries: dict[str, object]) -> Path:
    import json

    path = directory / "custom-status.json"
    path.write_text(json.dumps({"entries": entries}))
    return path


def test_unavailable_status_list_fails_closed(pki: SyntheticPKI, tmp_path: Path) -> None:
    evidence, device_key = _genuine(pki)
    verifier = synthetic_verifier(pki, tmp_path)
    verifier._revocation = StatusListCache(tmp_path / "missing.json")
    with pytest.raises(RevocationUnavailableError) as err:
        verifier.verify(evidence, challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW)
    assert err.value.code == "attestation_revocation_unavailable"
    verifier._revocation = StatusListCache(tmp_path / "missing.json", fail_open=True)
    result = verifier.verify(
        evidence, challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW
    )
    assert result.signals == ("revocation_unchecked",)
    assert result.facts["revocation_checked"] is False


def test_chain_to_an_unknown_root_is_refused(pki: SyntheticPKI, tmp_path: Path) -> None:
    foreign = SyntheticPKI.create(name="Foreign")
    leaf, key = make_leaf(foreign, _spec())
    with pytest.raises(AttestationRootError) as err:
        synthetic_verifier(pki, tmp_path).verify(
            synthetic_evidence(foreign, leaf),
            challenge=CHALLENGE,
            device_key=device_public(key),
            now=SYNTHETIC_NOW,
        )
    assert err.value.code == "attestation_root_untrusted"


def test_foreign_chain_topped_with_the_pinned_root_is_refused(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    # Same names as the pinned PKI, other keys: only the pinned root's key may anchor.
    impostor = SyntheticPKI.create()
    leaf, key = make_leaf(impostor, _spec())
    evidence = encode_chain([leaf, impostor.intermediate, pki.root])
    with pytest.raises(AttestationChainError):
        synthetic_verifier(pki, tmp_path).verify(
            evidence, challenge=CHALLENGE, device_key=device_public(key), now=SYNTHETIC_NOW
        )


def test_cut_chain_is_refused(pki: SyntheticPKI, tmp_path: Path) -> None:
    leaf, key = make_leaf(pki, _spec())
    verifier = synthetic_verifier(pki, tmp_path)
    for chain in ([leaf, pki.root], [leaf, pki.intermediate]):
        with pytest.raises((AttestationChainError, AttestationRootError)):
            verifier.verify(
                encode_chain(chain),
                challenge=CHALLENGE,
                device_key=device_public(key),
                now=SYNTHETIC_NOW,
            )
    with pytest.raises(AttestationMalformedError, match=r"2\.\.10"):
        verifier.verify(
            encode_chain([leaf]), challenge=CHALLENGE, device_key=device_public(key), now=1
        )


def test_expired_intermediate_is_refused(pki: SyntheticPKI, tmp_path: Path) -> None:
    expired = pki.with_intermediate(not_after=dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    leaf, key = make_leaf(expired, _spec())
    with pytest.raises(AttestationExpiredError, match="certificate 1") as err:
        synthetic_verifier(pki, tmp_path).verify(
            synthetic_evidence(expired, leaf),
            challenge=CHALLENGE,
            device_key=device_public(key),
            now=SYNTHETIC_NOW,
        )
    assert err.value.code == "attestation_expired"


def test_leaf_signed_by_an_attested_signing_key_is_refused(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    # An attacker's genuine attested SIGN key (a non-CA leaf) signs a forged leaf that
    # claims a locked, verified device. basicConstraints must stop it.
    attacker_leaf, attacker_key = make_leaf(pki, _spec(purposes=(KeyPurpose.SIGN,)))
    forged, key = make_leaf(pki, _spec(), signer=(attacker_leaf.subject, attacker_key))
    evidence = encode_chain([forged, attacker_leaf, pki.intermediate, pki.root])
    with pytest.raises(AttestationChainError):
        synthetic_verifier(pki, tmp_path).verify(
            evidence, challenge=CHALLENGE, device_key=device_public(key), now=SYNTHETIC_NOW
        )


def test_key_description_on_an_intermediate_is_refused(pki: SyntheticPKI, tmp_path: Path) -> None:
    marked = pki.with_intermediate(
        extra=[
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(KEY_DESCRIPTION_OID), _spec(challenge=CHALLENGE).encode()
            )
        ]
    )
    leaf, key = make_leaf(marked, _spec())
    with pytest.raises(AttestationChainError, match="only the leaf"):
        synthetic_verifier(pki, tmp_path).verify(
            synthetic_evidence(marked, leaf),
            challenge=CHALLENGE,
            device_key=device_public(key),
            now=SYNTHETIC_NOW,
        )


def test_leaf_with_an_issuer_name_quirk_still_needs_a_valid_signature(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    # The issuer-name quirk switches to the per-link check, which verifies the signature.
    other = ec.generate_private_key(ec.SECP256R1())
    odd_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Somebody Else")])
    forged, key = make_leaf(pki, _spec(), signer=(odd_name, other))
    verifier = synthetic_verifier(pki, tmp_path)
    with pytest.raises(AttestationChainError, match="signature"):
        verifier.verify(
            synthetic_evidence(pki, forged),
            challenge=CHALLENGE,
            device_key=device_public(key),
            now=SYNTHETIC_NOW,
        )
    genuine_odd, key = make_leaf(pki, _spec(), signer=(odd_name, pki.intermediate_key))
    result = verifier.verify(
        synthetic_evidence(pki, genuine_odd),
        challenge=CHALLENGE,
        device_key=device_public(key),
        now=SYNTHETIC_NOW,
    )
    assert result.facts["chain_quirks"] == ["leaf_issuer_mismatch"]


def test_tampered_key_description_breaks_the_leaf_signature(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    evidence, device_key = _genuine(pki)
    certificates = list(split_der_chain(evidence))
    leaf = certificates[0]
    # Flip the challenge inside the signed leaf without re-signing.
    index = leaf.index(client_data_hash(CHALLENGE, device_key))
    certificates[0] = leaf[:index] + bytes([leaf[index] ^ 1]) + leaf[index + 1 :]
    with pytest.raises(AttestationChainError):
        synthetic_verifier(pki, tmp_path).verify(
            b"".join(certificates), challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW
        )


def test_leaf_without_key_description_is_refused(pki: SyntheticPKI, tmp_path: Path) -> None:
    evidence, device_key = _genuine(pki)
    leaf = x509.load_der_x509_certificate(split_der_chain(evidence)[0])
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(leaf.public_key())
        .serial_number(1)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
    )
    from cryptography.hazmat.primitives import hashes

    bare = builder.sign(pki.intermediate_key, hashes.SHA256())
    with pytest.raises(AttestationMalformedError, match="KeyDescription"):
        synthetic_verifier(pki, tmp_path).verify(
            synthetic_evidence(pki, bare),
            challenge=CHALLENGE,
            device_key=device_key,
            now=SYNTHETIC_NOW,
        )


def test_unknown_authorization_tags_are_tolerated_and_reported(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    from pyasn1.type import univ

    spec = _spec(extra_hw=(explicit(800, univ.Integer(7)), explicit(9999, univ.Null())))
    evidence, device_key = _genuine(pki, spec)
    result = synthetic_verifier(pki, tmp_path).verify(
        evidence, challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW
    )
    assert result.facts["unknown_tags"] == [800, 9999]


def test_verification_before_the_test_pki_exists_is_refused(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    evidence, device_key = _genuine(pki)
    with pytest.raises(AttestationExpiredError):
        synthetic_verifier(pki, tmp_path).verify(
            evidence,
            challenge=CHALLENGE,
            device_key=device_key,
            now=int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()),
        )


def test_raw_binding_accepts_the_raw_challenge_and_refuses_the_hash(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    raw_leaf, raw_key = make_leaf(pki, _spec(challenge=CHALLENGE))
    hashed_leaf, hashed_key = make_leaf(pki, _spec())
    verifier = synthetic_verifier(pki, tmp_path)
    raw = AndroidKeyVerifier(
        policy=verifier.policy,
        revocation=verifier._revocation,
        roots=[pki.root],
        challenge_binding="raw",
    )
    raw.verify(
        synthetic_evidence(pki, raw_leaf),
        challenge=CHALLENGE,
        device_key=device_public(raw_key),
        now=SYNTHETIC_NOW,
    )
    with pytest.raises(AttestationChallengeError):
        raw.verify(
            synthetic_evidence(pki, hashed_leaf),
            challenge=CHALLENGE,
            device_key=device_public(hashed_key),
            now=SYNTHETIC_NOW,
        )
    with pytest.raises(AttestationConfigError, match="challenge_binding"):
        AndroidKeyVerifier(
            policy=verifier.policy, revocation=verifier._revocation, challenge_binding="none"
        )


def test_client_data_binding_covers_the_device_key_id(pki: SyntheticPKI, tmp_path: Path) -> None:
    # The leaf attests the hash computed for another key id: refused before key comparison.
    key = ec.generate_private_key(ec.SECP256R1())
    other = device_public(ec.generate_private_key(ec.SECP256R1()))
    leaf, _ = make_leaf(pki, _spec(challenge=client_data_hash(CHALLENGE, other)), device_key=key)
    with pytest.raises(AttestationChallengeError):
        synthetic_verifier(pki, tmp_path).verify(
            synthetic_evidence(pki, leaf),
            challenge=CHALLENGE,
            device_key=device_public(key),
            now=SYNTHETIC_NOW,
        )


def test_forged_leaf_with_a_name_quirk_signed_by_an_attested_key_is_refused(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    # Same forgery as above, but the forged leaf names some other issuer so that the
    # per-link fallback is taken: the fallback must still demand a CA above the leaf.
    attacker_leaf, attacker_key = make_leaf(pki, _spec(purposes=(KeyPurpose.SIGN,)))
    odd_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Somebody Else")])
    forged, key = make_leaf(pki, _spec(), signer=(odd_name, attacker_key))
    evidence = encode_chain([forged, attacker_leaf, pki.intermediate, pki.root])
    verifier = synthetic_verifier(pki, tmp_path)
    with pytest.raises(AttestationChainError, match="only the leaf"):
        verifier.verify(
            evidence, challenge=CHALLENGE, device_key=device_public(key), now=SYNTHETIC_NOW
        )
    # The same with a non-CA certificate that carries no KeyDescription: the CA check.
    from cryptography.hazmat.primitives import hashes

    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Not a CA")]))
        .issuer_name(pki.intermediate.subject)
        .public_key(signer_key.public_key())
        .serial_number(77)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(pki.intermediate_key, hashes.SHA256())
    )
    forged, key = make_leaf(pki, _spec(), signer=(odd_name, signer_key))
    evidence = encode_chain([forged, signer, pki.intermediate, pki.root])
    with pytest.raises(AttestationChainError, match="not a CA"):
        verifier.verify(
            evidence, challenge=CHALLENGE, device_key=device_public(key), now=SYNTHETIC_NOW
        )


def test_chain_with_an_unused_extra_certificate_is_refused(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    leaf, key = make_leaf(pki, _spec())
    spare = pki.with_intermediate().intermediate  # a valid CA under the same root, unused
    evidence = encode_chain([leaf, pki.intermediate, spare, pki.root])
    with pytest.raises(AttestationChainError, match="every presented certificate"):
        synthetic_verifier(pki, tmp_path).verify(
            evidence, challenge=CHALLENGE, device_key=device_public(key), now=SYNTHETIC_NOW
        )


def test_presented_root_must_carry_the_pinned_name_as_well_as_the_pinned_key(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    # Anyone can wrap the pinned public key in a certificate of their own making.
    from cryptography.hazmat.primitives import hashes

    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Look-alike Root")])
    fake_root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pki.root.public_key())
        .serial_number(5)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        .sign(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384())
    )
    leaf, key = make_leaf(pki, _spec())
    with pytest.raises(AttestationRootError, match="name"):
        synthetic_verifier(pki, tmp_path).verify(
            encode_chain([leaf, pki.intermediate, fake_root]),
            challenge=CHALLENGE,
            device_key=device_public(key),
            now=SYNTHETIC_NOW,
        )


def test_leaf_with_an_unknown_critical_extension_is_refused(
    pki: SyntheticPKI, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import hashes

    key = ec.generate_private_key(ec.SECP256R1())
    genuine, _ = make_leaf(pki, _spec(), device_key=key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(genuine.subject)
        .issuer_name(genuine.issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(genuine.not_valid_before_utc)
        .not_valid_after(genuine.not_valid_after_utc)
    )
    for extension in genuine.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    builder = builder.add_extension(
        x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
        critical=True,
    )
    leaf = builder.sign(pki.intermediate_key, hashes.SHA256())
    with pytest.raises(AttestationChainError, match="critical"):
        synthetic_verifier(pki, tmp_path).verify(
            synthetic_evidence(pki, leaf),
            challenge=CHALLENGE,
            device_key=device_public(key),
            now=SYNTHETIC_NOW,
        )
