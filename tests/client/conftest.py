"""Fixtures for the device client tests that need no issuance server."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelseal.client import DeviceClient, KeystoreSpec, Passphrase

# The cheapest scrypt cost the keystore accepts: these tests are not about the KDF.
PASSPHRASE = "client tests passphrase"
SCRYPT_N = 2**14


def new_client(root: Path, **options: object) -> DeviceClient:
    """An initialised (not enrolled) client with a file keystore under ``root``."""
    keystore = DeviceClient.file_keystore(root, Passphrase(PASSPHRASE, n=SCRYPT_N))
    return DeviceClient.init(root, keystore, KeystoreSpec("file", unlock="passphrase"), **options)


@pytest.fixture
def client(tmp_path: Path) -> DeviceClient:
    """A fresh initialised client."""
    return new_client(tmp_path / "device")
