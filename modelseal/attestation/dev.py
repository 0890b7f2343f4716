"""INSECURE development attestation: a software signature, for the demo and tests only.

It proves nothing about a device. Anyone holding the development attestation key (by
default derived from a constant published right here) can make it. It exists so that
the demo and the test suite can exercise the attestation flow (challenge, binding to
the device key, policy, records) without Apple or Google hardware.

Evidence is an Ed25519 signature::

    evidence = Ed25519-Sign(dev_key, "modelseal/1 insecure-dev attestation\\n" || client_data)

with ``client_data`` from :func:`modelseal.attestation.base.client_data`. The verifier
refuses to be built, and refuses to verify, in production mode.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from modelseal.attestation.base import (
    AttestationChainError,
    AttestationConfigError,
    AttestationMalformedError,
    AttestationResult,
    client_data,
)
from modelseal.keys import RecipientPublicKey

__all__ = ["PLATFORM", "InsecureDevAttester", "InsecureDevVerifier"]

PLATFORM = "insecure-dev"
_LABEL = b"modelseal/1 insecure-dev attestation\n"
# Public on purpose: this seed is in the source code, so the key it makes is no secret.
_PUBLISHED_SEED = hashlib.sha256(b"modelseal insecure development attestation key").digest()
_SIGNATURE_BYTES = 64


class InsecureDevAttester:
    """The device side: signs client data with the (public) development key.

    Attributes:
        platform: ``"insecure-dev"``.
    """

    platform = PLATFORM

    def __init__(self, seed: bytes = _PUBLISHED_SEED) -> None:
        """Use the published development key, or one made from ``seed`` (32 bytes)."""
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)

    @property
    def public_key_bytes(self) -> bytes:
        """The raw Ed25519 public key the verifier must be given."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def attest(self, challenge: bytes, device_key: RecipientPublicKey | None) -> bytes:
        """The evidence for ``challenge`` and ``device_key``."""
        return self._key.sign(_LABEL + client_data(challenge, device_key))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("InsecureDevAttester holds a private key and cannot be pickled")


class InsecureDevVerifier:
    """Verifies development attestations. INSECURE: never enable it in production.

    Attributes:
        platform: ``"insecure-dev"``.
    """

    platform = PLATFORM

    def __init__(self, *, production: bool, public_key: bytes | None = None) -> None:
        """Configure the verifier.

        Args:
            production: Whether the server runs in production mode (then: refused).
            public_key: The raw Ed25519 key; default the published development key.

        Raises:
            AttestationConfigError: In production mode, or a malformed key.
        """
        if production:
            raise AttestationConfigError("the insecure-dev verifier is refused in production mode")
        self._production = production
        raw = public_key if public_key is not None else InsecureDevAttester().public_key_bytes
        try:
            self._key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise AttestationConfigError("insecure-dev: public key must be 32 bytes") from None

    def verify(
        self,
        evidence: bytes,
        *,
        challenge: bytes,
        device_key: RecipientPublicKey | None,
        now: int,
    ) -> AttestationResult:
        """Check the development signature over the client data.

        Raises:
            AttestationConfigError: The verifier was switched to production mode.
            AttestationMalformedError: The evidence is not a 64-byte signature.
            AttestationChainError: The signature does not verify.
        """
        if self._production:  # defence in depth against a mutated instance
            raise AttestationConfigError("the insecure-dev verifier is refused in production mode")
        if len(evidence) != _SIGNATURE_BYTES:
            raise AttestationMalformedError(
                f"insecure-dev evidence must be {_SIGNATURE_BYTES} bytes, got {len(evidence)}"
            )
        message = _LABEL + client_data(challenge, device_key)
        try:
            self._key.verify(evidence, message)
        except InvalidSignature:
            raise AttestationChainError("the insecure-dev signature does not verify") from None
        return AttestationResult(
            platform=self.platform,
            level="insecure-dev",
            # No fraud signal: the result says nothing about the device either way, and
            # the level alone tells policies and operators what it is.
            facts={"warning": "insecure development attestation"},
        )
