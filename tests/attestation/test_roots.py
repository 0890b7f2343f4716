"""Pinned roots: the packaged Apple root is Apple's, and roots load only as data."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from modelseal.attestation import AttestationConfigError, load_roots, packaged_root_path
from modelseal.attestation.apple import APPLE_ROOT_FILE

APPLE_ROOT_SHA256 = "1cb9823ba28ba6ad2d33a006941de2ae4f513ef1d4e831b9f7e0fa7b6242c932"


def test_packaged_apple_root_has_the_published_fingerprint() -> None:
    (root,) = load_roots([APPLE_ROOT_FILE])
    assert root.fingerprint(hashes.SHA256()).hex() == APPLE_ROOT_SHA256
    assert (
        root.subject.rfc4514_string()
        == "ST=California,O=Apple Inc.,CN=Apple App Attestation Root CA"
    )
    root.verify_directly_issued_by(root)
    assert packaged_root_path(APPLE_ROOT_FILE).read_text().startswith("-----BEGIN CERTIFICATE")


def test_roots_load_from_a_path(tmp_path: Path) -> None:
    pem = packaged_root_path(APPLE_ROOT_FILE).read_bytes()
    both = tmp_path / "both.pem"
    both.write_bytes(pem + pem)
    assert len(load_roots([both])) == 2


@pytest.mark.parametrize(
    "content",
    [b"", b"not a pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
)
def test_malformed_root_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(AttestationConfigError):
        load_roots([path])


def test_missing_roots_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AttestationConfigError):
        load_roots([])
    with pytest.raises(AttestationConfigError):
        load_roots([tmp_path / "missing.pem"])
    with pytest.raises(AttestationConfigError):
        load_roots(["no_such_packaged_root.pem"])
