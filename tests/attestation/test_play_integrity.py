"""Play Integrity: the verdict matrix maps exactly onto the documented table."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from modelseal.attestation import (
    AttestationChainError,
    AttestationChallengeError,
    AttestationConfigError,
    AttestationError,
    AttestationExpiredError,
    AttestationMalformedError,
    AttestationPolicyError,
)
from modelseal.attestation.play_integrity import (
    PlayIntegrityVerifier,
    decode_classic_token,
    expected_request_binding,
)
from modelseal.keys import KEM, RecipientPrivateKey
from tests.attestation.play_factory import PACKAGE, PlayKeys, b64url, es256_jws, jwe, verdict

NOW = 1_790_000_000
CHALLENGE = bytes(range(32))
DEVICE = RecipientPrivateKey.generate(KEM.P256).public_key()
KEYS = PlayKeys()


def _verifier(keys: PlayKeys = KEYS) -> PlayIntegrityVerifier:
    return PlayIntegrityVerifier(
        [PACKAGE],
        decryption_key=keys.decryption_key,
        verification_key=keys.signing_key.public_key(),
        backend_key=keys.backend_key.public_key(),
        max_age_seconds=300,
    )


# --- the table, written out independently of the code -----------------------------------------
#
# docs/ATTESTATION.md, "Play Integrity verdict table", row by row.

APP_VERDICTS = ("PLAY_RECOGNIZED", "UNRECOGNIZED_VERSION", "UNEVALUATED")
LABEL_SETS = {
    "none": (),
    "basic": ("MEETS_BASIC_INTEGRITY",),
    "device": ("MEETS_BASIC_INTEGRITY", "MEETS_DEVICE_INTEGRITY"),
    "strong": ("MEETS_BASIC_INTEGRITY", "MEETS_DEVICE_INTEGRITY", "MEETS_STRONG_INTEGRITY"),
}
LICENCES = ("LICENSED", "UNLICENSED", "UNEVALUATED")
FRESHNESS = ("fresh", "stale", "future")
BINDINGS = ("nonce", "requestHash", "nonce-mismatch", "requestHash-mismatch")

Case = tuple[str, str, str, str, str]  # app verdict, device level, licence, freshness, binding

EXPECTED_MALICIOUS_ROWS: list[Callable[[Case], bool]] = [
    lambda c: c[4].endswith("mismatch"),
    lambda c: c[3] != "fresh",
    lambda c: c[0] == "UNRECOGNIZED_VERSION",
    lambda c: c[1] == "none",
]
EXPECTED_SUSPICIOUS_ROWS: list[Callable[[Case], bool]] = [
    lambda c: c[0] == "UNEVALUATED",
    lambda c: c[1] == "basic",
    lambda c: c[2] == "UNLICENSED",
]


def _expected(*case: str) -> str:
    app, dev, lic, fresh, bind = case
    row_input: Case = (app, dev, lic, fresh, bind)
    if any(row(row_input) for row in EXPECTED_MALICIOUS_ROWS):
        return "malicious"
    if any(row(row_input) for row in EXPECTED_SUSPICIOUS_ROWS):
        return "suspicious"
    return "ok"


MATRIX = list(itertools.product(APP_VERDICTS, LABEL_SETS, LICENCES, FRESHNESS, BINDINGS))


def test_matrix_covers_every_combination() -> None:
    assert len(MATRIX) == 3 * 4 * 3 * 3 * 4
    outcomes = {_expected(*case) for case in MATRIX}
    assert outcomes == {"ok", "suspicious", "malicious"}


@pytest.mark.parametrize(("app", "dev", "lic", "fresh", "bind"), MATRIX)
def test_verdict_matrix_maps_onto_the_documented_table(
    app: str, dev: str, lic: str, fresh: str, bind: str
) -> None:
    binding = expected_request_binding(CHALLENGE, DEVICE)
    if bind.endswith("mismatch"):
        binding = expected_request_binding(bytes(32), DEVICE)
    issued = {"fresh": NOW - 10, "stale": NOW - 301, "future": NOW + 120}[fresh]
    payload = verdict(
        binding,
        issued,
        app=app,
        labels=LABEL_SETS[dev],
        licence=lic,
        hash_field=bind.split("-")[0],
    )
    expected = _expected(app, dev, lic, fresh, bind)
    token = KEYS.classic(payload)
    if expected == "malicious":
        with pytest.raises(AttestationError) as info:
            _verifier().verify(token, challenge=CHALLENGE, device_key=DEVICE, now=NOW)
        if bind.endswith("mismatch"):
            assert isinstance(info.value, AttestationChallengeError)
        elif fresh != "fresh":
            assert isinstance(info.value, AttestationExpiredError)
        else:
            assert isinstance(info.value, AttestationPolicyError)
        return
    result = _verifier().verify(token, challenge=CHALLENGE, device_key=DEVICE, now=NOW)
    assert result.facts["outcome"] == expected
    assert result.level == dev
    assert bool(result.signals) == (expected == "suspicious")
    if lic == "UNLICENSED":
        assert "not_from_store" in result.signals


# --- classic JWE/JWS decoding ---------------------------------------------------------------


def test_classic_token_round_trip() -> None:
    payload = verdict(expected_request_binding(CHALLENGE, DEVICE), NOW)
    decoded = decode_classic_token(
        KEYS.classic(payload),
        decryption_key=KEYS.decryption_key,
        verification_key=KEYS.signing_key.public_key(),
    )
    assert decoded == payload


@pytest.mark.parametrize("part", range(5))
def test_tampered_classic_token_is_rejected(part: int) -> None:
    token = KEYS.classic(verdict(expected_request_binding(CHALLENGE, DEVICE), NOW)).decode()
    parts = token.split(".")
    segment = bytearray(parts[part].encode())
    # Flip a character in the middle of the segment to another base64url character.
    i = len(segment) // 2
    segment[i] = ord("A") if segment[i] != ord("A") else ord("B")
    parts[part] = segment.decode()
    with pytest.raises((AttestationChainError, AttestationMalformedError)):
        _verifier().verify(
            ".".join(parts).encode(), challenge=CHALLENGE, device_key=DEVICE, now=NOW
        )


def test_token_for_another_app_key_is_rejected() -> None:
    other = PlayKeys()
    token = other.classic(verdict(expected_request_binding(CHALLENGE, DEVICE), NOW))
    with pytest.raises(AttestationChainError, match="decrypt"):
        _verifier().verify(token, challenge=CHALLENGE, device_key=DEVICE, now=NOW)


def test_token_signed_by_another_key_is_rejected() -> None:
    forger = PlayKeys(decryption_key=KEYS.decryption_key)
    token = forger.classic(verdict(expected_request_binding(CHALLENGE, DEVICE), NOW))
    with pytest.raises(AttestationChainError, match="signature"):
        _verifier().verify(token, challenge=CHALLENGE, device_key=DEVICE, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "dir", "enc": "A256GCM"},
        {"alg": "A256KW", "enc": "A128GCM"},
        {"alg": "A256KW", "enc": "A256GCM", "zip": "DEF"},
    ],
)
def test_other_jwe_algorithms_are_rejected(header: dict[str, str]) -> None:
    inner = es256_jws(b"{}", KEYS.signing_key, {"alg": "ES256"})
    token = jwe(inner.encode(), KEYS.decryption_key, header).encode()
    with pytest.raises(AttestationMalformedError, match="A256KW"):
        _verifier().verify(token, challenge=CHALLENGE, device_key=DEVICE, now=NOW)


@pytest.mark.parametrize("alg", ["none", "HS256", "ES384"])
def test_other_jws_algorithms_are_rejected(alg: str) -> None:
    payload = json.dumps(verdict(expected_request_binding(CHALLENGE, DEVICE), NOW)).encode()
    inner = es256_jws(payload, KEYS.signing_key, {"alg": alg})
    token = jwe(inner.encode(), KEYS.decryption_key).encode()
    with pytest.raises(AttestationMalformedError, match="ES256"):
        _verifier().verify(token, challenge=CHALLENGE, device_key=DEVICE, now=NOW)


def test_token_bound_to_another_device_key_is_rejected() -> None:
    other = RecipientPrivateKey.generate(KEM.P256).public_key()
    token = KEYS.classic(verdict(expected_request_binding(CHALLENGE, other), NOW))
    with pytest.raises(AttestationChallengeError):
        _verifier().verify(token, challenge=CHALLENGE, device_key=DEVICE, now=NOW)


def test_other_package_is_rejected() -> None:
    token = KEYS.classic(
        verdict(expected_request_binding(CHALLENGE, DEVICE), NOW, package="com.evil.clone")
    )
    with pytest.raises(AttestationChallengeError):
        _verifier().verify(token, challenge=CHALLENGE, device_key=DEVICE, now=NOW)


# --- verdicts handed over by the operator's backend ---------------------------------------------


def test_backend_verdict_is_accepted_when_signed_by_the_configured_backend() -> None:
    payload = verdict(expected_request_binding(CHALLENGE, DEVICE), NOW, hash_field="requestHash")
    result = _verifier().verify(
        KEYS.backend(payload), challenge=CHALLENGE, device_key=DEVICE, now=NOW
    )
    assert result.facts["source"] == "backend"
    assert result.level == "device"


def test_backend_verdict_from_a_device_or_another_backend_is_rejected() -> None:
    payload = verdict(expected_request_binding(CHALLENGE, DEVICE), NOW)
    with pytest.raises(AttestationChainError):
        _verifier().verify(
            PlayKeys().backend(payload), challenge=CHALLENGE, device_key=DEVICE, now=NOW
        )
    unsigned = (
        b64url(b'{"alg":"none"}') + "." + b64url(json.dumps(payload).encode()) + "."
    ).encode()
    with pytest.raises(AttestationMalformedError):
        _verifier().verify(unsigned, challenge=CHALLENGE, device_key=DEVICE, now=NOW)
    classic_only = PlayIntegrityVerifier(
        [PACKAGE],
        decryption_key=KEYS.decryption_key,
        verification_key=KEYS.signing_key.public_key(),
    )
    with pytest.raises(AttestationMalformedError, match="not configured"):
        classic_only.verify(KEYS.backend(payload), challenge=CHALLENGE, device_key=DEVICE, now=NOW)


def test_configuration_errors() -> None:
    with pytest.raises(AttestationConfigError):
        PlayIntegrityVerifier([PACKAGE])
    with pytest.raises(AttestationConfigError):
        PlayIntegrityVerifier([], backend_key=KEYS.backend_key.public_key())
    with pytest.raises(AttestationConfigError):
        PlayIntegrityVerifier([PACKAGE], decryption_key=bytes(32))


def test_table_in_docs_names_every_row() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "ATTESTATION.md").read_text()
    for phrase in (
        "UNRECOGNIZED_VERSION",
        "MEETS_BASIC_INTEGRITY",
        "UNLICENSED",
        "timestampMillis",
        "requestHash",
    ):
        assert phrase in doc
