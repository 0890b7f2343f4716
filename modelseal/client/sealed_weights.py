"""Loading a sealed-weights bundle one tensor at a time, straight into the runtime's buffers.

A sealed-weights bundle (:mod:`modelseal.models.sealed_weights`) keeps an ONNX
graph and each of its weights as separate files of the plaintext. This loader
never decrypts the bundle as a whole:

1. the prefix and manifest are read through the container's random access;
2. the graph (``files[0]``, no weights in it) is decrypted into a
   :class:`~modelseal.client.memory.WipeableBytes` and checked against its SHA-256;
3. each weight is decrypted by :meth:`~modelseal.envelope.Package.read_range_into`
   straight into a numpy buffer of exactly its size, checked against its SHA-256,
   and handed to ONNX Runtime as an ``OrtValue`` over that buffer through
   ``SessionOptions.add_external_initializers``;
4. the session is built from the graph, and then every buffer this module filled is
   zeroed, and the whole pages of large ones are handed back to the kernel
   (``MADV_DONTNEED`` on Linux), so that the process's resident memory after the load
   is about what ONNX Runtime itself keeps.

So the largest plaintext buffer this process creates is the largest single tensor
(or the graph), never the serialised model. ONNX Runtime 1.32 copies each external
initializer into memory of its own while it builds the session (the tests check
this: the session gives the same outputs after our buffers are zeroed), and that
copy, like any weights a runtime holds, lives as long as the session
(``docs/MODELS.md``, "What the runtime keeps in memory").
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime  # type: ignore[import-untyped]

from modelseal.client.errors import ModelUnsupportedError
from modelseal.client.memory import WipeableBytes, release_pages, wipe
from modelseal.envelope import Package
from modelseal.models.bundle import MAGIC, BundleReader
from modelseal.models.errors import BundleError
from modelseal.models.manifest import FileEntry, Manifest
from modelseal.models.sealed_weights import ExternalTensor, external_tensors, is_sealed_weights

__all__ = ["SealedWeightsLoad", "load_sealed_weights", "read_manifest"]

_UNSIGNED: Mapping[int, npt.DTypeLike] = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _release(raw: npt.NDArray[np.uint8]) -> None:
    """Give the pages of a zeroed tensor buffer back to the kernel.

    The session options keep the buffers referenced for the session's life, although
    ONNX Runtime has copied them (:func:`modelseal.client.memory.release_pages`).
    """
    release_pages(raw.ctypes.data, raw.nbytes)


@dataclass(frozen=True, slots=True)
class SealedWeightsLoad:
    """A session built from a sealed-weights bundle.

    Attributes:
        session: The ``onnxruntime.InferenceSession``.
        manifest: The bundle manifest.
        tensors: The weights handed to the runtime.
        largest_buffer_bytes: The largest plaintext buffer the loader allocated.
        keep: Objects the session options still point at (zeroed buffers and their
            ``OrtValue`` wrappers); they must outlive the session.
    """

    session: Any
    manifest: Manifest
    tensors: tuple[ExternalTensor, ...]
    largest_buffer_bytes: int
    keep: tuple[Any, ...]


def _new_buffer(nbytes: int) -> npt.NDArray[np.uint8]:
    """An uninitialised plaintext buffer for one tensor (the one allocation point)."""
    return np.empty(nbytes, dtype=np.uint8)


def read_manifest(package: Package) -> Manifest:
    """Read and check a bundle's prefix and manifest through random access.

    Raises:
        BundleError: The bundle's prefix, manifest or layout is invalid.
    """
    return BundleReader(package.read_range, package.length).manifest


def _manifest_end(package: Package) -> int:
    prefix = package.read_range(0, len(MAGIC) + 4)
    (manifest_len,) = struct.unpack_from(">I", prefix, len(MAGIC))
    return len(MAGIC) + 4 + int(manifest_len)


def _decrypt_file(package: Package, entry: FileEntry, previous_end: int, out: memoryview) -> None:
    """Decrypt one bundle file into ``out`` and check its padding and SHA-256."""
    if any(package.read_range(previous_end, entry.offset)):
        raise BundleError(f"padding before {entry.name!r} at offset {previous_end} is not zero")
    package.read_range_into(entry.offset, out)
    if not hmac.compare_digest(hashlib.sha256(out).hexdigest(), entry.sha256):
        raise BundleError(f"file {entry.name!r} at offset {entry.offset} does not match its sha256")


def load_sealed_weights(
    package: Package,
    *,
    manifest: Manifest | None = None,
    options: Any | None = None,
    providers: Sequence[str] | None = None,
) -> SealedWeightsLoad:
    """Build an InferenceSession from a sealed-weights bundle, tensor by tensor.

    Args:
        package: An opened container (seekable) whose plaintext is the bundle.
        manifest: The manifest, if the caller has read it already.
        options: ``onnxruntime.SessionOptions`` (a new one by default); the weights
            are added to it as external initializers.
        providers: Execution providers (default CPU).

    Raises:
        ModelUnsupportedError: The bundle is not sealed-weights, or ONNX Runtime
            refused the model.
        BundleError: The layout, a padding or a hash is wrong.
        ModelSealError: A chunk failed authentication (the envelope's errors).
    """
    from modelseal.client.runtime import _ORT_ERRORS, _new_session, _ort_message

    if manifest is None:
        manifest = read_manifest(package)
    if not is_sealed_weights(manifest):
        raise ModelUnsupportedError("the bundle is not a sealed-weights ONNX bundle")
    ends = {f.name: f.end for f in manifest.files}
    previous = {manifest.files[0].name: _manifest_end(package)}
    for before, entry in zip(manifest.files, manifest.files[1:], strict=False):
        previous[entry.name] = ends[before.name]
    graph_entry = manifest.entry
    graph = WipeableBytes(graph_entry.length)
    buffers: list[npt.NDArray[np.uint8]] = []
    keep: list[Any] = []
    largest = graph_entry.length
    try:
        _decrypt_file(package, graph_entry, previous[graph_entry.name], graph.view)
        tensors = external_tensors(graph.view, manifest)
        if options is None:
            options = onnxruntime.SessionOptions()
        names, values = [], []
        for tensor in tensors:
            entry = manifest.file(tensor.file)
            raw = _new_buffer(tensor.nbytes)
            buffers.append(raw)
            largest = max(largest, tensor.nbytes)
            _decrypt_file(package, entry, previous[entry.name], raw.data)
            width = _UNSIGNED.get(tensor.item_bytes)
            if width is None:
                raise ModelUnsupportedError(f"tensor {tensor.name!r} has an unsupported type")
            typed = raw.view(width).reshape(tensor.shape)
            value = onnxruntime.OrtValue.ortvalue_from_numpy_with_onnx_type(typed, tensor.onnx_type)
            names.append(tensor.name)
            values.append(value)
            keep += (raw, typed, value)
        try:
            if names:
                options.add_external_initializers(names, values)
        except _ORT_ERRORS as exc:
            raise ModelUnsupportedError(
                f"ONNX Runtime refused the weights: {_ort_message(exc)}"
            ) from None
        session = _new_session(graph.value, options, providers)
    finally:
        graph.wipe()
        for raw in buffers:
            wipe(raw.data)
            _release(raw)
    return SealedWeightsLoad(session, manifest, tensors, largest, (*keep, graph, options))
