"""Device keystores: where the client SDK keeps its device keys and at-rest KEKs.

* :class:`Keystore`: the interface. Device keys come back as
  :class:`~modelseal.keys.HPKERecipient` objects with a ``public_key()``; KEKs as
  :class:`~modelseal.keys.KEKWrapper`. Both go straight into
  :func:`modelseal.envelope.open_bytes` and :class:`modelseal.envelope.AtRest`.
* :class:`FileKeystore`: one sealed file per key, unlocked by a :class:`Passphrase`
  (scrypt) or a :class:`KeyringMasterKey` (OS keyring).
* :class:`PKCS11Keystore`: keys generated in, and never leaving, a PKCS#11 token.
"""

from modelseal.client.keystore.base import (
    DeviceKey,
    KeyExistsError,
    KeyInfo,
    KeyKind,
    KeyNotFoundError,
    KeyringUnavailableError,
    Keystore,
    KeystoreError,
    KeystoreIntegrityError,
    KeystoreLockedError,
    validate_name,
)
from modelseal.client.keystore.file import FileKeystore
from modelseal.client.keystore.secrets import (
    KeyringMasterKey,
    Passphrase,
    SecretSource,
    usable_keyring,
)
from modelseal.client.keystore.token import PKCS11Keystore

__all__ = [
    "DeviceKey",
    "FileKeystore",
    "KeyExistsError",
    "KeyInfo",
    "KeyKind",
    "KeyNotFoundError",
    "KeyringMasterKey",
    "KeyringUnavailableError",
    "Keystore",
    "KeystoreError",
    "KeystoreIntegrityError",
    "KeystoreLockedError",
    "PKCS11Keystore",
    "Passphrase",
    "SecretSource",
    "usable_keyring",
    "validate_name",
]
