"""The BlobStore protocol."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import BinaryIO, Protocol, runtime_checkable

from modelseal.errors import UsageError
from modelseal.server.errors import ServerError

__all__ = ["BLOB_KEY_PATTERN", "BlobNotFoundError", "BlobStore", "check_blob_key", "new_blob_key"]

# Keys are random ids chosen by the server, never derived from user data, so a key
# reveals nothing and cannot address anything outside the store.
BLOB_KEY_PATTERN = re.compile(r"[0-9a-f]{32}")


class BlobNotFoundError(ServerError):
    """The object does not exist (deleted, swept, or never written)."""

    code = "object_gone"


def new_blob_key() -> str:
    """A fresh random blob key (128 bits, hex)."""
    return secrets.token_hex(16)


def check_blob_key(key: str) -> str:
    """Refuse anything but a well-formed blob key.

    Raises:
        UsageError: ``key`` is not 32 lowercase hex characters.
    """
    if not BLOB_KEY_PATTERN.fullmatch(key):
        raise UsageError("blob key must be 32 lowercase hex characters")
    return key


@runtime_checkable
class BlobStore(Protocol):
    """Storage for sealed packages. Implementations store ciphertext only."""

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` under ``key`` atomically (readers never see a partial object)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Open the object for reading; raise :class:`BlobNotFoundError` if absent."""
        ...

    def size(self, key: str) -> int:
        """Size in bytes; raise :class:`BlobNotFoundError` if absent."""
        ...

    def delete(self, key: str) -> bool:
        """Delete the object; return whether it existed."""
        ...

    def keys(self) -> Iterator[str]:
        """Iterate over the stored keys."""
        ...

    def sweep(self, older_than_seconds: int, now: float) -> list[str]:
        """Delete objects (and abandoned temp files) older than the given age; return keys."""
        ...
