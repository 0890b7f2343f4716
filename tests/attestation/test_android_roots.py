"""The packaged Android roots are exactly the pinned, documented certificates."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from modelseal.attestation import AttestationConfigError
from modelseal.attestation.android import default_android_roots
from modelseal.attestation.android_chain import ChainVerifier
from tests.attestation.android_fixtures import google_chain

ROOTS_DIR = Path(__file__).resolve().parents[2] / "modelseal" / "attestation" / "roots" / "android"

# (DER SHA-256, SPKI SHA-256), as in roots/android/README.md.
PINNED = {
    (
        "cedb1cb6dc896ae5ec797348bce9286753c2b38ee71ce0fbe34a9a1248800dfc",
        "feb2ea7551ee316ed4bb443c8293b884dbfdea40b603ee3e4f4a897e4580fbae",
    ),
    (
        "6d9db4ce6c5c0b293166d08986e05774a8776ceb525d9e4329520de12ba4bcc0",
        "3ee44512a1af2beb39c889490c60ea3f82e43f5d5a5532f5ab9419f676cd07ec",
    ),
}


def test_packaged_roots_are_the_pinned_ones() -> None:
    roots = default_android_roots()
    found = set()
    for root in roots:
        der = root.public_bytes(serialization.Encoding.DER)
        spki = root.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        root.verify_directly_issued_by(root)
        found.add((hashlib.sha256(der).hexdigest(), hashlib.sha256(spki).hexdigest()))
    assert found == PINNED
    readme = (ROOTS_DIR / "README.md").read_text()
    for der_hash, spki_hash in PINNED:
        assert der_hash in readme
        assert spki_hash in readme


def test_the_rsa_root_reissue_anchors_chains_that_carry_the_2016_certificate() -> None:
    chain = google_chain("EC", "TEE")
    presented_root = chain.certificates[-1]
    from cryptography import x509

    old = x509.load_der_x509_certificate(presented_root)
    assert old.not_valid_after_utc.year == 2026
    spkis = {
        r.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for r in default_android_roots()
    }
    assert (
        old.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        in spkis
    )


def test_a_root_that_is_not_a_self_signed_ca_cannot_be_pinned() -> None:
    from cryptography import x509

    intermediate = x509.load_der_x509_certificate(google_chain("EC", "TEE").certificates[1])
    with pytest.raises(AttestationConfigError, match="self-signed"):
        ChainVerifier([intermediate])
    with pytest.raises(AttestationConfigError, match="no Android"):
        ChainVerifier([])
