"""Building the android-key verifier from configuration values."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelseal.attestation import AttestationConfigError
from modelseal.attestation.android_asn1 import KeyPurpose, VerifiedBootState
from modelseal.attestation.android_config import build_android_verifier
from tests.attestation.android_fixtures import (
    GOOGLE_VECTORS,
    google_chain,
    status_file,
)

DIGEST = "301aa3cb081134501c45f1422abc66c24224fd5ded5fdc8f17e697176fd866aa"


def test_defaults_pin_google_roots_and_fail_closed_in_production() -> None:
    verifier = build_android_verifier({"packages": {"a.b": [DIGEST]}}, production=True)
    assert verifier.platform == "android-key"
    assert verifier.challenge_binding == "client-data-hash"
    assert verifier.policy.allowed_levels == {"tee", "strongbox"}
    assert verifier.policy.required_purposes == {KeyPurpose.AGREE_KEY}
    assert len(verifier._chain.roots) == 2
    assert verifier._revocation._fail_open is False  # type: ignore[attr-defined]
    dev = build_android_verifier({"packages": {"a.b": [DIGEST]}}, production=False)
    assert dev._revocation._fail_open is True  # type: ignore[attr-defined]


def test_configured_verifier_accepts_a_real_chain(tmp_path: Path) -> None:
    chain = google_chain("EC", "TEE")
    verifier = build_android_verifier(
        {
            "packages": {name: [DIGEST.upper()] for name in chain.packages},
            "roots": [str(GOOGLE_VECTORS / "algorithm_EC_SecurityLevel_TEE" / "cert3.pem")],
            "challenge_binding": "raw",
            "required_purposes": ["sign"],
            "allowed_boot_states": ["verified", "UNVERIFIED"],
            "require_device_locked": False,
            "min_os_patch_level": 201907,
            "status_source": str(status_file(tmp_path)),
        },
        production=True,
    )
    assert verifier.policy.allowed_boot_states == {
        VerifiedBootState.VERIFIED,
        VerifiedBootState.UNVERIFIED,
    }
    from cryptography.hazmat.primitives import serialization

    from modelseal.keys import KEM, RecipientPublicKey

    raw = chain.leaf_public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    result = verifier.verify(
        chain.evidence,
        challenge=b"abc",
        device_key=RecipientPublicKey(KEM.P256, raw),
        now=chain.now,
    )
    assert result.level == "tee"


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"packages": {}},
        {"packages": {"a.b": ["zz"]}},
        {"packages": {"a.b": ["00"]}},
        {"packages": {"a.b": [DIGEST]}, "min_os_versoin": 1},
        {"packages": {"a.b": [DIGEST]}, "required_purposes": ["FLY"]},
        {"packages": {"a.b": [DIGEST]}, "allowed_levels": ["tee", "excellent"]},
        {"packages": {"a.b": [DIGEST]}, "min_os_version": "13"},
        {"packages": {"a.b": [DIGEST]}, "challenge_binding": "none"},
        {"packages": {"a.b": [DIGEST]}, "roots": ["/nonexistent/root.pem"]},
        # Values of the wrong type are configuration errors too, not tracebacks.
        {"packages": {"a.b": [1]}},
        {"packages": {"a.b": [DIGEST]}, "allowed_levels": 5},
        {"packages": {"a.b": [DIGEST]}, "roots": 5},
        {"packages": {"a.b": [DIGEST]}, "status_ttl_seconds": "x"},
        {"packages": {"a.b": [DIGEST]}, "status_max_stale_seconds": None},
    ],
)
def test_bad_configuration_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(AttestationConfigError):
        build_android_verifier(config, production=True)
