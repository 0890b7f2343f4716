"""Sealed-weights bundles: an ONNX graph and each of its weight tensors as separate files.

In an ordinary bundle the entry file is a whole ONNX model, and a client that loads
it must hold the complete serialised plaintext model in one buffer. A
*sealed-weights* bundle lays the same model out so that no such buffer is ever
needed (``docs/FORMAT.md``, "Bundle layer"; ``docs/MODELS.md``)::

    files[0]  "graph.onnx"   the ModelProto; every weight is an external-data
                             reference: data_location = EXTERNAL,
                             external_data = {location: "w0000.bin", offset: "0",
                             length: "<bytes>"}
    files[1]  "w0000.bin"    the first weight's little-endian bytes
    files[2]  "w0001.bin"    ...

The manifest's file table is the index: each tensor is an individually addressable
byte range of the plaintext (64-byte aligned, with its SHA-256), so a client with
random access to the container (:meth:`modelseal.envelope.Package.read_range_into`)
decrypts one tensor at a time straight into the buffer its runtime will use. The
manifest's ``runtime`` hints carry ``weights = "sealed-per-tensor"`` so a client
knows the layout before it reads the graph.

Rules a reader checks (:func:`external_tensors`, and the client loader), for the main
graph's initializers, where the builder puts every external reference (``docs/MODELS.md``
says what ONNX Runtime does with one elsewhere):

* every external reference names a file of the bundle other than ``files[0]``, at
  offset 0, and covers the whole file, whose length is exactly what the tensor's
  element type and shape need;
* no two tensors name the same file, and every file after ``files[0]`` is named.

A bundle holds at most 256 files, so at most 255 tensors are moved out of the graph.
Some tensors stay inline in the graph: strings; ``int32``/``int64`` tensors (by
default, ``inline_dtypes``), which in practice are shapes, axes and indices that
ONNX shape inference must read from the graph itself (ONNX Runtime refuses a
``Reshape`` whose shape is external); and tensors smaller than ``min_tensor_bytes``
(default: none).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
from typing_extensions import Buffer

from modelseal.errors import UsageError
from modelseal.models import _protowire as wire
from modelseal.models._onnx_wire import (
    DATA_FIELDS,
    DATA_LOCATION_EXTERNAL,
    TensorFields,
    parse_tensor,
)
from modelseal.models.bundle import build_bundle
from modelseal.models.errors import BundleError, ModelFormatError
from modelseal.models.manifest import MAX_FILES, FileEntry, Manifest, ManifestFields, ModelFormat
from modelseal.models.onnx_adapter import ONNXModel
from modelseal.models.tensors import DType, by_onnx

__all__ = [
    "DEFAULT_INLINE_DTYPES",
    "GRAPH_FILE_NAME",
    "WEIGHTS_HINT",
    "WEIGHTS_HINT_VALUE",
    "ExternalTensor",
    "build_sealed_weights_bundle",
    "external_tensors",
    "is_sealed_weights",
    "tensor_file_name",
    "total_weight_bytes",
]

GRAPH_FILE_NAME = "graph.onnx"
WEIGHTS_HINT = "weights"
WEIGHTS_HINT_VALUE = "sealed-per-tensor"
MAX_TENSORS = MAX_FILES - 1
DEFAULT_INLINE_DTYPES = frozenset({"int32", "int64"})

_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_DATA_LOCATION = 14
_TENSOR_EXTERNAL_DATA = 13


@dataclass(frozen=True, slots=True)
class ExternalTensor:
    """One weight of a sealed-weights graph and the bundle file that holds it.

    Attributes:
        name: The initializer's name.
        dtype: Its element type.
        onnx_type: Its ONNX ``TensorProto.DataType`` number.
        item_bytes: Bytes per element.
        shape: Its dimensions.
        file: The bundle file holding its bytes (``external_data.location``).
        nbytes: Its length in bytes.
    """

    name: str
    dtype: DType
    onnx_type: int
    item_bytes: int
    shape: tuple[int, ...]
    file: str
    nbytes: int


def tensor_file_name(index: int) -> str:
    """The bundle file name of the ``index``-th tensor (``w0000.bin``...)."""
    return f"w{index:04d}.bin"


def is_sealed_weights(manifest: Manifest) -> bool:
    """Whether ``manifest`` describes a sealed-weights bundle."""
    return (
        manifest.fields.format is ModelFormat.ONNX
        and manifest.fields.runtime.get(WEIGHTS_HINT) == WEIGHTS_HINT_VALUE
    )


def _entry(key: str, value: str) -> bytes:
    body = wire.len_record(1, key.encode()) + wire.len_record(2, value.encode())
    return wire.len_record(_TENSOR_EXTERNAL_DATA, body)


def _graph_records(buf: bytes | bytearray | memoryview) -> tuple[list[wire.Record], wire.Record]:
    top = list(wire.records(buf, 0, len(buf)))
    graphs = [r for r in top if r.number == _MODEL_GRAPH]
    if len(graphs) != 1 or graphs[0].wire_type != wire.LEN:
        raise ModelFormatError(f"model must have exactly one graph, found {len(graphs)}")
    return top, graphs[0]


def _split(
    onnx_bytes: bytes, min_tensor_bytes: int, inline_dtypes: frozenset[str]
) -> tuple[bytearray, list[tuple[str, bytes]]]:
    """Move each eligible initializer's data out; return the new model and the files."""
    model = ONNXModel(onnx_bytes)
    infos = {info.name: info for info in model.tensors()}
    buf = memoryview(onnx_bytes)
    top, graph = _graph_records(buf)
    pieces: list[bytes] = []
    files: list[tuple[str, bytes]] = []
    for record in wire.records(buf, graph.value_start, graph.end):
        if record.number != _GRAPH_INITIALIZER:
            pieces.append(bytes(buf[record.start : record.end]))
            continue
        fields = parse_tensor(bytearray(buf[record.start : record.end]), _rebase(record))
        info = infos[fields.name]
        dtype = by_onnx(fields.data_type)
        if fields.data_location == DATA_LOCATION_EXTERNAL:
            raise ModelFormatError(
                f"initializer {fields.name!r} already uses external data; give the model "
                "with its weights inline"
            )
        if (
            dtype is None
            or dtype.numpy is None
            or dtype.name in inline_dtypes
            or info.nbytes < min_tensor_bytes
        ):
            pieces.append(bytes(buf[record.start : record.end]))
            continue
        if len(files) == MAX_TENSORS:
            raise BundleError(
                f"a sealed-weights bundle holds at most {MAX_TENSORS} tensors; raise "
                "min_tensor_bytes to keep small ones in the graph"
            )
        name = tensor_file_name(len(files))
        data = np.ascontiguousarray(model.read(fields.name), dtype=dtype.numpy).tobytes()
        files.append((name, data))
        kept = b"".join(
            bytes(buf[r.start : r.end])
            for r in wire.records(buf, record.value_start, record.end)
            if r.number not in DATA_FIELDS and r.number != _TENSOR_DATA_LOCATION
        )
        body = (
            kept
            + wire.encode_varint(_TENSOR_DATA_LOCATION << 3 | wire.VARINT)
            + wire.encode_varint(DATA_LOCATION_EXTERNAL)
            + _entry("location", name)
            + _entry("offset", "0")
            + _entry("length", str(len(data)))
        )
        pieces.append(wire.len_record(_GRAPH_INITIALIZER, body))
    graph_body = b"".join(pieces)
    out = bytearray()
    for record in top:
        if record is graph:
            out += wire.len_record(_MODEL_GRAPH, graph_body)
        else:
            out += buf[record.start : record.end]
    return out, files


def _rebase(record: wire.Record) -> wire.Record:
    """``record`` as seen in a buffer that starts at its tag."""
    shift = record.start
    return wire.Record(
        record.number, record.wire_type, 0, record.value_start - shift, record.end - shift
    )


def build_sealed_weights_bundle(
    fields: ManifestFields,
    onnx_bytes: Buffer,
    *,
    min_tensor_bytes: int = 0,
    inline_dtypes: Iterable[str] = DEFAULT_INLINE_DTYPES,
) -> bytearray:
    """Lay out an ONNX model (weights inline) as a sealed-weights bundle.

    Args:
        fields: The manifest members; ``format`` must be ``onnx``. The ``weights``
            runtime hint is added.
        onnx_bytes: The serialised ``ModelProto`` with its weights inline.
        min_tensor_bytes: Initializers smaller than this stay inline in the graph.
        inline_dtypes: Element types that stay inline in the graph (shape tensors).

    Returns:
        The bundle, as a bytearray so that the producer can wipe it after sealing.

    Raises:
        ModelFormatError: The model is malformed or already uses external data.
        BundleError: More than 255 tensors would leave the graph, or a manifest rule
            is broken.
        UsageError: ``fields.format`` is not ONNX or ``min_tensor_bytes`` is negative.
    """
    if fields.format is not ModelFormat.ONNX:
        raise UsageError(f"sealed-weights bundles hold ONNX models, not {fields.format.value}")
    if min_tensor_bytes < 0:
        raise UsageError(f"min_tensor_bytes must be >= 0, got {min_tensor_bytes}")
    graph, files = _split(
        bytes(memoryview(onnx_bytes).cast("B")), min_tensor_bytes, frozenset(inline_dtypes)
    )
    runtime = dict(fields.runtime)
    runtime[WEIGHTS_HINT] = WEIGHTS_HINT_VALUE
    sealed_fields = replace(fields, runtime=MappingProxyType(runtime))
    try:
        return build_bundle(sealed_fields, [(GRAPH_FILE_NAME, graph), *files])
    finally:
        graph[:] = bytes(len(graph))


def external_tensors(graph: Buffer, manifest: Manifest) -> tuple[ExternalTensor, ...]:
    """The weights a sealed-weights graph refers to, checked against the bundle's files.

    Reads the graph at the protobuf wire level without copying it.

    Raises:
        BundleError: A reference breaks a rule of the layout (see module docstring).
        ModelFormatError: The graph is malformed.
    """
    buf = memoryview(graph).cast("B")
    _, graph_record = _graph_records(buf)
    entry = manifest.entry.name
    names = {f.name: f for f in manifest.files}
    found: list[ExternalTensor] = []
    used: set[str] = set()
    for record in wire.records(buf, graph_record.value_start, graph_record.end):
        if record.number != _GRAPH_INITIALIZER:
            continue
        if record.wire_type != wire.LEN:
            raise ModelFormatError(f"initializer at offset {record.start} is not a message")
        fields = parse_tensor(bytearray(buf[record.start : record.end]), _rebase(record))
        if fields.data_location != DATA_LOCATION_EXTERNAL:
            continue
        found.append(_checked_reference(fields, names, entry, used))
    unused = sorted(set(names) - used - {entry})
    if unused:
        raise BundleError(f"bundle file {unused[0]!r} is not referenced by the graph")
    return tuple(found)


def _checked_reference(
    fields: TensorFields, files: Mapping[str, FileEntry], entry: str, used: set[str]
) -> ExternalTensor:
    where = f"initializer {fields.name!r}"
    dtype = by_onnx(fields.data_type)
    if dtype is None or dtype.numpy is None:
        raise BundleError(f"{where} has an element type that cannot be external here")
    item_bytes = dtype.numpy.itemsize
    location = fields.external.get("location", "")
    file = files.get(location)
    if file is None or location == entry:
        raise BundleError(f"{where} refers to {location!r}, which is not a weight file")
    if location in used:
        raise BundleError(f"{where} refers to {location!r}, which another tensor uses")
    nbytes = dtype.nbytes(math.prod(fields.dims))
    offset = fields.external.get("offset", "0")
    length = fields.external.get("length", str(nbytes))
    if offset != "0" or length != str(nbytes) or file.length != nbytes:
        raise BundleError(
            f"{where} must cover all of {location!r} ({file.length} bytes) from offset 0; "
            f"its type and shape need {nbytes}"
        )
    used.add(location)
    return ExternalTensor(
        fields.name, dtype, fields.data_type, item_bytes, fields.dims, location, file.length
    )


def total_weight_bytes(tensors: Iterable[ExternalTensor]) -> int:
    """The sum of the tensors' lengths."""
    return sum(t.nbytes for t in tensors)
