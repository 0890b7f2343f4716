"""Key-encryption keys (KEKs) for the device at-rest wrap (FORMAT §4, rtype ``kek``).

A KEK only ever wraps one fresh 32-byte DEK per package with AES-256-GCM and a
random 96-bit nonce; it never encrypts model data itself. NIST SP 800-38D allows
2^32 random-nonce uses of one key, far beyond the number of models a device
keeps, so a long-lived KEK stays within its limits.
"""

from __future__ import annotations

import os
import re
from typing import NoReturn, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelseal.errors import DEKUnwrapError, KeyFormatError

__all__ = ["KEK", "KEKWrapper"]

KEK_BYTES = 32
WRAP_NONCE_BYTES = 12
_LABEL = re.compile(r"[\x21-\x7e]{1,64}")


def validate_label(label: str) -> str:
    """Check a KEK label: 1-64 printable ASCII characters, no spaces."""
    if not _LABEL.fullmatch(label):
        raise KeyFormatError(f"KEK label must be 1-64 printable ASCII characters, got {label!r}")
    return label


@runtime_checkable
class KEKWrapper(Protocol):
    """Anything that wraps and unwraps DEKs under a KEK (software, PKCS#11, platform keystore)."""

    @property
    def label(self) -> str:
        """The opaque label written to the header's ``rcpt``."""
        ...

    def wrap(self, dek: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Return (12-byte nonce, 48-byte wrapped DEK)."""
        ...

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        """Return the DEK; raise :class:`DEKUnwrapError` when it does not open."""
        ...


class KEK:
    """A software AES-256 KEK; implements :class:`KEKWrapper`."""

    __slots__ = ("_aead", "_key", "_label")

    def __init__(self, label: str, key: bytes) -> None:
        """Load a KEK from its 32 raw bytes.

        Raises:
            KeyFormatError: The key is not 32 bytes or the label is malformed.
        """
        if len(key) != KEK_BYTES:
            raise KeyFormatError(f"KEK must be {KEK_BYTES} bytes, got {len(key)}")
        self._label = validate_label(label)
        self._key = bytes(key)
        self._aead = AESGCM(self._key)

    @classmethod
    def generate(cls, label: str) -> KEK:
        """Generate a fresh random KEK."""
        return cls(label, AESGCM.generate_key(bit_length=256))

    @property
    def label(self) -> str:
        """The opaque label written to the header's ``rcpt``."""
        return self._label

    def secret_bytes(self) -> bytes:
        """The raw key. Handle with care."""
        return self._key

    def wrap(self, dek: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Wrap ``dek`` under a fresh random nonce."""
        nonce = os.urandom(WRAP_NONCE_BYTES)
        return nonce, self._aead.encrypt(nonce, dek, aad)

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        """Unwrap a DEK.

        Raises:
            DEKUnwrapError: Wrong KEK, or the nonce, wrapped DEK or header was altered.
        """
        try:
            return self._aead.decrypt(nonce, wrapped, aad)
        except (InvalidTag, ValueError):
            raise DEKUnwrapError("DEK unwrap failed") from None

    def __repr__(self) -> str:
        return f"KEK(label={self._label!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("keys cannot be pickled")
