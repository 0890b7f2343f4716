"""The device client SDK.

What runs on the device: key storage (:mod:`modelseal.client.keystore`), on top
of which the app opens issued packages with its device key and re-seals them at
rest under a device-only KEK::

    keystore = FileKeystore(app_dir / "keys", Passphrase(passphrase))
    device = keystore.device_key("device")
    opened = open_bytes(package, device, OpenPolicy(issuers=pinned, audience=device_id))
    at_rest = seal_bytes(opened.plaintext, AtRest(keystore.kek("models"), opened.header.claims))

The client depends on :mod:`modelseal.envelope` and :mod:`modelseal.keys`, never
on :mod:`modelseal.server`.
"""

from modelseal.client.keystore import (
    DeviceKey,
    FileKeystore,
    KeyExistsError,
    KeyInfo,
    KeyKind,
    KeyNotFoundError,
    KeyringMasterKey,
    KeyringUnavailableError,
    Keystore,
    KeystoreError,
    KeystoreIntegrityError,
    KeystoreLockedError,
    Passphrase,
    PKCS11Keystore,
)

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
]
