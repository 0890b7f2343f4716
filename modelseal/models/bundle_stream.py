"""Bundles of files too large for memory: the same ``MSBUNDLE/1`` bytes, read as a stream.

:func:`~modelseal.models.bundle.build_bundle` lays a bundle out in one buffer, which
for a 2 GiB model would mean a 2 GiB plaintext buffer before sealing. Here the
files stay on disk: their SHA-256 is computed in one streaming pass, the prefix and
manifest are built from the lengths and hashes alone, and :class:`BundleStream`
then serves the bundle's bytes in order (prefix, manifest, zero padding, each
file) to :func:`modelseal.envelope.seal_stream`, which seals in constant memory. Each
file is hashed again as it is served, and a file whose bytes changed since the first
pass makes the read fail when its last byte is served, so a bundle whose manifest
does not match its files is never sealed whole::

    stream = BundleStream.from_files(fields, [("model.safetensors", path)])
    with stream, open(out, "wb") as dst:
        seal_stream(stream, dst, to, length=stream.length, ctype=BUNDLE_MEDIA_TYPE)

The output is byte for byte what ``build_bundle`` makes from the same files.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from modelseal.models.bundle import MAGIC, MAX_MANIFEST_BYTES
from modelseal.models.errors import BundleError
from modelseal.models.manifest import (
    MAX_FILES,
    FileEntry,
    Manifest,
    ManifestFields,
    align,
    parse_manifest,
)

__all__ = ["BundleStream", "layout"]

_PREFIX_BYTES = len(MAGIC) + 4
_HASH_PIECE_BYTES = 1 << 20


def layout(fields: ManifestFields, files: Sequence[tuple[str, int, str]]) -> tuple[bytes, Manifest]:
    """The bundle's head (magic, length, manifest) for files of these lengths and hashes.

    Args:
        fields: The manifest members.
        files: ``(name, length, sha256 hex)`` in bundle order.

    Raises:
        BundleError: A manifest rule is broken.
    """
    if not 1 <= len(files) <= MAX_FILES:
        raise BundleError(f"a bundle must have 1..{MAX_FILES} files, got {len(files)}")
    manifest_len = 0
    for _ in range(8):
        offset = _PREFIX_BYTES + manifest_len
        entries = []
        for name, length, digest in files:
            offset = align(offset)
            entries.append(FileEntry(name, offset, length, digest))
            offset += length
        manifest = Manifest(fields, tuple(entries))
        encoded = manifest.encode()
        if len(encoded) == manifest_len:
            break
        manifest_len = len(encoded)
    else:  # pragma: no cover - converges after a few rounds, as in build_bundle
        raise BundleError("bundle layout did not converge")
    if len(encoded) > MAX_MANIFEST_BYTES:
        raise BundleError(f"manifest must be at most {MAX_MANIFEST_BYTES} bytes")
    parse_manifest(encoded, offset=_PREFIX_BYTES)
    return MAGIC + struct.pack(">I", len(encoded)) + encoded, manifest


def _sha256_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as src:
        buf = bytearray(_HASH_PIECE_BYTES)
        view = memoryview(buf)
        while n := src.readinto(buf):
            digest.update(view[:n])
            size += n
    return size, digest.hexdigest()


class BundleStream:
    """A read-only, forward-only file object over a bundle whose files are on disk.

    Raises (from :meth:`readinto`):
        BundleError: A file is shorter, or holds other bytes, than when its hash was taken.
    """

    def __init__(self, head: bytes, manifest: Manifest, paths: Sequence[Path]) -> None:
        """Serve ``head`` then each file of ``manifest`` from ``paths`` (see :meth:`from_files`)."""
        self._manifest = manifest
        self._pieces: list[tuple[int, int, Path | None]] = [(0, len(head), None)]
        self._entries: dict[int, FileEntry] = {}
        self._head = head
        for entry, path in zip(manifest.files, paths, strict=True):
            self._entries[len(self._pieces)] = entry
            self._pieces.append((entry.offset, entry.end, path))
        # The file being served and the hash of its bytes served so far.
        self._hashing: tuple[int, hashlib._Hash] | None = None
        self._length = manifest.files[-1].end
        self._position = 0
        self._handle: int | None = None
        self._handle_path: Path | None = None

    @classmethod
    def from_files(cls, fields: ManifestFields, files: Sequence[tuple[str, Path]]) -> BundleStream:
        """Hash each file (one streaming pass) and lay the bundle out.

        Raises:
            BundleError: A manifest rule is broken.
            OSError: A file cannot be read.
        """
        described = []
        for name, path in files:
            size, digest = _sha256_file(Path(path))
            described.append((name, size, digest))
        head, manifest = layout(fields, described)
        return cls(head, manifest, [Path(p) for _, p in files])

    @property
    def manifest(self) -> Manifest:
        """The bundle's manifest."""
        return self._manifest

    @property
    def length(self) -> int:
        """The bundle's total length in bytes."""
        return self._length

    def readable(self) -> bool:
        """Always True."""
        return True

    def readinto(self, out: bytearray | memoryview) -> int:
        """Fill ``out`` with the next bytes of the bundle; 0 at the end."""
        view = memoryview(out).cast("B")
        written = 0
        while written < len(view) and self._position < self._length:
            pos = self._position
            take = len(view) - written
            index = next((i for i, p in enumerate(self._pieces) if p[0] <= pos < p[1]), None)
            if index is None:  # zero padding before the next file
                following = min(p[0] for p in self._pieces if p[0] > pos)
                n = min(take, following - pos)
                view[written : written + n] = bytes(n)
                written += n
                self._position += n
                continue
            start, end, path = self._pieces[index]
            if path is None:
                n = min(take, end - pos)
                view[written : written + n] = self._head[pos : pos + n]
            else:
                n = self._read_file(
                    path, pos - start, view[written : written + min(take, end - pos)]
                )
                self._rehash(index, view[written : written + n], done=pos + n == end)
            written += n
            self._position += n
        return written

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all the rest when negative)."""
        if size < 0:
            size = self._length - self._position
        buf = bytearray(size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def _rehash(self, index: int, data: memoryview, *, done: bool) -> None:
        """Hash file ``index``'s bytes as they are served; check the digest at its end."""
        if self._hashing is None or self._hashing[0] != index:
            self._hashing = (index, hashlib.sha256())
        digest = self._hashing[1]
        digest.update(data)
        if done:
            self._hashing = None
            entry = self._entries[index]
            if digest.hexdigest() != entry.sha256:
                raise BundleError(
                    f"{self._pieces[index][2]} changed since it was hashed: file "
                    f"{entry.name!r} no longer matches the manifest's sha256"
                )

    def _read_file(self, path: Path, offset: int, view: memoryview) -> int:
        if self._handle_path != path:
            self.close()
            self._handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self._handle_path = path
        n = os.preadv(self._handle, [view], offset) if self._handle is not None else 0
        if n == 0:
            raise BundleError(f"{path} is shorter than when it was hashed")
        return n

    def close(self) -> None:
        """Close the file being read, if any."""
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None
            self._handle_path = None

    def __enter__(self) -> BundleStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
