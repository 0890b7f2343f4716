"""The local backend: keys as private files in the keyring directory (the embedded default).

Layout (directory mode 0700, files 0600)::

    <kid>.jwk              issuer private key (the pre-key-service layout, kept as is)
    checkpoint-<kid>.jwk   checkpoint private key
    state.json             the pre-key-service issuer state; read once, on import

Download links on this backend use the configured ``link_signing_key`` (or, in dev
mode, a key made per process): see :class:`StaticMACKey`. Anyone who can read this
directory holds the keys; see docs/KEY_SERVICE.md for what that means.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import NoReturn

from modelseal.errors import KeyFormatError
from modelseal.keys import IssuerPrivateKey, SignatureAlgorithm, key_to_jwk
from modelseal.keys.jwk import load_key, save_key
from modelseal.server.errors import ConfigurationError
from modelseal.server.keyservice.base import (
    GeneratedKey,
    KeyNotFoundError,
    KeyPurpose,
    KeyUnsupportedError,
    MACKey,
    ManagedSigner,
)

__all__ = ["LINK_KID_LABEL", "LocalBackend", "StaticMACKey"]

LINK_KID_LABEL = b"modelseal/1 link kid"
_KID = re.compile(r"[0-9a-f]{16,64}")


class StaticMACKey:
    """An HMAC-SHA256 key held in memory; its kid is a hash that reveals nothing of it."""

    __slots__ = ("_key", "_kid")

    def __init__(self, key: bytes) -> None:
        """Use ``key`` (>= 32 bytes).

        Raises:
            ValueError: The key is shorter than 32 bytes.
        """
        if len(key) < 32:
            raise ValueError("link key must be at least 32 bytes")
        self._key = bytes(key)
        self._kid = hashlib.sha256(LINK_KID_LABEL + self._key).hexdigest()[:16]

    @property
    def kid(self) -> str:
        """First 16 hex digits of SHA-256(label || key)."""
        return self._kid

    def mac(self, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message``."""
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"StaticMACKey(kid={self._kid})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("MAC keys cannot be pickled")


class LocalBackend:
    """Issuer and checkpoint keys in files of one directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Keep keys in ``directory`` (created, mode 0700)."""
        self._dir = Path(directory)
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        # Loaded keys by (purpose, kid): the key service asks for the active key per use.
        self._loaded: dict[tuple[KeyPurpose, str], IssuerPrivateKey] = {}

    @property
    def name(self) -> str:
        """Always ``local``."""
        return "local"

    @property
    def directory(self) -> Path:
        """The keyring directory."""
        return self._dir

    def _path(self, purpose: KeyPurpose, kid: str) -> Path:
        if not _KID.fullmatch(kid):
            raise KeyNotFoundError(f"malformed key id {kid!r}")
        if purpose is KeyPurpose.ISSUER:
            return self._dir / f"{kid}.jwk"
        if purpose is KeyPurpose.CHECKPOINT:
            return self._dir / f"checkpoint-{kid}.jwk"
        raise KeyUnsupportedError(
            "the local backend keeps no link keys: set link_signing_key (rotate by changing it)"
        )

    def generate(self, purpose: KeyPurpose, alg: str) -> GeneratedKey:
        """Generate an Ed25519 or ES256 key in a new 0600 file.

        Raises:
            KeyUnsupportedError: A link key, or an unknown algorithm.
        """
        try:
            algorithm = SignatureAlgorithm(alg)
        except ValueError:
            raise KeyUnsupportedError(f"alg must be Ed25519 or ES256, got {alg!r}") from None
        key = IssuerPrivateKey.generate(algorithm)
        path = self._path(purpose, key.kid)
        save_key(path, key)
        return GeneratedKey(
            kid=key.kid,
            alg=str(algorithm),
            handle=path.name,
            public_jwk=key_to_jwk(key.public_key()),
        )

    def signer(self, purpose: KeyPurpose, kid: str, handle: str) -> ManagedSigner:
        """Load the private key file of ``kid``.

        Raises:
            KeyNotFoundError: The file is missing.
            ConfigurationError: The file does not hold that private key.
        """
        path = self._path(purpose, kid)
        if handle != path.name:
            raise ConfigurationError(f"key {kid}: handle {handle!r} is not its file")
        cached = self._loaded.get((purpose, kid))
        if cached is not None:
            return cached
        if not path.exists():
            raise KeyNotFoundError(f"the private key file of {purpose} key {kid} is missing")
        try:
            key = load_key(path)
        except KeyFormatError as exc:
            raise ConfigurationError(f"{purpose} key {kid}: {exc.message}") from None
        if not isinstance(key, IssuerPrivateKey) or key.kid != kid:
            raise ConfigurationError(f"{path.name} is not the private key {kid}")
        self._loaded[(purpose, kid)] = key
        return key

    def mac_key(self, kid: str, handle: str) -> MACKey:
        """Refused: local link keys come from settings.

        Raises:
            KeyUnsupportedError: Always.
        """
        raise KeyUnsupportedError("the local backend keeps no link keys")

    def destroy(self, purpose: KeyPurpose, kid: str, handle: str) -> None:
        """Delete the private key file (the public JWK stays in the database)."""
        self._loaded.pop((purpose, kid), None)
        with contextlib.suppress(FileNotFoundError):
            self._path(purpose, kid).unlink()

    def close(self) -> None:
        """Forget the loaded keys."""
        self._loaded.clear()
