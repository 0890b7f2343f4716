"""PKCS11Keystore: device keys and KEKs generated and kept in a PKCS#11 token.

Nothing secret ever leaves the token: device keys are P-256 pairs that can only
derive, KEKs AES-256 keys that can only encrypt and decrypt, all sensitive and
never extractable (see :mod:`modelseal.keys.pkcs11`). A key's name is its token
label (CKA_LABEL); a KEK's name is therefore also the ``rcpt`` of what it wraps.
"""

from __future__ import annotations

from modelseal.client.keystore.base import (
    KeyExistsError,
    KeyInfo,
    KeyKind,
    KeyNotFoundError,
    validate_name,
)
from modelseal.errors import UsageError
from modelseal.keys.kem import KEM
from modelseal.keys.pkcs11 import (
    PKCS11KEK,
    PKCS11RecipientKey,
    Token,
    TokenKeyExistsError,
    TokenKeyNotFoundError,
)

__all__ = ["PKCS11Keystore"]


class PKCS11Keystore:
    """A keystore in a PKCS#11 token; implements :class:`~modelseal.client.keystore.Keystore`.

    Hardware keystores hold P-256 keys, so device keys use DHKEM(P-256) only.
    The keystore lists every derive-capable P-256 key and every AES key on the
    token: give the app a token of its own.
    """

    __slots__ = ("_token",)

    def __init__(self, token: Token) -> None:
        """Use keys on an open, logged-in token. Closing the token is the caller's job."""
        self._token = token

    @property
    def token(self) -> Token:
        """The token the keys live in."""
        return self._token

    def create_device_key(self, name: str, kem: KEM = KEM.P256) -> PKCS11RecipientKey:
        """Generate a P-256 device key pair on the token.

        Raises:
            UsageError: ``kem`` is not P-256.
            KeyExistsError: A device key with this name exists.
        """
        if kem is not KEM.P256:
            raise UsageError(f"a PKCS#11 keystore holds p256 device keys only, got {kem.label}")
        try:
            return PKCS11RecipientKey.generate(self._token, validate_name(name))
        except TokenKeyExistsError:
            raise KeyExistsError(f"a device key named {name!r} already exists") from None

    def device_key(self, name: str) -> PKCS11RecipientKey:
        """Find the device key ``name`` on the token.

        Raises:
            KeyNotFoundError: No such device key.
        """
        try:
            return PKCS11RecipientKey.find(self._token, label=validate_name(name))
        except TokenKeyNotFoundError:
            raise KeyNotFoundError(f"no device key named {name!r}") from None

    def create_kek(self, name: str) -> PKCS11KEK:
        """Generate an AES-256 KEK labelled ``name`` on the token.

        Raises:
            KeyExistsError: A KEK with this name exists.
        """
        try:
            return PKCS11KEK.generate(self._token, validate_name(name))
        except TokenKeyExistsError:
            raise KeyExistsError(f"a KEK named {name!r} already exists") from None

    def kek(self, name: str) -> PKCS11KEK:
        """Find the KEK ``name`` on the token.

        Raises:
            KeyNotFoundError: No such KEK.
        """
        try:
            return PKCS11KEK.find(self._token, validate_name(name))
        except TokenKeyNotFoundError:
            raise KeyNotFoundError(f"no KEK named {name!r}") from None

    def list_keys(self) -> list[KeyInfo]:
        """Every device key, then every KEK, on the token, each sorted by name."""
        devices = [
            KeyInfo(key.label, KeyKind.DEVICE, kem=key.kem, kid=key.kid)
            for key in PKCS11RecipientKey.find_all(self._token)
        ]
        keks = [KeyInfo(kek.label, KeyKind.KEK) for kek in PKCS11KEK.find_all(self._token)]
        return devices + keks

    def delete(self, kind: KeyKind, name: str) -> None:
        """Destroy the key on the token.

        Raises:
            KeyNotFoundError: No such key.
        """
        if kind is KeyKind.DEVICE:
            self.device_key(name).destroy()
        else:
            self.kek(name).destroy()

    def __repr__(self) -> str:
        return f"PKCS11Keystore({self._token!r})"
