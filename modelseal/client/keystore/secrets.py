"""Where a :class:`~modelseal.client.keystore.FileKeystore` gets the secret that seals its files.

Two sources, each giving a 32-byte *root key* per file from parameters stored
in that file:

* :class:`Passphrase`: ``root = scrypt(passphrase, salt, n, r, p)``, RFC 7914,
  with a fresh 16-byte salt per file. The passphrase is NFC-normalised first, so
  the same words typed on different platforms give the same key.
* :class:`KeyringMasterKey`: a random 32-byte master key kept in the OS keyring
  (Keychain, Secret Service, Windows Credential Locker, ...) through ``keyring``;
  ``root = HKDF-Extract(salt, master)`` with a fresh 16-byte salt per file. A
  backend that would not keep the secret (``keyring``'s fail and null backends,
  or a plaintext file) is refused, never used as a silent fallback.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import unicodedata
from collections.abc import Mapping
from typing import NoReturn, Protocol, runtime_checkable

import keyring
import keyring.errors
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from keyring.backend import KeyringBackend
from keyring.backends import chainer, fail, null

from modelseal.client.keystore.base import (
    KeyringUnavailableError,
    KeystoreError,
    KeystoreLockedError,
)
from modelseal.errors import KeyFormatError, UsageError

__all__ = [
    "KdfParams",
    "KeyringMasterKey",
    "Passphrase",
    "SecretSource",
    "b64u_decode",
    "b64u_encode",
    "usable_keyring",
]

ROOT_KEY_BYTES = 32
SALT_BYTES = 16
MASTER_KEY_BYTES = 32
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
# Bounds checked on every use, including parameters read from a file: a file must not be
# able to make the device spend gigabytes (or almost nothing) on one derivation.
SCRYPT_MIN_N = 2**14
SCRYPT_MAX_MEMORY_BYTES = 256 * 1024 * 1024
SCRYPT_MAX_R = 32
SCRYPT_MAX_P = 16

KdfParams = dict[str, str | int]


def b64u_encode(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: object, field: str) -> bytes:
    """Strict, canonical base64url without padding; ``field`` names the member in errors."""
    if isinstance(text, str) and text.isascii():
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raw = None
        if raw is not None and b64u_encode(raw) == text:
            return raw
    raise KeyFormatError(f"keystore field {field!r} must be canonical unpadded base64url")


@runtime_checkable
class SecretSource(Protocol):
    """The secret a FileKeystore seals its files under."""

    def new_params(self) -> KdfParams:
        """Parameters for a new file, with a fresh salt; stored in the file as ``kdf``."""
        ...

    def root_key(self, params: Mapping[str, object]) -> bytes:
        """The file's 32-byte root key from its stored ``kdf`` parameters.

        Raises:
            KeystoreLockedError: The file was sealed under another kind of source or
                keyring entry, or the secret is missing.
            KeyFormatError: The parameters are malformed or out of bounds.
        """
        ...


def _int_param(params: Mapping[str, object], name: str) -> int:
    value = params.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise KeyFormatError(f"keystore kdf.{name} must be an integer, got {value!r}")
    return value


def _check_scrypt(n: int, r: int, p: int) -> None:
    if n < SCRYPT_MIN_N or n & (n - 1):
        raise KeyFormatError(f"scrypt n must be a power of two >= {SCRYPT_MIN_N}, got {n}")
    if not 1 <= r <= SCRYPT_MAX_R or 128 * n * r > SCRYPT_MAX_MEMORY_BYTES:
        raise KeyFormatError(
            f"scrypt r must be 1..{SCRYPT_MAX_R} with 128*n*r <= "
            f"{SCRYPT_MAX_MEMORY_BYTES} bytes, got n={n} r={r}"
        )
    if not 1 <= p <= SCRYPT_MAX_P:
        raise KeyFormatError(f"scrypt p must be 1..{SCRYPT_MAX_P}, got {p}")


def _check_alg(params: Mapping[str, object], expected: str) -> None:
    alg = params.get("alg")
    if alg != expected:
        raise KeystoreLockedError(
            f"key was sealed with kdf {alg!r}; this keystore is unlocked with {expected!r}"
        )


class Passphrase:
    """A passphrase, stretched with scrypt (default n=2**15, r=8, p=1: 32 MiB per derivation).

    Root keys derived during this object's life are cached by salt and parameters,
    so a key loaded twice costs one scrypt.
    """

    __slots__ = ("_cache", "_lock", "_n", "_p", "_r", "_secret")

    def __init__(
        self, passphrase: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
    ) -> None:
        """Hold a passphrase and the scrypt cost for new files.

        Raises:
            UsageError: The passphrase is empty or the parameters are out of bounds.
        """
        if not passphrase:
            raise UsageError("passphrase must not be empty")
        try:
            _check_scrypt(n, r, p)
        except KeyFormatError as exc:
            raise UsageError(exc.message) from None
        self._secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
        self._n, self._r, self._p = n, r, p
        self._cache: dict[tuple[bytes, int, int, int], bytes] = {}
        self._lock = threading.Lock()

    def new_params(self) -> KdfParams:
        """Scrypt parameters for a new file, with a fresh random salt."""
        salt = b64u_encode(os.urandom(SALT_BYTES))
        return {"alg": "scrypt", "salt": salt, "n": self._n, "r": self._r, "p": self._p}

    def root_key(self, params: Mapping[str, object]) -> bytes:
        """Derive the file's root key with the stored salt and cost."""
        _check_alg(params, "scrypt")
        salt = b64u_decode(params.get("salt"), "kdf.salt")
        if len(salt) != SALT_BYTES:
            raise KeyFormatError(f"keystore kdf.salt must be {SALT_BYTES} bytes, got {len(salt)}")
        n, r, p = (_int_param(params, name) for name in ("n", "r", "p"))
        _check_scrypt(n, r, p)
        with self._lock:
            cached = self._cache.get((salt, n, r, p))
        if cached is not None:
            return cached
        root = Scrypt(salt=salt, length=ROOT_KEY_BYTES, n=n, r=r, p=p).derive(self._secret)
        with self._lock:
            self._cache[(salt, n, r, p)] = root
        return root

    def __repr__(self) -> str:
        return f"Passphrase(n={self._n}, r={self._r}, p={self._p})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("passphrases cannot be pickled")


def usable_keyring(backend: KeyringBackend) -> bool:
    """True if ``backend`` would really keep a secret.

    ``keyring`` falls back to backends that raise on every call (``fail``) or
    silently drop secrets (``null``), and a chainer with nothing to chain;
    third-party plaintext file backends keep the secret in the clear. None of
    them protects a master key.
    """
    if isinstance(backend, fail.Keyring | null.Keyring):
        return False
    if isinstance(backend, chainer.ChainerBackend):
        return any(usable_keyring(inner) for inner in backend.backends)
    return "plaintext" not in type(backend).__name__.lower()


class KeyringMasterKey:
    """A random master key in the OS keyring, created on first use.

    Two processes creating the first key of a new keyring entry at the same moment
    race: ``keyring`` has no compare-and-set. After writing, the entry is read back
    and the value found there is the one used.
    """

    __slots__ = ("_backend", "_lock", "_service", "_username")

    def __init__(
        self,
        service: str = "modelseal",
        username: str = "keystore-master-key",
        *,
        backend: KeyringBackend | None = None,
    ) -> None:
        """Bind to one keyring entry (``service``, ``username``).

        Args:
            service: The keyring service name.
            username: The keyring user name.
            backend: The keyring backend; by default the one ``keyring`` selects.

        Raises:
            KeyringUnavailableError: The backend would not keep the secret safely.
        """
        self._backend = backend if backend is not None else keyring.get_keyring()
        if not usable_keyring(self._backend):
            raise KeyringUnavailableError(
                f"keyring backend {type(self._backend).__module__}."
                f"{type(self._backend).__qualname__} cannot keep secrets; install an OS keyring "
                "backend or unlock the keystore with a passphrase"
            )
        self._service = service
        self._username = username
        self._lock = threading.Lock()

    def _read(self) -> bytes | None:
        try:
            stored = self._backend.get_password(self._service, self._username)
        except keyring.errors.KeyringError as exc:
            raise KeystoreError(f"keyring read failed: {type(exc).__name__}") from None
        if stored is None:
            return None
        master = b64u_decode(stored, "keyring master key")
        if len(master) != MASTER_KEY_BYTES:
            raise KeyFormatError(f"keyring master key must be {MASTER_KEY_BYTES} bytes")
        return master

    def _master(self, *, create: bool) -> bytes:
        with self._lock:
            master = self._read()
            if master is not None:
                return master
            if not create:
                raise KeystoreLockedError(
                    f"no master key in the keyring under ({self._service!r}, {self._username!r})"
                )
            try:
                self._backend.set_password(
                    self._service, self._username, b64u_encode(os.urandom(MASTER_KEY_BYTES))
                )
            except keyring.errors.KeyringError as exc:
                raise KeystoreError(f"keyring write failed: {type(exc).__name__}") from None
            master = self._read()
            if master is None:
                raise KeyringUnavailableError("the keyring did not keep the master key")
            return master

    def new_params(self) -> KdfParams:
        """A reference to this keyring entry and a fresh salt; creates the master key if absent."""
        self._master(create=True)
        return {
            "alg": "keyring",
            "service": self._service,
            "username": self._username,
            "salt": b64u_encode(os.urandom(SALT_BYTES)),
        }

    def root_key(self, params: Mapping[str, object]) -> bytes:
        """HKDF-Extract(salt, master key) for the file's stored salt."""
        _check_alg(params, "keyring")
        if params.get("service") != self._service or params.get("username") != self._username:
            raise KeystoreLockedError(
                f"key was sealed under keyring entry ({params.get('service')!r}, "
                f"{params.get('username')!r}), not ({self._service!r}, {self._username!r})"
            )
        salt = b64u_decode(params.get("salt"), "kdf.salt")
        if len(salt) != SALT_BYTES:
            raise KeyFormatError(f"keystore kdf.salt must be {SALT_BYTES} bytes, got {len(salt)}")
        mac = crypto_hmac.HMAC(salt, hashes.SHA256())
        mac.update(self._master(create=False))
        return mac.finalize()

    def __repr__(self) -> str:
        return f"KeyringMasterKey(service={self._service!r}, username={self._username!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("keyring sources cannot be pickled")
