"""Lazy, per-tensor access to a safetensors model that stays sealed on disk.

:class:`SealedSafetensors` opens a container whose plaintext is a safetensors
file (ctype ``application/vnd.modelseal.safetensors``) or an ``MSBUNDLE/1`` bundle
whose entry file is one (manifest ``format = "safetensors"``). Opening reads only
the safetensors header, through the container's random access; each tensor is
decrypted when it is asked for, straight into a numpy array of its own
(:meth:`~modelseal.envelope.Package.read_range_into`), with no other plaintext
copy. Loading every tensor of a 2 GiB model so costs about 2 GiB of memory, not a
multiple of it (``docs/PERFORMANCE.md``, "Models").

Integrity: every chunk a read spans is authenticated by the container's AEAD under
a key the signed header commits to, so a tensor read this way is exactly what the
issuer sealed. A bundle's per-file SHA-256 covers the whole file and is therefore
not checked on lazy reads (:meth:`SealedSafetensors.verify` checks it, reading the
file once in pieces).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from modelseal.client.errors import ModelUnsupportedError
from modelseal.client.memory import wipe
from modelseal.envelope import OpenPolicy, Package, open_stream
from modelseal.keys.kek import KEKWrapper
from modelseal.keys.kem import HPKERecipient
from modelseal.models.bundle import BUNDLE_MEDIA_TYPE, BundleReader
from modelseal.models.errors import BundleError
from modelseal.models.manifest import FileEntry, ModelFormat
from modelseal.models.safetensors_adapter import TensorLocation, parse_header
from modelseal.models.tensors import TensorInfo, numpy_dtype

__all__ = ["SAFETENSORS_MEDIA_TYPE", "SealedSafetensors"]

SAFETENSORS_MEDIA_TYPE = "application/vnd.modelseal.safetensors"
_VERIFY_PIECE_BYTES = 4 << 20


class SealedSafetensors:
    """A sealed safetensors model whose tensors are decrypted one at a time, on access.

    Use as a context manager (it holds the container file open)::

        with SealedSafetensors.open(path, kek, OpenPolicy(now=now)) as model:
            for name in model:
                weights = model[name]

    Args:
        package: An opened, seekable container.
        src: The file ``package`` reads from; closed by :meth:`close` when given.

    Raises:
        ModelUnsupportedError: The content is neither a safetensors file nor a bundle
            of one.
        BundleError: The bundle's prefix, manifest or layout is invalid.
        ModelFormatError: The safetensors header is invalid.
    """

    def __init__(self, package: Package, src: BinaryIO | None = None) -> None:
        self._package = package
        self._src = src
        self._entry: FileEntry | None = None
        ctype = package.header.ctype
        if ctype == BUNDLE_MEDIA_TYPE:
            manifest = BundleReader(package.read_range, package.length).manifest
            if manifest.fields.format is not ModelFormat.SAFETENSORS:
                raise ModelUnsupportedError(
                    f"the bundle's model is {manifest.fields.format.value}, not safetensors"
                )
            self._entry = manifest.entry
            base, length = self._entry.offset, self._entry.length
        elif ctype == SAFETENSORS_MEDIA_TYPE:
            base, length = 0, package.length
        else:
            raise ModelUnsupportedError(f"content type {ctype!r} is not a safetensors model")
        self._base = base
        self._length = length
        self._metadata, self._tensors = parse_header(
            lambda start, stop: package.read_range(base + start, base + stop), length
        )

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], key: KEKWrapper | HPKERecipient, policy: OpenPolicy
    ) -> SealedSafetensors:
        """Open a container file (an at-rest package with its KEK, or a delivery package).

        Raises:
            ModelSealError: The envelope's checks failed (signature, key, claims).
            As for the constructor.
        """
        src = open(Path(path), "rb", buffering=0)  # noqa: SIM115 - closed by close()
        try:
            return cls(open_stream(src, key, policy), src)
        except BaseException:
            src.close()
            raise

    @property
    def metadata(self) -> dict[str, str] | None:
        """The ``__metadata__`` map of the safetensors header, or None."""
        return None if self._metadata is None else dict(self._metadata)

    @property
    def nbytes(self) -> int:
        """The safetensors file's length (header and every tensor)."""
        return self._length

    def tensors(self) -> tuple[TensorInfo, ...]:
        """Every tensor, in buffer order (nothing is decrypted)."""
        return tuple(t.info for t in self._tensors.values())

    def _locate(self, name: str) -> TensorLocation:
        location = self._tensors.get(name)
        if location is None:
            raise KeyError(name)
        return location

    def read(self, name: str) -> npt.NDArray[np.generic]:
        """Decrypt tensor ``name`` into a new array of its dtype and shape.

        Raises:
            KeyError: No tensor has that name.
            UnsupportedTensorError: Its dtype has no numpy equivalent here.
            ChunkTagError: A chunk failed authentication.
        """
        location = self._locate(name)
        array = np.empty(location.info.shape, dtype=numpy_dtype(location.info))
        self.read_into(name, array)
        return array

    def read_into(self, name: str, out: npt.NDArray[np.generic]) -> None:
        """Decrypt tensor ``name`` into ``out``, a C-contiguous array of its byte size.

        Raises:
            KeyError: No tensor has that name.
            ValueError: ``out`` is not C-contiguous or has another size in bytes.
            ChunkTagError: A chunk failed authentication (``out`` is zeroed).
        """
        location = self._locate(name)
        if not out.flags.c_contiguous or out.nbytes != location.info.nbytes:
            raise ValueError(
                f"out must be C-contiguous and {location.info.nbytes} bytes, got {out.nbytes}"
            )
        view = out.reshape(-1).view(np.uint8).data
        self._package.read_range_into(self._base + location.begin, view)

    def verify(self) -> None:
        """Check a bundle entry's SHA-256 by reading it once, in 4 MiB pieces (wiped).

        Raises:
            BundleError: The file does not match the manifest's hash.
        """
        if self._entry is None:
            return
        digest = hashlib.sha256()
        piece = bytearray(min(_VERIFY_PIECE_BYTES, self._length))
        view = memoryview(piece)
        try:
            for start in range(0, self._length, len(piece) or 1):
                n = min(len(piece), self._length - start)
                self._package.read_range_into(self._base + start, view[:n])
                digest.update(view[:n])
        finally:
            wipe(piece)
        if not hmac.compare_digest(digest.hexdigest(), self._entry.sha256):
            raise BundleError(f"file {self._entry.name!r} does not match its sha256")

    def __getitem__(self, name: str) -> npt.NDArray[np.generic]:
        return self.read(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def close(self) -> None:
        """Close the container file, if this object opened it."""
        if self._src is not None:
            self._src.close()
            self._src = None

    def __enter__(self) -> SealedSafetensors:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SealedSafetensors({len(self._tensors)} tensors, {self._length} bytes)"
