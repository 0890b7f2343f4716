"""The device client SDK.

What runs on the device::

    keystore = DeviceClient.file_keystore(data_dir, Passphrase(passphrase))
    client = DeviceClient.init(data_dir, keystore, KeystoreSpec("file", unlock="passphrase"))
    client.enroll("https://models.example", api_token, pins=["sha256/..."])
    client.fetch("digits")                  # download, verify, re-seal at rest, acknowledge
    model = client.load("digits")           # decrypt in memory, ONNX Runtime session
    logits = model.run(images)["logits"]

* :mod:`.sdk`: :class:`DeviceClient`, the whole device side (``docs/CLIENT.md``).
* :mod:`.transport`: HTTPS with certificate checks and optional SPKI pinning.
* :mod:`.fetch`: the fetch state machine; :mod:`.download`: job polling with
  back-off, resumable downloads.
* :mod:`.store`: at-rest packages and downloads in progress; :mod:`.outbox`:
  acknowledgements and security events owed to the server.
* :mod:`.runtime`: in-memory loading into ONNX Runtime (imported on first use);
  :mod:`.memory`: wipeable plaintext buffers.
* :mod:`.sealed_weights`: sealed-weights bundles loaded tensor by tensor;
  :mod:`.sealed_safetensors`: lazy per-tensor access to a sealed safetensors model;
  :mod:`.examples`: checking and batching personalisation examples for upload.
* :mod:`.keystore`: device keys and KEKs (file or PKCS#11).

The client depends on :mod:`modelseal.envelope`, :mod:`modelseal.keys` and
:mod:`modelseal.models`, never on :mod:`modelseal.server`.
"""

from modelseal.client.config import ClientConfig, Enrollment, KeystoreSpec
from modelseal.client.download import PollPolicy
from modelseal.client.fetch import FetchResult
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
from modelseal.client.sdk import DeviceClient, EnrollResult, PinRefreshResult
from modelseal.client.store import StoredModel

__all__ = [
    "ClientConfig",
    "DeviceClient",
    "DeviceKey",
    "EnrollResult",
    "Enrollment",
    "FetchResult",
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
    "KeystoreSpec",
    "PKCS11Keystore",
    "Passphrase",
    "PinRefreshResult",
    "PollPolicy",
    "StoredModel",
]
