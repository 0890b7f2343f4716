"""Opening the keystore a client's ``client.json`` names, with the secret that unlocks it.

* ``file`` + ``passphrase``: :class:`~modelseal.client.keystore.Passphrase` (scrypt);
* ``file`` + ``keyring``: :class:`~modelseal.client.keystore.KeyringMasterKey` (the
  OS keyring holds a random master key);
* ``pkcs11``: a logged-in :class:`~modelseal.keys.pkcs11.Token` (user PIN), closed
  when the block ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from modelseal.client.config import KeystoreSpec
from modelseal.client.datadir import DataDir
from modelseal.client.keystore import (
    FileKeystore,
    KeyringMasterKey,
    Keystore,
    KeystoreLockedError,
    Passphrase,
    PKCS11Keystore,
    SecretSource,
)

__all__ = ["KEYRING_SERVICE", "default_data_dir", "open_keystore", "secret_source"]

KEYRING_SERVICE = "modelseal-client"


def default_data_dir() -> Path:
    """``$MODELSEAL_CLIENT_DIR``, else ``$XDG_DATA_HOME/modelseal/client``, else
    ``~/.local/share/modelseal/client``."""
    explicit = os.environ.get("MODELSEAL_CLIENT_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "modelseal" / "client"


def secret_source(spec: KeystoreSpec, root: Path, passphrase: str | None) -> SecretSource:
    """The secret source of a file keystore.

    The keyring entry's user name is the data directory's absolute path, so two
    clients on one machine have two master keys.

    Raises:
        KeystoreLockedError: A passphrase is needed and none was given.
        KeyringUnavailableError: No OS keyring can keep the master key.
    """
    if spec.unlock == "passphrase":
        if not passphrase:
            raise KeystoreLockedError(
                "the keystore is locked by a passphrase: set MODELSEAL_KEYSTORE_PASSPHRASE "
                "or pass --passphrase-file"
            )
        return Passphrase(passphrase)
    return KeyringMasterKey(KEYRING_SERVICE, str(root.resolve()))


@contextlib.contextmanager
def open_keystore(
    root: str | os.PathLike[str],
    spec: KeystoreSpec,
    *,
    passphrase: str | None = None,
    pkcs11_pin: str | None = None,
) -> Iterator[Keystore]:
    """Open the keystore of the client in ``root``; a PKCS#11 token is logged out after.

    Raises:
        KeystoreLockedError: The passphrase or PIN is missing.
        KeystoreError, TokenError: The keystore cannot be opened.
    """
    datadir = DataDir(root)
    if spec.kind == "file":
        datadir.create()
        yield FileKeystore(datadir.keys, secret_source(spec, datadir.root, passphrase))
        return
    if not pkcs11_pin:
        raise KeystoreLockedError(
            "the PKCS#11 token needs its user PIN: set MODELSEAL_PKCS11_PIN or pass "
            "--token-pin-file"
        )
    from modelseal.keys.pkcs11 import Token

    assert spec.module is not None  # KeystoreSpec checks pkcs11 specs
    assert spec.token is not None
    with Token(spec.module, spec.token, pkcs11_pin) as token:
        yield PKCS11Keystore(token)
