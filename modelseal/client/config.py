"""``client.json``: which keystore the client uses and, once enrolled, with which server.

::

    {"v": 1, "created_at": 1800000000,
     "keystore": {"kind": "file", "unlock": "passphrase" | "keyring"}
               | {"kind": "pkcs11", "module": "/usr/lib/softhsm/libsofthsm2.so",
                  "token": "label"},
     "max_package_bytes": 4294967296,
     "enrollment": null | {"server": "https://...", "device_id": ..., "kem": "x25519",
                           "kid": ..., "ca_file": null | path, "pins": ["sha256/..."],
                           "app_version": ..., "enrolled_at": ...}}

Nothing secret is kept here: the API token is sealed in ``credentials.mseal``, and
the keystore's passphrase or PIN is supplied by whoever opens the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelseal.client.datadir import read_json_object, write_json_object
from modelseal.client.errors import ClientStateError, NotInitializedError
from modelseal.client.transport import check_server_url, parse_pin
from modelseal.errors import KeyFormatError
from modelseal.keys import KEM

__all__ = [
    "CONFIG_VERSION",
    "CREDENTIALS_KEK_NAME",
    "DEFAULT_MAX_PACKAGE_BYTES",
    "DEVICE_KEY_NAME",
    "MODELS_KEK_NAME",
    "ClientConfig",
    "Enrollment",
    "KeystoreSpec",
    "load_config",
    "save_config",
]

CONFIG_VERSION = 1
DEVICE_KEY_NAME = "device"
MODELS_KEK_NAME = "models"
CREDENTIALS_KEK_NAME = "credentials"
DEFAULT_MAX_PACKAGE_BYTES = 4 << 30
MAX_PACKAGE_BYTES_LIMIT = 1 << 52

KeystoreKind = Literal["file", "pkcs11"]
UnlockKind = Literal["passphrase", "keyring"]


@dataclass(frozen=True, slots=True)
class KeystoreSpec:
    """Which keystore holds the device key and KEKs.

    Attributes:
        kind: ``file`` (:class:`~modelseal.client.keystore.FileKeystore` in ``keys/``)
            or ``pkcs11``.
        unlock: For ``file``: a passphrase or the OS keyring's master key.
        module: For ``pkcs11``: the module (shared library) path.
        token: For ``pkcs11``: the token label.
    """

    kind: KeystoreKind
    unlock: UnlockKind | None = None
    module: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "file":
            if self.unlock not in ("passphrase", "keyring") or self.module or self.token:
                raise ClientStateError("a file keystore needs unlock = passphrase or keyring")
        elif self.kind == "pkcs11":
            if self.unlock is not None or not self.module or not self.token:
                raise ClientStateError("a pkcs11 keystore needs a module path and a token label")
        else:
            raise ClientStateError(f"keystore kind must be file or pkcs11, got {self.kind!r}")

    def to_json(self) -> dict[str, object]:
        """The ``keystore`` member."""
        if self.kind == "file":
            return {"kind": "file", "unlock": self.unlock}
        return {"kind": "pkcs11", "module": self.module, "token": self.token}


@dataclass(frozen=True, slots=True)
class Enrollment:
    """The server this device is enrolled with, and how it is trusted.

    Attributes:
        server: Base URL of the issuance server.
        device_id: This device's id (the ``aud`` of packages issued to it).
        kem: The device key's KEM.
        kid: The device key's FORMAT §6 key id.
        ca_file: PEM bundle that verifies the server's certificate (None: system store).
        pins: ``sha256/<base64>`` SPKI pins of the server's TLS key (empty: no pinning).
        app_version: What the client told the server it is.
        enrolled_at: Unix time of enrolment.
    """

    server: str
    device_id: str
    kem: KEM
    kid: str
    ca_file: str | None
    pins: tuple[str, ...]
    app_version: str
    enrolled_at: int

    def to_json(self) -> dict[str, object]:
        """The ``enrollment`` member."""
        return {
            "server": self.server,
            "device_id": self.device_id,
            "kem": self.kem.label,
            "kid": self.kid,
            "ca_file": self.ca_file,
            "pins": list(self.pins),
            "app_version": self.app_version,
            "enrolled_at": self.enrolled_at,
        }


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The whole of ``client.json``."""

    keystore: KeystoreSpec
    created_at: int
    enrollment: Enrollment | None = None
    max_package_bytes: int = field(default=DEFAULT_MAX_PACKAGE_BYTES)

    def to_json(self) -> dict[str, object]:
        """The document written to ``client.json``."""
        return {
            "v": CONFIG_VERSION,
            "created_at": self.created_at,
            "keystore": self.keystore.to_json(),
            "max_package_bytes": self.max_package_bytes,
            "enrollment": None if self.enrollment is None else self.enrollment.to_json(),
        }


def _members(obj: object, what: str, names: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ClientStateError(f"client.json: {what} must be an object")
    if set(obj) != names:
        raise ClientStateError(
            f"client.json: {what} must have members {sorted(names)}, got {sorted(obj)}"
        )
    return obj


def _string(value: object, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ClientStateError(f"client.json: {what} must be a non-empty string")
    return value


def _integer(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ClientStateError(f"client.json: {what} must be an integer in {low}..{high}")
    return value


def _keystore(obj: object) -> KeystoreSpec:
    if not isinstance(obj, dict):
        raise ClientStateError("client.json: keystore must be an object")
    if obj.get("kind") == "file":
        doc = _members(obj, "keystore", {"kind", "unlock"})
        return KeystoreSpec("file", unlock=doc["unlock"])
    doc = _members(obj, "keystore", {"kind", "module", "token"})
    return KeystoreSpec(
        doc["kind"], module=_string(doc["module"], "module"), token=_string(doc["token"], "token")
    )


def _enrollment(obj: object) -> Enrollment | None:
    if obj is None:
        return None
    names = {"server", "device_id", "kem", "kid", "ca_file", "pins", "app_version", "enrolled_at"}
    doc = _members(obj, "enrollment", names)
    pins = doc["pins"]
    if not isinstance(pins, list):
        raise ClientStateError("client.json: enrollment.pins must be an array")
    for pin in pins:
        if not isinstance(pin, str):
            raise ClientStateError("client.json: enrollment.pins must hold strings")
        parse_pin(pin)
    kem_label = _string(doc["kem"], "enrollment.kem")
    assert kem_label is not None  # _string without optional never returns None
    try:
        kem = KEM.from_label(kem_label)
    except KeyFormatError:
        raise ClientStateError(f"client.json: unknown kem {kem_label!r}") from None
    server = _string(doc["server"], "enrollment.server")
    assert server is not None
    return Enrollment(
        server=check_server_url(server),
        device_id=str(_string(doc["device_id"], "enrollment.device_id")),
        kem=kem,
        kid=str(_string(doc["kid"], "enrollment.kid")),
        ca_file=_string(doc["ca_file"], "enrollment.ca_file", optional=True),
        pins=tuple(pins),
        app_version=str(_string(doc["app_version"], "enrollment.app_version")),
        enrolled_at=_integer(doc["enrolled_at"], "enrollment.enrolled_at", 0, 2**53 - 1),
    )


def load_config(path: Path) -> ClientConfig:
    """Read and validate ``client.json``.

    Raises:
        NotInitializedError: The file does not exist.
        ClientStateError: The file is unsafe or malformed.
    """
    document = read_json_object(path)
    if document is None:
        raise NotInitializedError(f"no client in {path.parent}; run `modelseal device init` first")
    doc = _members(
        document, "the document", {"v", "created_at", "keystore", "max_package_bytes", "enrollment"}
    )
    if doc["v"] != CONFIG_VERSION:
        raise ClientStateError(f"client.json: version must be {CONFIG_VERSION}, got {doc['v']!r}")
    return ClientConfig(
        keystore=_keystore(doc["keystore"]),
        created_at=_integer(doc["created_at"], "created_at", 0, 2**53 - 1),
        enrollment=_enrollment(doc["enrollment"]),
        max_package_bytes=_integer(
            doc["max_package_bytes"], "max_package_bytes", 1, MAX_PACKAGE_BYTES_LIMIT
        ),
    )


def save_config(path: Path, config: ClientConfig) -> None:
    """Write ``client.json`` atomically (mode 0600)."""
    write_json_object(path, config.to_json())
