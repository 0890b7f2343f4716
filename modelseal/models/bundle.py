"""MSBUNDLE/1: the plaintext that a container carries when its content is a model.

A bundle is a small JSON manifest followed by the model's files, each starting at a
64-byte boundary so that a reader with random access to the plaintext (such as
:meth:`modelseal.envelope.Package.read_range`) can fetch the manifest and then one
file without decrypting the others. ``docs/MODELS.md`` is the normative description;
this module implements it::

    bundle = magic || u32(manifest_len) || manifest || zero padding
             || file_0 || zero padding || file_1 || ... || file_{n-1}

Layout is canonical: ``files[0]`` starts at the first multiple of 64 at or after
the manifest's end and every later file at the first multiple of 64 at or after the
previous file's end; padding bytes are zero and the bundle ends exactly where its
last file ends. A reader therefore never meets bytes that no rule accounts for.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeAlias

from typing_extensions import Buffer

from modelseal.errors import UsageError
from modelseal.models.errors import BundleError
from modelseal.models.manifest import (
    ALIGNMENT_BYTES,
    MAX_FILES,
    FileEntry,
    JSONValue,
    Manifest,
    ManifestFields,
    ModelFormat,
    RuntimeHint,
    TensorSpec,
    align,
    parse_manifest,
)

__all__ = [
    "ALIGNMENT_BYTES",
    "BUNDLE_MEDIA_TYPE",
    "MAGIC",
    "MAX_FILES",
    "MAX_MANIFEST_BYTES",
    "Bundle",
    "BundleReader",
    "FileEntry",
    "JSONValue",
    "Manifest",
    "ManifestFields",
    "ModelFormat",
    "RandomRead",
    "RuntimeHint",
    "TensorSpec",
    "build_bundle",
    "parse_bundle",
]

MAGIC = b"MSBUNDLE/1\n"
"""The first 11 bytes of every bundle."""

BUNDLE_MEDIA_TYPE = "application/vnd.modelseal.bundle"
"""The container ``ctype`` of a bundle."""

MAX_MANIFEST_BYTES = 1 << 20

_PREFIX_BYTES = len(MAGIC) + 4

RandomRead: TypeAlias = Callable[[int, int], bytes]
"""Returns bytes ``[start, stop)`` of a bundle."""


def _fail(message: str) -> BundleError:
    return BundleError(message)


@dataclass(frozen=True, slots=True)
class Bundle:
    """A fully parsed and verified bundle.

    Attributes:
        manifest: The manifest.
        files: Each file's bytes by name, in bundle order; every hash has been checked.
    """

    manifest: Manifest
    files: Mapping[str, bytes]

    @property
    def entry(self) -> bytes:
        """The bytes of the entry file ``files[0]``."""
        return self.files[self.manifest.entry.name]


def build_bundle(fields: ManifestFields, files: Sequence[tuple[str, Buffer]]) -> bytearray:
    """Lay out ``files`` after a manifest built from ``fields``.

    Args:
        fields: The producer's manifest members.
        files: ``(name, bytes)`` pairs in bundle order; the first is the entry file.

    Returns:
        The bundle, as a bytearray so that a caller holding a plaintext model can wipe it.

    Raises:
        BundleError: A field or file name breaks a manifest rule, or there are no files,
            more than 256, or two with the same name.
    """
    if not 1 <= len(files) <= MAX_FILES:
        raise _fail(f"a bundle must have 1..{MAX_FILES} files, got {len(files)}")
    views = [(name, memoryview(data).cast("B")) for name, data in files]
    # The file offsets depend on the manifest's length, which depends on the offsets'
    # digits: iterate until the layout is stable (it is after two rounds in practice).
    manifest_len = 0
    for _ in range(8):
        offset = len(MAGIC) + 4 + manifest_len
        entries = []
        for name, view in views:
            offset = align(offset)
            entries.append(FileEntry(name, offset, len(view), hashlib.sha256(view).hexdigest()))
            offset += len(view)
        manifest = Manifest(fields, tuple(entries))
        encoded = manifest.encode()
        if len(encoded) == manifest_len:
            break
        manifest_len = len(encoded)
    else:  # pragma: no cover - the length converges after at most a few rounds
        raise AssertionError("bundle layout did not converge")
    # Check the table by the same rules a reader applies, so a builder cannot emit
    # a bundle that its own parser refuses.
    parse_manifest(encoded, offset=_PREFIX_BYTES)
    if len(encoded) > MAX_MANIFEST_BYTES:
        raise _fail(f"manifest must be at most {MAX_MANIFEST_BYTES} bytes, got {len(encoded)}")
    out = bytearray(entries[-1].end)
    out[: len(MAGIC)] = MAGIC
    struct.pack_into(">I", out, len(MAGIC), len(encoded))
    out[_PREFIX_BYTES : _PREFIX_BYTES + len(encoded)] = encoded
    for entry, (_, view) in zip(entries, views, strict=True):
        out[entry.offset : entry.end] = view
    return out


def _parse_prefix(prefix: bytes, total: int) -> int:
    """Check the magic and ``manifest_len``; return ``manifest_len``."""
    if prefix[: len(MAGIC)] != MAGIC[: len(prefix)]:
        raise _fail("bad magic at offset 0: not an MSBUNDLE/1 bundle")
    if total < _PREFIX_BYTES:
        raise _fail(f"bundle truncated at offset {total}: the prefix needs {_PREFIX_BYTES} bytes")
    (manifest_len,) = struct.unpack_from(">I", prefix, len(MAGIC))
    if not 1 <= manifest_len <= MAX_MANIFEST_BYTES:
        raise _fail(
            f"manifest_len at offset {len(MAGIC)} must be 1..{MAX_MANIFEST_BYTES}, "
            f"got {manifest_len}"
        )
    if _PREFIX_BYTES + manifest_len > total:
        raise _fail(
            f"bundle truncated at offset {total}: the manifest ends at "
            f"{_PREFIX_BYTES + manifest_len}"
        )
    return int(manifest_len)


def _check_padding(data: bytes | memoryview, start: int, what: str) -> None:
    if any(data):
        raise _fail(f"padding before {what} at offset {start} is not zero")


def _check_hash(entry: FileEntry, data: bytes | memoryview) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(digest, entry.sha256):
        raise _fail(f"file {entry.name!r} at offset {entry.offset} does not match its sha256")


def parse_bundle(data: Buffer) -> Bundle:
    """Parse and verify a whole bundle held in memory.

    Every byte is checked: the prefix, the manifest, the layout, the zero padding and
    each file's SHA-256.

    Raises:
        BundleError: The first rule the bytes break, with its offset.
    """
    view = memoryview(data).cast("B")
    total = len(view)
    manifest_len = _parse_prefix(bytes(view[:_PREFIX_BYTES]), total)
    manifest = parse_manifest(
        bytes(view[_PREFIX_BYTES : _PREFIX_BYTES + manifest_len]), offset=_PREFIX_BYTES
    )
    _check_layout(manifest, total)
    files: dict[str, bytes] = {}
    previous_end = _PREFIX_BYTES + manifest_len
    for entry in manifest.files:
        _check_padding(view[previous_end : entry.offset], previous_end, repr(entry.name))
        content = view[entry.offset : entry.end]
        _check_hash(entry, content)
        files[entry.name] = bytes(content)
        previous_end = entry.end
    return Bundle(manifest, MappingProxyType(files))


def _check_layout(manifest: Manifest, total: int) -> None:
    last = len(manifest.files) - 1
    end = manifest.files[last].end
    if end > total:
        raise _fail(f"bundle truncated at offset {total}: files[{last}] ends at {end}")
    if end < total:
        raise _fail(f"trailing data at offset {end}, after files[{last}]: {total - end} bytes")


class BundleReader:
    """Reads a bundle through a random-access function, one file at a time.

    Construction reads only the prefix, the manifest and the padding after it; each
    :meth:`read_file` reads that file and the padding before it (under 64 bytes), and
    checks both. Pair it with an opened container::

        package = open_stream(src, key, policy)
        reader = BundleReader(package.read_range, package.length)
        onnx_bytes = reader.read_file(reader.manifest.entry.name)

    Args:
        read_range: Returns the bytes ``[start, stop)`` of the bundle.
        length: The bundle's total length in bytes.

    Raises:
        BundleError: The prefix, manifest or layout is invalid, or ``read_range``
            returned the wrong number of bytes.
    """

    def __init__(self, read_range: RandomRead, length: int) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise UsageError(f"length must be a non-negative integer, got {length!r}")
        self._read_range = read_range
        self._length = length
        prefix = self._read(0, min(_PREFIX_BYTES, length))
        manifest_len = _parse_prefix(prefix, length)
        manifest_end = _PREFIX_BYTES + manifest_len
        self._manifest = parse_manifest(
            self._read(_PREFIX_BYTES, manifest_end), offset=_PREFIX_BYTES
        )
        _check_layout(self._manifest, length)
        self._starts: dict[str, int] = {}
        previous_end = manifest_end
        for entry in self._manifest.files:
            self._starts[entry.name] = previous_end
            previous_end = entry.end

    @property
    def manifest(self) -> Manifest:
        """The verified manifest."""
        return self._manifest

    def read_file(self, name: str) -> bytes:
        """Read file ``name`` and check its padding and SHA-256.

        Raises:
            UsageError: No file has that name.
            BundleError: The padding is not zero or the hash does not match.
        """
        entry = self._manifest.file(name)
        start = self._starts[name]
        data = self._read(start, entry.end)
        pad = entry.offset - start
        _check_padding(data[:pad], start, repr(name))
        content = data[pad:]
        _check_hash(entry, content)
        return content

    def _read(self, start: int, stop: int) -> bytes:
        data = self._read_range(start, stop)
        if len(data) != stop - start:
            raise _fail(
                f"bundle truncated at offset {start + len(data)}: wanted bytes up to {stop}"
            )
        return bytes(data)
