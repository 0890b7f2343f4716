"""What every key backend offers, and the vocabulary of the key service.

A *purpose* says what a key signs; one key never serves two purposes:

* ``issuer``: FORMAT §7 package signatures (Ed25519 or ES256), published in the
  issuer JWK Set;
* ``link``: download-link tokens, a MAC the server alone checks (HMAC-SHA256);
* ``checkpoint``: signed audit-log checkpoints (Ed25519 or ES256).

A backend creates keys, hands out objects that use them, and destroys them. It keeps
no lifecycle state: that is :class:`~modelseal.server.keyservice.service.KeyService`'s,
in the database. Backends never return private or secret key bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from modelseal.keys import IssuerPublicKey, SignatureAlgorithm
from modelseal.server.errors import ConflictError, NotFoundError, ServerError

__all__ = [
    "HMAC_SHA256",
    "GeneratedKey",
    "KeyBackend",
    "KeyNotFoundError",
    "KeyPurpose",
    "KeyState",
    "KeyStateError",
    "KeyUnsupportedError",
    "MACKey",
    "ManagedSigner",
    "allowed_algs",
]

HMAC_SHA256 = "HS256"


class KeyPurpose(StrEnum):
    """What a key signs."""

    ISSUER = "issuer"
    LINK = "link"
    CHECKPOINT = "checkpoint"


class KeyState(StrEnum):
    """Lifecycle states; see :mod:`modelseal.server.keyservice.service`."""

    CREATED = "created"
    ACTIVE = "active"
    RETIRING = "retiring"
    RETIRED = "retired"
    REVOKED = "revoked"


def allowed_algs(purpose: KeyPurpose) -> frozenset[str]:
    """The algorithms a key of ``purpose`` may use."""
    if purpose is KeyPurpose.LINK:
        return frozenset({HMAC_SHA256})
    return frozenset({str(SignatureAlgorithm.ED25519), str(SignatureAlgorithm.ES256)})


class KeyNotFoundError(NotFoundError):
    """No managed key of that purpose has that key id."""

    code = "key_not_found"


class KeyStateError(ConflictError):
    """The lifecycle transition is not allowed from the key's current state."""

    code = "key_state_conflict"


class KeyUnsupportedError(ServerError):
    """The backend cannot make or use a key of that purpose and algorithm."""

    code = "key_unsupported"


class ManagedSigner(Protocol):
    """An asymmetric signing key: :class:`~modelseal.keys.Signer` plus its public half."""

    @property
    def alg(self) -> SignatureAlgorithm:
        """The signature algorithm."""
        ...

    @property
    def kid(self) -> str:
        """The FORMAT §6 key id of the public half."""
        ...

    def public_key(self) -> IssuerPublicKey:
        """The verification key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Ed25519 over ``message``, or ECDSA P-256 over SHA-256(``message``); 64 bytes."""
        ...


class MACKey(Protocol):
    """A secret MAC key that computes HMAC-SHA256 and never reveals itself."""

    @property
    def kid(self) -> str:
        """A key id that says nothing about the secret."""
        ...

    def mac(self, message: bytes) -> bytes:
        """HMAC-SHA256(key, ``message``), 32 bytes."""
        ...


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """What a backend reports about a key it just generated (public facts only).

    Attributes:
        kid: The key id (FORMAT §6 for asymmetric keys, random for MAC keys).
        alg: ``Ed25519``, ``ES256`` or ``HS256``.
        handle: Where the backend finds it again (file name, token label).
        public_jwk: The public JWK of an asymmetric key, None for a MAC key.
    """

    kid: str
    alg: str
    handle: str
    public_jwk: Mapping[str, Any] | None = field(default=None)


class KeyBackend(Protocol):
    """Where keys are generated, used and destroyed."""

    @property
    def name(self) -> str:
        """``local`` or ``pkcs11``: written to each key's row."""
        ...

    def generate(self, purpose: KeyPurpose, alg: str) -> GeneratedKey:
        """Generate a new key of ``purpose``; the secret half never leaves the backend.

        Raises:
            KeyUnsupportedError: The backend cannot hold such a key.
        """
        ...

    def signer(self, purpose: KeyPurpose, kid: str, handle: str) -> ManagedSigner:
        """Open an asymmetric key for signing.

        Raises:
            KeyNotFoundError: The key is gone from the backend.
        """
        ...

    def mac_key(self, kid: str, handle: str) -> MACKey:
        """Open a MAC key.

        Raises:
            KeyNotFoundError: The key is gone from the backend.
        """
        ...

    def destroy(self, purpose: KeyPurpose, kid: str, handle: str) -> None:
        """Delete the secret half for good (a missing key is not an error)."""
        ...

    def close(self) -> None:
        """Release the backend (log out of a token)."""
        ...
