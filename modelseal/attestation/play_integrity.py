"""Google Play Integrity verdicts, decoded locally or handed over by the operator's backend.

Two kinds of evidence are accepted under platform ``"play-integrity"``:

* **Classic token** (five dot-separated parts): a compact JWE (``alg`` A256KW, ``enc``
  A256GCM) under the app's decryption key, whose plaintext is a compact JWS (``alg``
  ES256) under the app's verification key. Both keys come from the Play Console and
  are configured here; Google's servers are never called.
* **Backend verdict** (three parts): a compact JWS (EdDSA or ES256) by the operator's
  backend over the verdict JSON it obtained from Google's ``decodeIntegrityToken``
  (standard requests). Accepted only when a backend key is configured: the JSON is
  trusted because the backend signed it, never because a device sent it.

Both end in the same verdict payload, which :func:`assess_verdict` maps onto
OK / suspicious / malicious with exactly the table of ``docs/ATTESTATION.md``:

==================================================================  ==========
condition (first matching severity wins; the verdict is the worst)   outcome
==================================================================  ==========
nonce / requestHash differs from the challenge's                     malicious
requestPackageName or appIntegrity.packageName not configured        malicious
timestampMillis older than the window or in the future               malicious
appRecognitionVerdict UNRECOGNIZED_VERSION (or unknown value)        malicious
deviceRecognitionVerdict has no label                                malicious
appRecognitionVerdict UNEVALUATED                                    suspicious
strongest device label MEETS_BASIC_INTEGRITY                         suspicious
appLicensingVerdict UNLICENSED                                       suspicious
anything else (PLAY_RECOGNIZED, DEVICE or STRONG, LICENSED or        ok
UNEVALUATED licence)
==================================================================  ==========

A malicious outcome raises (request-binding failures as
:class:`AttestationChallengeError`, stale tokens as :class:`AttestationExpiredError`,
the rest as :class:`AttestationPolicyError`); a suspicious one returns a result with
fraud signals, and the server records them as events.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from modelseal.attestation.base import (
    AttestationChainError,
    AttestationChallengeError,
    AttestationConfigError,
    AttestationExpiredError,
    AttestationMalformedError,
    AttestationPolicyError,
    AttestationResult,
    Signal,
    client_data_hash,
)
from modelseal.keys import RecipientPublicKey

__all__ = [
    "PLATFORM",
    "Outcome",
    "PlayIntegrityVerifier",
    "VerdictAssessment",
    "assess_verdict",
    "decode_classic_token",
    "expected_request_binding",
]

PLATFORM = "play-integrity"
MAX_TOKEN_BYTES = 16 * 1024
_JWE_HEADER = {"alg": "A256KW", "enc": "A256GCM"}
_DEVICE_LEVELS = (
    ("MEETS_STRONG_INTEGRITY", "strong"),
    ("MEETS_DEVICE_INTEGRITY", "device"),
    ("MEETS_BASIC_INTEGRITY", "basic"),
)
_APP_VERDICTS = frozenset({"PLAY_RECOGNIZED", "UNRECOGNIZED_VERSION", "UNEVALUATED"})
_LICENSING_VERDICTS = frozenset({"LICENSED", "UNLICENSED", "UNEVALUATED"})


class Outcome(StrEnum):
    """The verdict of the table, ordered from best to worst."""

    OK = "ok"
    SUSPICIOUS = "suspicious"
    MALICIOUS = "malicious"


_SEVERITY = {Outcome.OK: 0, Outcome.SUSPICIOUS: 1, Outcome.MALICIOUS: 2}


@dataclass(frozen=True, slots=True)
class VerdictAssessment:
    """The table applied to one verdict payload.

    Attributes:
        outcome: The worst outcome of all matching rows.
        level: The strongest device label: ``strong``, ``device``, ``basic`` or ``none``.
        reasons: The rows that matched (stable identifiers, for records and errors).
        signals: Fraud signals for the suspicious rows.
    """

    outcome: Outcome
    level: str
    reasons: tuple[str, ...]
    signals: tuple[str, ...]


def _b64url_decode(text: str, what: str) -> bytes:
    if not text or len(text) % 4 == 1 or not all(c.isalnum() or c in "-_" for c in text):
        raise AttestationMalformedError(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AttestationMalformedError(f"{what} is not base64url") from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AttestationMalformedError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise AttestationMalformedError(f"{what} must be a JSON object")
    return value


def expected_request_binding(challenge: bytes, device_key: RecipientPublicKey | None) -> str:
    """The nonce (classic) or requestHash (standard) the app must send: base64url, no pad."""
    return base64.urlsafe_b64encode(client_data_hash(challenge, device_key)).rstrip(b"=").decode()


def _verify_jws(
    token: str, key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey, what: str
) -> bytes:
    parts = token.split(".")
    if len(parts) != 3:
        raise AttestationMalformedError(f"{what} must be a compact JWS")
    header = _json_object(_b64url_decode(parts[0], f"{what} header"), f"{what} header")
    signature = _b64url_decode(parts[2], f"{what} signature")
    signed = (parts[0] + "." + parts[1]).encode("ascii")
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            if header.get("alg") != "ES256" or len(signature) != 64:
                raise AttestationMalformedError(f"{what} must be ES256")
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        else:
            if header.get("alg") != "EdDSA" or len(signature) != 64:
                raise AttestationMalformedError(f"{what} must be EdDSA")
            key.verify(signature, signed)
    except InvalidSignature:
        raise AttestationChainError(f"the {what} signature does not verify") from None
    if "crit" in header:
        raise AttestationMalformedError(f"{what} carries unsupported critical headers")
    return _b64url_decode(parts[1], f"{what} payload")


def decode_classic_token(
    token: bytes, *, decryption_key: bytes, verification_key: ec.EllipticCurvePublicKey
) -> dict[str, Any]:
    """Decrypt (A256KW + A256GCM) and verify (ES256) a classic integrity token.

    Raises:
        AttestationMalformedError: Not a compact JWE/JWS of the expected algorithms.
        AttestationChainError: Decryption or the signature failed (tampered, wrong key).
    """
    if len(token) > MAX_TOKEN_BYTES:
        raise AttestationMalformedError(f"integrity token must be at most {MAX_TOKEN_BYTES} bytes")
    try:
        text = token.decode("ascii")
    except UnicodeDecodeError:
        raise AttestationMalformedError("integrity token must be ASCII") from None
    parts = text.split(".")
    if len(parts) != 5:
        raise AttestationMalformedError("integrity token must be a compact JWE")
    protected, wrapped_b64, iv_b64, ciphertext_b64, tag_b64 = parts
    header = _json_object(_b64url_decode(protected, "JWE header"), "JWE header")
    if header != _JWE_HEADER:
        raise AttestationMalformedError("JWE header must be exactly A256KW / A256GCM")
    wrapped = _b64url_decode(wrapped_b64, "JWE encrypted key")
    iv = _b64url_decode(iv_b64, "JWE iv")
    ciphertext = _b64url_decode(ciphertext_b64, "JWE ciphertext") if ciphertext_b64 else b""
    tag = _b64url_decode(tag_b64, "JWE tag")
    if len(wrapped) != 40 or len(iv) != 12 or len(tag) != 16:
        raise AttestationMalformedError("JWE key, iv or tag has the wrong length")
    try:
        cek = aes_key_unwrap(decryption_key, wrapped)
        plaintext = AESGCM(cek).decrypt(iv, ciphertext + tag, protected.encode("ascii"))
    except (InvalidUnwrap, InvalidTag, ValueError):
        raise AttestationChainError("the integrity token does not decrypt") from None
    try:
        inner = plaintext.decode("ascii")
    except UnicodeDecodeError:
        raise AttestationMalformedError("the JWE payload must be a compact JWS") from None
    payload = _verify_jws(inner, verification_key, "integrity token JWS")
    return _json_object(payload, "integrity verdict")


def _strongest_label(labels: object) -> str:
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise AttestationMalformedError("deviceRecognitionVerdict must be a list of strings")
    for label, level in _DEVICE_LEVELS:
        if label in labels:
            return level
    return "none"


def _section(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = payload.get(name)
    if not isinstance(value, dict):
        raise AttestationMalformedError(f"verdict lacks the {name} object")
    return value


def _timestamp_ms(value: object) -> int:
    if isinstance(value, bool):
        raise AttestationMalformedError("timestampMillis must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value)
    raise AttestationMalformedError("timestampMillis must be an integer")


def assess_verdict(
    payload: Mapping[str, Any],
    *,
    expected_binding: str,
    package_names: frozenset[str],
    now: int,
    max_age_seconds: int,
    max_future_seconds: int = 60,
) -> VerdictAssessment:
    """Apply the module's table to a decoded verdict payload. Pure; never raises for policy.

    Raises:
        AttestationMalformedError: A field the table needs is missing or mistyped.
    """
    request = _section(payload, "requestDetails")
    app = _section(payload, "appIntegrity")
    device = _section(payload, "deviceIntegrity")
    account = payload.get("accountDetails", {})
    if not isinstance(account, dict):
        raise AttestationMalformedError("accountDetails must be an object")
    reasons: list[tuple[Outcome, str]] = []

    binding = request.get("requestHash", request.get("nonce"))
    if not isinstance(binding, str):
        raise AttestationMalformedError("requestDetails lacks nonce or requestHash")
    if not hmac.compare_digest(binding.rstrip("=").encode(), expected_binding.encode()):
        reasons.append((Outcome.MALICIOUS, "request_binding_mismatch"))
    request_package = request.get("requestPackageName")
    if not isinstance(request_package, str) or request_package not in package_names:
        reasons.append((Outcome.MALICIOUS, "package_mismatch"))
    app_package = app.get("packageName")
    if app_package is not None and (
        not isinstance(app_package, str) or app_package not in package_names
    ):
        reasons.append((Outcome.MALICIOUS, "package_mismatch"))
    issued_ms = _timestamp_ms(request.get("timestampMillis"))
    if not (now - max_age_seconds) * 1000 <= issued_ms <= (now + max_future_seconds) * 1000:
        reasons.append((Outcome.MALICIOUS, "stale_timestamp"))

    app_verdict = app.get("appRecognitionVerdict")
    if app_verdict == "UNEVALUATED":
        reasons.append((Outcome.SUSPICIOUS, "app_unevaluated"))
    elif app_verdict != "PLAY_RECOGNIZED":
        reasons.append((Outcome.MALICIOUS, "app_unrecognized"))

    level = _strongest_label(device.get("deviceRecognitionVerdict", []))
    if level == "none":
        reasons.append((Outcome.MALICIOUS, "no_device_integrity"))
    elif level == "basic":
        reasons.append((Outcome.SUSPICIOUS, "basic_integrity_only"))

    licence = account.get("appLicensingVerdict", "UNEVALUATED")
    if not isinstance(licence, str) or licence not in _LICENSING_VERDICTS:
        raise AttestationMalformedError("appLicensingVerdict has an unknown value")
    if licence == "UNLICENSED":
        reasons.append((Outcome.SUSPICIOUS, "unlicensed"))

    outcome = Outcome.OK
    for severity, _ in reasons:
        if _SEVERITY[severity] > _SEVERITY[outcome]:
            outcome = severity
    signal_by_reason = {
        "app_unevaluated": Signal.UNEVALUATED,
        "basic_integrity_only": Signal.WEAK_DEVICE_INTEGRITY,
        "unlicensed": Signal.NOT_FROM_STORE,
        "app_unrecognized": Signal.NOT_FROM_STORE,
        "no_device_integrity": Signal.NO_DEVICE_INTEGRITY,
    }
    names = tuple(dict.fromkeys(name for _, name in reasons))
    signals = tuple(dict.fromkeys(str(signal_by_reason[n]) for n in names if n in signal_by_reason))
    return VerdictAssessment(outcome, level, names, signals)


class PlayIntegrityVerifier:
    """Verifies Play Integrity evidence for the configured package names.

    Attributes:
        platform: ``"play-integrity"``.
    """

    platform = PLATFORM

    def __init__(
        self,
        package_names: Sequence[str],
        *,
        decryption_key: bytes | None = None,
        verification_key: ec.EllipticCurvePublicKey | None = None,
        backend_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | None = None,
        max_age_seconds: int = 300,
    ) -> None:
        """Configure the verifier.

        Args:
            package_names: Accepted Android package names.
            decryption_key: The 32-byte AES key of classic tokens (Play Console).
            verification_key: The P-256 key that signs classic tokens (Play Console).
            backend_key: The operator backend's key for handed-over verdicts.
            max_age_seconds: Oldest ``timestampMillis`` accepted.

        Raises:
            AttestationConfigError: No package, half a classic key pair, a key of the
                wrong size, or no way at all to accept a verdict.
        """
        if not package_names:
            raise AttestationConfigError("play-integrity: at least one package name is required")
        if (decryption_key is None) != (verification_key is None):
            raise AttestationConfigError(
                "play-integrity: decryption and verification keys go together"
            )
        if decryption_key is not None and len(decryption_key) != 32:
            raise AttestationConfigError("play-integrity: the decryption key must be 32 bytes")
        if verification_key is not None and not isinstance(verification_key.curve, ec.SECP256R1):
            raise AttestationConfigError("play-integrity: the verification key must be P-256")
        if decryption_key is None and backend_key is None:
            raise AttestationConfigError(
                "play-integrity: configure classic token keys or a backend key"
            )
        if not 10 <= max_age_seconds <= 3600:
            raise AttestationConfigError("play-integrity: max_age_seconds must be 10..3600")
        self._packages = frozenset(package_names)
        self._decryption_key = decryption_key
        self._verification_key = verification_key
        self._backend_key = backend_key
        self._max_age_seconds = max_age_seconds

    @staticmethod
    def load_public_key(data: bytes) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
        """Load a PEM, or base64 DER SubjectPublicKeyInfo (as the Play Console shows it).

        Raises:
            AttestationConfigError: Not a P-256 or Ed25519 public key.
        """
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                key = serialization.load_pem_public_key(data)
            else:
                key = serialization.load_der_public_key(base64.b64decode(data, validate=True))
        except (ValueError, binascii.Error, TypeError):
            raise AttestationConfigError("play-integrity: not a public key") from None
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        if isinstance(key, ed25519.Ed25519PublicKey):
            return key
        raise AttestationConfigError("play-integrity: keys must be P-256 or Ed25519")

    def decode(self, evidence: bytes) -> tuple[dict[str, Any], str]:
        """The verdict payload of ``evidence`` and its source (``classic`` | ``backend``).

        Raises:
            AttestationMalformedError: Neither form, or a form that is not configured.
            AttestationChainError: Decryption or a signature failed.
        """
        if len(evidence) > MAX_TOKEN_BYTES:
            raise AttestationMalformedError(
                f"integrity evidence must be at most {MAX_TOKEN_BYTES} bytes"
            )
        dots = evidence.count(b".")
        if dots == 4:
            if self._decryption_key is None or self._verification_key is None:
                raise AttestationMalformedError("classic integrity tokens are not configured")
            payload = decode_classic_token(
                evidence,
                decryption_key=self._decryption_key,
                verification_key=self._verification_key,
            )
            return payload, "classic"
        if dots == 2:
            if self._backend_key is None:
                raise AttestationMalformedError("backend verdicts are not configured")
            try:
                text = evidence.decode("ascii")
            except UnicodeDecodeError:
                raise AttestationMalformedError("backend verdict must be ASCII") from None
            payload_bytes = _verify_jws(text, self._backend_key, "backend verdict")
            payload = _json_object(payload_bytes, "backend verdict")
            # The backend may wrap Google's answer as {"tokenPayloadExternal": {...}}.
            inner = payload.get("tokenPayloadExternal", payload)
            if not isinstance(inner, dict):
                raise AttestationMalformedError("tokenPayloadExternal must be an object")
            return inner, "backend"
        raise AttestationMalformedError("integrity evidence must be a compact JWE or JWS")

    def verify(
        self,
        evidence: bytes,
        *,
        challenge: bytes,
        device_key: RecipientPublicKey | None,
        now: int,
    ) -> AttestationResult:
        """Decode ``evidence`` and apply the table for ``challenge`` and ``device_key``.

        Raises:
            AttestationMalformedError: The evidence or verdict does not parse.
            AttestationChainError: Decryption or a signature failed.
            AttestationChallengeError: The nonce / requestHash or package is not ours.
            AttestationExpiredError: The verdict is outside the freshness window.
            AttestationPolicyError: The app or device verdict is malicious.
        """
        payload, source = self.decode(evidence)
        assessment = assess_verdict(
            payload,
            expected_binding=expected_request_binding(challenge, device_key),
            package_names=self._packages,
            now=now,
            max_age_seconds=self._max_age_seconds,
        )
        if assessment.outcome is Outcome.MALICIOUS:
            reasons = set(assessment.reasons)
            if reasons & {"request_binding_mismatch", "package_mismatch"}:
                raise AttestationChallengeError(
                    "the integrity verdict is not for this challenge, key or package"
                )
            if "stale_timestamp" in reasons:
                raise AttestationExpiredError("the integrity verdict is outside its time window")
            raise AttestationPolicyError(
                "the integrity verdict is malicious: " + ", ".join(assessment.reasons)
            )
        app = payload.get("appIntegrity", {})
        return AttestationResult(
            platform=self.platform,
            level=assessment.level,
            key_id=None,
            facts={
                "source": source,
                "outcome": str(assessment.outcome),
                "reasons": list(assessment.reasons),
                "app_recognition": str(app.get("appRecognitionVerdict")),
                "version_code": str(app.get("versionCode", "")),
            },
            signals=assessment.signals,
        )
