"""The attestation verifier interface, its results, errors, registry and pinned roots.

A *verifier* checks one platform's evidence (an App Attest attestation object, an
Android Key Attestation chain, a Play Integrity token, ...) against a server-issued
challenge and, where the platform can, the device's HPKE key. It returns an
:class:`AttestationResult` or raises an :class:`AttestationError`; it never returns a
bool and never raises anything else on any input.

Binding the device key. Platforms differ in what they attest: Android Key
Attestation attests the registered key itself, while App Attest and Play Integrity
attest a separate key or only the app. So every verifier binds the evidence to the
device's HPKE key through the *client data* built by :func:`client_data`::

    client_data = "modelseal/1 attestation\\n" || challenge (32 bytes) || kid (ASCII hex)

where ``kid`` is the FORMAT §6 key id of the device key (empty when no key is bound).
App Attest signs ``SHA256(client_data)`` as its clientDataHash; Play Integrity carries
``base64url(SHA256(client_data))`` as its nonce or requestHash. A relay that swaps the
device key therefore changes the value the platform must have signed.

Pinned roots are data, not code: PEM files under ``modelseal/attestation/roots/`` (each
with a provenance note in ``roots/README.md``) or paths the operator configures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography import x509

from modelseal.errors import ModelSealError
from modelseal.keys import RecipientPublicKey

__all__ = [
    "CLIENT_DATA_LABEL",
    "AttestationChainError",
    "AttestationChallengeError",
    "AttestationConfigError",
    "AttestationCounterError",
    "AttestationError",
    "AttestationExpiredError",
    "AttestationKeyMismatchError",
    "AttestationMalformedError",
    "AttestationPolicyError",
    "AttestationRequiredError",
    "AttestationResult",
    "AttestationRevokedError",
    "AttestationRootError",
    "AttestationUnsupportedError",
    "Attester",
    "ChallengeExpiredError",
    "ChallengeInvalidError",
    "ChallengeReplayedError",
    "Signal",
    "Verifier",
    "VerifierRegistry",
    "client_data",
    "client_data_hash",
    "load_pem_certificates",
    "load_roots",
    "packaged_root_path",
]

CLIENT_DATA_LABEL = b"modelseal/1 attestation\n"
CHALLENGE_BYTES = 32
MAX_PEM_FILE_BYTES = 1 << 20


# --- errors ------------------------------------------------------------------------------------


class AttestationError(ModelSealError):
    """Attestation evidence was refused. Subclasses say which check failed."""

    code = "attestation_invalid"


class AttestationMalformedError(AttestationError):
    """The evidence does not parse (bad CBOR, DER, JWE/JWS, sizes out of range)."""

    code = "attestation_malformed"


class AttestationChallengeError(AttestationError):
    """The evidence is for another challenge, device key, nonce or request hash."""

    code = "attestation_challenge_mismatch"


class AttestationChainError(AttestationError):
    """A certificate chain or a signature in the evidence does not verify."""

    code = "attestation_chain_invalid"


class AttestationRootError(AttestationChainError):
    """The chain does not end at a pinned root of the platform."""

    code = "attestation_root_untrusted"


class AttestationExpiredError(AttestationError):
    """A certificate or verdict is outside its validity window at ``now``."""

    code = "attestation_expired"


class AttestationCounterError(AttestationError):
    """An assertion counter did not increase (a replayed or cloned assertion)."""

    code = "attestation_counter_replayed"


class AttestationKeyMismatchError(AttestationError):
    """The attested key is not the key claimed (key id, credential id, device key)."""

    code = "attestation_key_mismatch"


class AttestationRevokedError(AttestationError):
    """A certificate of the chain is on the platform's revocation list."""

    code = "attestation_revoked"


class AttestationPolicyError(AttestationError):
    """The evidence is genuine but what it attests does not meet the configured policy."""

    code = "attestation_policy_failed"


class AttestationRequiredError(AttestationPolicyError):
    """The model's policy requires an attestation and none (or too weak a one) was sent."""

    code = "attestation_required"


class AttestationUnsupportedError(AttestationError):
    """The platform named is not configured on this server."""

    code = "attestation_unsupported"


class ChallengeInvalidError(AttestationError):
    """The challenge id is unknown or belongs to another user."""

    code = "attestation_challenge_invalid"


class ChallengeExpiredError(ChallengeInvalidError):
    """The challenge is past its expiry."""

    code = "attestation_challenge_expired"


class ChallengeReplayedError(ChallengeInvalidError):
    """The challenge has already been used once."""

    code = "attestation_challenge_replayed"


class AttestationConfigError(AttestationError):
    """Roots, keys or verifier settings are missing or malformed (an operator error)."""

    code = "attestation_config_invalid"


# --- results -----------------------------------------------------------------------------------


class Signal(StrEnum):
    """Fraud signals a verifier can attach to an otherwise genuine result."""

    UNLOCKED_BOOTLOADER = "unlocked_bootloader"
    UNVERIFIED_BOOT = "unverified_boot"
    DEBUGGABLE = "debuggable"
    NOT_FROM_STORE = "not_from_store"
    UNLICENSED = "unlicensed"
    WEAK_DEVICE_INTEGRITY = "weak_device_integrity"
    NO_DEVICE_INTEGRITY = "no_device_integrity"
    UNEVALUATED = "unevaluated"
    SOFTWARE_KEY = "software_key"
    DEVELOPMENT_ENVIRONMENT = "development_environment"


@dataclass(frozen=True, slots=True)
class AttestationResult:
    """What a verifier established.

    Attributes:
        platform: The verifier's platform name, such as ``"apple-appattest"``.
        level: The strength attested, per platform: ``"production"`` | ``"development"``
            (Apple), ``"strongbox"`` | ``"tee"`` | ``"software"`` (Android),
            ``"strong"`` | ``"device"`` | ``"basic"`` | ``"none"`` (Play Integrity),
            ``"insecure-dev"``.
        key_id: The platform key id (App Attest keyId, base64), if the platform has one.
        facts: JSON-serialisable facts for the record (no secrets).
        signals: Fraud signals (:class:`Signal` values), in a stable order.
    """

    platform: str
    level: str
    key_id: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)
    signals: tuple[str, ...] = ()


class Attester(Protocol):
    """The device side of a platform: evidence for a challenge and the device key."""

    platform: str

    def attest(self, challenge: bytes, device_key: RecipientPublicKey) -> bytes:
        """The evidence over :func:`client_data` of ``challenge`` and ``device_key``."""
        ...


@runtime_checkable
class Verifier(Protocol):
    """A platform's attestation verifier."""

    platform: str

    def verify(
        self,
        evidence: bytes,
        *,
        challenge: bytes,
        device_key: RecipientPublicKey | None,
        now: int,
    ) -> AttestationResult:
        """Verify ``evidence`` for ``challenge`` (raw server challenge) and ``device_key``.

        Raises:
            AttestationError: Any check failed; the subclass says which.
        """
        ...


# --- the client-data binding -------------------------------------------------------------------


def client_data(challenge: bytes, device_key: RecipientPublicKey | None) -> bytes:
    """The bytes every platform must have signed: label, challenge and device key id.

    Raises:
        AttestationChallengeError: ``challenge`` is not 32 bytes.
    """
    if len(challenge) != CHALLENGE_BYTES:
        raise AttestationChallengeError(
            f"challenge must be {CHALLENGE_BYTES} bytes, got {len(challenge)}"
        )
    kid = device_key.kid.encode("ascii") if device_key is not None else b""
    return CLIENT_DATA_LABEL + challenge + kid


def client_data_hash(challenge: bytes, device_key: RecipientPublicKey | None) -> bytes:
    """``SHA256(client_data(challenge, device_key))``."""
    return hashlib.sha256(client_data(challenge, device_key)).digest()


# --- registry ----------------------------------------------------------------------------------


class VerifierRegistry:
    """The configured verifiers, by platform name."""

    def __init__(self, verifiers: Iterable[Verifier] = ()) -> None:
        """Register ``verifiers``.

        Raises:
            AttestationConfigError: Two verifiers claim the same platform.
        """
        self._by_platform: dict[str, Verifier] = {}
        for verifier in verifiers:
            self.register(verifier)

    def register(self, verifier: Verifier) -> None:
        """Add ``verifier`` under its platform name.

        Raises:
            AttestationConfigError: The platform already has a verifier.
        """
        if verifier.platform in self._by_platform:
            raise AttestationConfigError(f"platform {verifier.platform!r} registered twice")
        self._by_platform[verifier.platform] = verifier

    def get(self, platform: str) -> Verifier:
        """The verifier for ``platform``.

        Raises:
            AttestationUnsupportedError: No verifier for it is configured.
        """
        try:
            return self._by_platform[platform]
        except KeyError:
            raise AttestationUnsupportedError(
                f"attestation platform {platform[:64]!r} is not supported here"
            ) from None

    def __contains__(self, platform: object) -> bool:
        return platform in self._by_platform

    @property
    def platforms(self) -> tuple[str, ...]:
        """The registered platform names, sorted."""
        return tuple(sorted(self._by_platform))


# --- pinned roots ------------------------------------------------------------------------------


def packaged_root_path(name: str) -> Path:
    """The path of a PEM file shipped in ``modelseal/attestation/roots/``.

    Raises:
        AttestationConfigError: No such packaged file.
    """
    resource = resources.files("modelseal.attestation").joinpath("roots", name)
    path = Path(str(resource))
    if not path.is_file():
        raise AttestationConfigError(f"no packaged attestation root {name!r}")
    return path


def load_pem_certificates(data: bytes, *, source: str = "<bytes>") -> tuple[x509.Certificate, ...]:
    """Parse one or more PEM certificates.

    Raises:
        AttestationConfigError: No certificate, or a malformed one.
    """
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise AttestationConfigError(f"{source}: not a PEM certificate file") from None
    if not certs:
        raise AttestationConfigError(f"{source}: no certificate found")
    return tuple(certs)


def load_roots(paths: Sequence[str | Path]) -> tuple[x509.Certificate, ...]:
    """Load pinned root certificates from PEM files (each may hold several).

    A path without a directory part that does not exist as given is looked up among
    the packaged roots, so settings may say ``"apple_app_attestation_root_ca.pem"``.

    Raises:
        AttestationConfigError: No path, or a missing, oversized or malformed file.
    """
    if not paths:
        raise AttestationConfigError("no attestation root configured")
    roots: list[x509.Certificate] = []
    for entry in paths:
        path = Path(entry)
        if not path.exists() and path.name == str(entry):
            path = packaged_root_path(str(entry))
        try:
            with path.open("rb") as f:
                data = f.read(MAX_PEM_FILE_BYTES + 1)
        except OSError:
            raise AttestationConfigError(
                f"cannot read attestation root file {str(path)!r}"
            ) from None
        if len(data) > MAX_PEM_FILE_BYTES:
            raise AttestationConfigError(f"attestation root file {str(path)!r} is too large")
        roots.extend(load_pem_certificates(data, source=str(path)))
    return tuple(roots)
