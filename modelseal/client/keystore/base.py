"""The keystore interface of the device SDK, its errors and key names.

A keystore holds a device's own keys: the device key that issued packages are
sealed to (an :class:`~modelseal.keys.HPKERecipient`), and KEKs that re-seal
models at rest (:class:`~modelseal.keys.KEKWrapper`). The envelope takes these
objects directly::

    opened = open_bytes(package, keystore.device_key("device"), policy)
    at_rest = seal_bytes(opened.plaintext, AtRest(keystore.kek("models"), opened.header.claims))

Device keys and KEKs have separate namespaces; a KEK's name is also its label,
the ``rcpt`` of the packages it wraps.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from modelseal.errors import ModelSealError
from modelseal.keys.kek import KEKWrapper
from modelseal.keys.kem import KEM, HPKERecipient, RecipientPublicKey

__all__ = [
    "DeviceKey",
    "KeyExistsError",
    "KeyInfo",
    "KeyKind",
    "KeyNotFoundError",
    "KeyringUnavailableError",
    "Keystore",
    "KeystoreError",
    "KeystoreIntegrityError",
    "KeystoreLockedError",
    "validate_name",
]

MAX_NAME_CHARS = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class KeystoreError(ModelSealError):
    """A keystore cannot be used as asked (unsafe directory, unusable backend, ...)."""

    code = "keystore_error"


class KeyNotFoundError(KeystoreError):
    """No key of that kind has that name."""

    code = "key_not_found"


class KeyExistsError(KeystoreError):
    """A key of that kind already has that name; keys are never overwritten."""

    code = "key_exists"


class KeystoreLockedError(KeystoreError):
    """The secret that unlocks the key is wrong or missing (passphrase, keyring entry)."""

    code = "keystore_locked"


class KeystoreIntegrityError(KeystoreError):
    """A stored key failed authentication under the right secret: the file was altered."""

    code = "keystore_integrity_failed"


class KeyringUnavailableError(KeystoreError):
    """No OS keyring backend that stores secrets safely is available."""

    code = "keyring_unavailable"


def validate_name(name: str) -> str:
    """Check a key name: 1-64 of ``A-Z a-z 0-9 . _ -``, not starting with ``.``, ``_`` or ``-``.

    Names become file names and token labels, so the alphabet is the portable subset
    of both.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeystoreError(
            f"key name must be 1-{MAX_NAME_CHARS} characters of A-Z a-z 0-9 . _ - "
            f"starting with a letter or digit, got {name!r}"
        )
    return name


class KeyKind(enum.StrEnum):
    """What a keystore entry is."""

    DEVICE = "device"
    KEK = "kek"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One keystore entry, as listed; holds no secret.

    Attributes:
        name: The key's name (for a KEK, also its label).
        kind: Device key or KEK.
        kem: The device key's KEM; None for a KEK.
        kid: The device key's FORMAT §6 key id; None for a KEK.
    """

    name: str
    kind: KeyKind
    kem: KEM | None = None
    kid: str | None = None


@runtime_checkable
class DeviceKey(HPKERecipient, Protocol):
    """A device key: opens HPKE-wrapped DEKs and shows its public half for registration."""

    def public_key(self) -> RecipientPublicKey:
        """The public half to register with the issuing server."""
        ...


class Keystore(Protocol):
    """Where a device keeps its own keys.

    Creation never overwrites: a second ``create_*`` with the same name raises
    :class:`KeyExistsError`. Lookups raise :class:`KeyNotFoundError`.
    """

    def create_device_key(self, name: str, kem: KEM = KEM.P256) -> DeviceKey:
        """Generate and store a new device key pair."""
        ...

    def device_key(self, name: str) -> DeviceKey:
        """Load the device key ``name``."""
        ...

    def create_kek(self, name: str) -> KEKWrapper:
        """Generate and store a new AES-256 KEK labelled ``name``."""
        ...

    def kek(self, name: str) -> KEKWrapper:
        """Load the KEK ``name``."""
        ...

    def list_keys(self) -> list[KeyInfo]:
        """Every entry, device keys then KEKs, each sorted by name."""
        ...

    def delete(self, kind: KeyKind, name: str) -> None:
        """Forget a key for good: packages sealed to it can no longer be opened."""
        ...
