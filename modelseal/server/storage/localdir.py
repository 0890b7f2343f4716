"""A blob store in a local directory (embedded mode).

Layout: ``<root>/<key>`` files of mode 0600 in a 0700 directory; in-flight writes
are ``<root>/.tmp-<random>`` files renamed into place once complete and synced.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from modelseal.server.storage.base import (
    BLOB_KEY_PATTERN,
    BlobNotFoundError,
    check_blob_key,
)

__all__ = ["LocalDirBlobStore"]

_TMP_PREFIX = ".tmp-"
_WRITE_PIECE_BYTES = 1 << 20


class LocalDirBlobStore:
    """Blob store backed by a directory; implements :class:`BlobStore`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Create (or adopt) ``root`` with mode 0700."""
        self._root = Path(root)
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask and ignored for existing directories.
        os.chmod(self._root, 0o700)

    @property
    def root(self) -> Path:
        """The directory holding the blobs."""
        return self._root

    def _path(self, key: str) -> Path:
        return self._root / check_blob_key(key)

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Write to a temp file (0600), fsync, then rename over ``key``."""
        target = self._path(key)
        tmp = self._root / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data).cast("B")
            with os.fdopen(fd, "wb", buffering=0) as handle:
                for start in range(0, len(view), _WRITE_PIECE_BYTES):
                    handle.write(view[start : start + _WRITE_PIECE_BYTES])
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self._root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def open(self, key: str) -> BinaryIO:
        """Open ``key`` for binary reading."""
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise BlobNotFoundError("object not found") from None

    def size(self, key: str) -> int:
        """Size of ``key`` in bytes."""
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError("object not found") from None

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def keys(self) -> Iterator[str]:
        """Stored keys (temp files excluded)."""
        for entry in os.scandir(self._root):
            if entry.is_file() and BLOB_KEY_PATTERN.fullmatch(entry.name):
                yield entry.name

    def sweep(self, older_than_seconds: int, now: float) -> list[str]:
        """Delete blobs and leftover temp files whose mtime is older than the cutoff."""
        cutoff = now - older_than_seconds
        removed: list[str] = []
        for entry in list(os.scandir(self._root)):
            is_blob = BLOB_KEY_PATTERN.fullmatch(entry.name) is not None
            if not entry.is_file() or not (is_blob or entry.name.startswith(_TMP_PREFIX)):
                continue
            try:
                if entry.stat().st_mtime >= cutoff:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            if is_blob:
                removed.append(entry.name)
        return removed
