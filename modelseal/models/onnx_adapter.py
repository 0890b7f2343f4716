"""List, read and replace the initializers of an ONNX model, changing nothing else.

The model is edited at the protobuf wire level (see :mod:`modelseal.models._protowire`):

* a tensor stored as ``raw_data``, or in ``float_data``/``double_data`` packed, is
  overwritten in place; the output differs from the input only in that tensor's bytes;
* a tensor in a varint field (``int32_data``, ``int64_data``, ``uint64_data``) or
  stored unpacked is re-encoded as one packed record in the place of the old ones;
  its size may change, and with it the length prefixes of that ``TensorProto`` and
  of the ``GraphProto`` around it. Nothing else changes;
* a tensor in external data (``data_location = EXTERNAL``) is read from and written
  to the external file the caller supplied, at its ``offset``; the ``.onnx`` bytes do
  not change at all.

Only the main graph's ``initializer`` list is covered: sparse initializers and
initializers of subgraphs (``If``/``Loop`` bodies) are neither listed nor touched.
Nothing here reads a file from disk, so external data is never loaded behind the
caller's back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

from modelseal.errors import UsageError
from modelseal.models import _protowire as wire
from modelseal.models._onnx_wire import (
    DATA_FIELDS,
    DATA_LOCATION_EXTERNAL,
    RAW_DATA,
    parse_tensor,
    typed_count,
)
from modelseal.models.errors import ModelFormatError, UnsupportedTensorError
from modelseal.models.tensors import (
    DType,
    TensorInfo,
    by_onnx,
    checked_replacement,
    numpy_dtype,
)

__all__ = ["ONNXModel"]

_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
# The typed field each element type is stored in when not in raw_data (onnx.proto).
_TYPED_FIELD = {
    "float32": 4,
    "complex64": 4,
    "int64": 7,
    "string": 6,
    "float64": 10,
    "complex128": 10,
    "uint32": 11,
    "uint64": 11,
}
_INT32_FIELD = 5  # every other type: integers, bool, float16, bfloat16, 8-bit floats, 4-bit

# Value ranges of types carried in the varint int32_data field, as (low, high, storage).
_INT32_DATA_RANGES: dict[str, tuple[int, int, str]] = {
    "int32": (-(2**31), 2**31 - 1, "<i4"),
    "int16": (-(2**15), 2**15 - 1, "<i2"),
    "int8": (-(2**7), 2**7 - 1, "i1"),
    "uint16": (0, 2**16 - 1, "<u2"),
    "uint8": (0, 2**8 - 1, "u1"),
    "bool": (0, 1, "u1"),
    "float16": (0, 2**16 - 1, "<u2"),
    "bfloat16": (0, 2**16 - 1, "<u2"),
}


@dataclass(frozen=True, slots=True)
class _External:
    location: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class _Located:
    info: TensorInfo
    dtype: DType
    graph: wire.Record
    tensor: wire.Record
    data: tuple[wire.Record, ...]
    external: _External | None


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


class ONNXModel:
    """An ONNX model file open for tensor edits.

    Args:
        data: The serialised ``ModelProto``.
        external_data: The model's external data files by ``location``, for tensors
            stored outside the ``.onnx`` file. Only needed to read or replace those.

    Raises:
        ModelFormatError: The bytes are not a model with one graph, or an initializer
            is malformed (unknown element type, data that does not match its shape,
            a duplicate or empty name).
        UnsupportedTensorError: An initializer uses the ``segment`` field.
    """

    def __init__(self, data: Buffer, external_data: Mapping[str, Buffer] | None = None) -> None:
        self._buf = bytearray(data)
        self._external = {k: bytearray(v) for k, v in (external_data or {}).items()}
        self._index: dict[str, _Located] = {}
        self._reindex()

    # --- reading -------------------------------------------------------------------------

    def tensors(self) -> tuple[TensorInfo, ...]:
        """Every initializer of the main graph, in file order."""
        return tuple(located.info for located in self._index.values())

    def info(self, name: str) -> TensorInfo:
        """The description of initializer ``name``.

        Raises:
            UsageError: No initializer has that name.
        """
        return self._locate(name).info

    def read(self, name: str) -> npt.NDArray[np.generic]:
        """A copy of initializer ``name`` as a numpy array of its own dtype and shape.

        Raises:
            UsageError: No initializer has that name, or its external file was not supplied.
            UnsupportedTensorError: The element type has no numpy equivalent here
                (strings, 2-, 4- and 6-bit types).
            ModelFormatError: The external data does not fit in its file.
        """
        located = self._locate(name)
        dtype = numpy_dtype(located.info)
        if located.external is not None:
            raw: bytes | bytearray | memoryview = self._external_view(located.external)
        elif located.info.storage == "raw_data":
            raw = memoryview(self._buf)[located.data[0].value_start : located.data[0].end]
        elif located.data:
            raw = self._decode_typed(located)
        else:
            raw = b""
        array = np.frombuffer(raw, dtype=dtype).reshape(located.info.shape).copy()
        return array

    def external_files(self) -> Mapping[str, bytes]:
        """The external data files as they now stand, by location."""
        return MappingProxyType({k: bytes(v) for k, v in self._external.items()})

    def to_bytes(self) -> bytes:
        """The ``.onnx`` file as it now stands."""
        return bytes(self._buf)

    # --- writing -------------------------------------------------------------------------

    def replace(self, name: str, array: npt.ArrayLike) -> None:
        """Overwrite initializer ``name`` with ``array``.

        ``array`` must have exactly the tensor's dtype and shape; nothing is cast.
        The storage form is kept: raw data stays raw, a typed field stays that field
        (packed), external data stays in its file at its offset.

        Raises:
            UsageError: Unknown name, wrong dtype or shape, or the external file was
                not supplied.
            UnsupportedTensorError: The element type has no numpy equivalent here.
        """
        located = self._locate(name)
        new_bytes = checked_replacement(located.info, array)
        if located.external is not None:
            ext = located.external
            self._external_view(ext)  # checks presence and bounds
            self._external[ext.location][ext.offset : ext.offset + ext.length] = new_bytes
            return
        if located.info.storage == "raw_data":
            record = located.data[0]
            self._buf[record.value_start : record.end] = new_bytes
            return
        if not new_bytes and not located.data:
            return  # an empty tensor stored without any data record
        field = _TYPED_FIELD.get(located.info.dtype, _INT32_FIELD)
        payload = self._encode_typed(located, new_bytes)
        self._splice_tensor(located, wire.len_record(field, payload))
        self._reindex()

    # --- internals -----------------------------------------------------------------------

    def _locate(self, name: str) -> _Located:
        located = self._index.get(name)
        if located is None:
            raise UsageError(f"model has no initializer named {name!r}")
        return located

    def _external_view(self, ext: _External) -> memoryview:
        data = self._external.get(ext.location)
        if data is None:
            raise UsageError(f"external data file {ext.location!r} was not supplied")
        if ext.offset + ext.length > len(data):
            raise ModelFormatError(
                f"external data [{ext.offset}, {ext.offset + ext.length}) runs past the end "
                f"of {ext.location!r} ({len(data)} bytes)"
            )
        return memoryview(data)[ext.offset : ext.offset + ext.length]

    def _reindex(self) -> None:
        buf = self._buf
        graphs = [r for r in wire.records(buf, 0, len(buf)) if r.number == _MODEL_GRAPH]
        if len(graphs) != 1 or graphs[0].wire_type != wire.LEN:
            raise ModelFormatError(f"model must have exactly one graph, found {len(graphs)}")
        graph = graphs[0]
        index: dict[str, _Located] = {}
        for record in wire.records(buf, graph.value_start, graph.end):
            if record.number != _GRAPH_INITIALIZER:
                continue
            if record.wire_type != wire.LEN:
                raise ModelFormatError(f"initializer at offset {record.start} is not a message")
            located = self._locate_tensor(graph, record)
            if located.info.name in index:
                raise ModelFormatError(f"initializer name {located.info.name!r} is a duplicate")
            index[located.info.name] = located
        self._index = index

    def _locate_tensor(self, graph: wire.Record, record: wire.Record) -> _Located:
        fields = parse_tensor(self._buf, record)
        where = f"initializer {fields.name!r}"
        dtype = by_onnx(fields.data_type)
        if dtype is None:
            raise ModelFormatError(f"{where} has unknown element type {fields.data_type}")
        shape = fields.dims
        numel = _numel(shape)
        data = fields.data
        numbers = {r.number for r in data}
        if len(numbers) > 1:
            raise ModelFormatError(f"{where} stores data in more than one field")
        expected = dtype.nbytes(numel)
        external = None
        if fields.data_location == DATA_LOCATION_EXTERNAL:
            if data:
                raise ModelFormatError(f"{where} is external but also stores data inline")
            external = _parse_external(fields.external, where, expected)
            storage, nbytes = "external", external.length
        elif fields.data_location != 0:
            raise ModelFormatError(f"{where} has unknown data_location {fields.data_location}")
        elif RAW_DATA in numbers:
            if len(data) != 1:
                raise ModelFormatError(f"{where} repeats raw_data")
            nbytes = data[0].end - data[0].value_start
            if expected is None or nbytes != expected:
                raise ModelFormatError(
                    f"{where} raw_data is {nbytes} bytes; "
                    f"{dtype.name}{list(shape)} needs {expected}"
                )
            storage = "raw_data"
        else:
            field = _TYPED_FIELD.get(dtype.name, _INT32_FIELD)
            if numbers and numbers != {field}:
                got = DATA_FIELDS[numbers.pop()]
                raise ModelFormatError(
                    f"{where} of type {dtype.name} stores data in {got}, not {DATA_FIELDS[field]}"
                )
            storage = DATA_FIELDS[field]
            stored = typed_count(self._buf, field, data, where)
            wanted = _typed_values_needed(dtype, numel)
            if wanted is not None and stored != wanted:
                raise ModelFormatError(
                    f"{where} holds {stored} values in {storage}; shape {list(shape)} needs "
                    f"{wanted}"
                )
            # Strings have no fixed width: count the bytes of their values.
            nbytes = sum(r.end - r.value_start for r in data) if expected is None else expected
        info = TensorInfo(fields.name, dtype.name, shape, nbytes, storage)
        return _Located(info, dtype, graph, record, data, external)

    def _decode_typed(self, located: _Located) -> bytes:
        buf = self._buf
        name = located.info.dtype
        field = _TYPED_FIELD.get(name, _INT32_FIELD)
        if field in (4, 10):  # fixed-width floats: payload bytes are the raw encoding
            return b"".join(bytes(buf[r.value_start : r.end]) for r in located.data)
        parts = []
        for r in located.data:
            if r.wire_type == wire.LEN:
                parts.append(wire.decode_varints(memoryview(buf)[r.value_start : r.end]))
            else:
                value, _ = wire.read_varint(buf, r.value_start, r.end)
                parts.append(np.array([value], dtype=np.uint64))
        values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        where = f"initializer {located.info.name!r}"
        if field == 7:
            return values.view("<i8").tobytes()
        if field == 11:
            if name == "uint32" and values.size and int(values.max()) > 2**32 - 1:
                raise ModelFormatError(f"{where} holds a uint32 value out of range")
            return values.astype(numpy_dtype(located.info)).tobytes()
        # int32_data: proto int32 values arrive sign-extended to 64 bits.
        signed = values.view(np.int64)
        low, high, storage = _INT32_DATA_RANGES.get(name, (0, 2**8 - 1, "u1"))
        if signed.size and (int(signed.min()) < low or int(signed.max()) > high):
            raise ModelFormatError(f"{where} holds a value outside {low}..{high}")
        return signed.astype(storage).tobytes()

    def _encode_typed(self, located: _Located, new_bytes: bytes) -> bytes:
        name = located.info.dtype
        field = _TYPED_FIELD.get(name, _INT32_FIELD)
        if field in (4, 10):
            return new_bytes
        if field == 7:
            return wire.encode_varints(np.frombuffer(new_bytes, dtype="<i8").view(np.uint64))
        if field == 11:
            values = np.frombuffer(new_bytes, dtype=numpy_dtype(located.info))
            return wire.encode_varints(values.astype(np.uint64))
        _, _, storage = _INT32_DATA_RANGES.get(name, (0, 2**8 - 1, "u1"))
        ints = np.frombuffer(new_bytes, dtype=storage).astype(np.int64)
        return wire.encode_varints(ints.view(np.uint64))

    def _splice_tensor(self, located: _Located, new_record: bytes) -> None:
        buf, graph, tensor = self._buf, located.graph, located.tensor
        first = located.data[0].start if located.data else tensor.end
        kept = bytearray()
        pos = tensor.value_start
        for record in located.data:
            kept += buf[pos : record.start]
            if record.start == first:
                kept += new_record
            pos = record.end
        kept += buf[pos : tensor.end]
        if not located.data:
            kept += new_record
        new_tensor = wire.len_record(_GRAPH_INITIALIZER, bytes(kept))
        new_graph = buf[graph.value_start : tensor.start] + new_tensor + buf[tensor.end : graph.end]
        self._buf = (
            buf[: graph.start] + wire.len_record(_MODEL_GRAPH, bytes(new_graph)) + buf[graph.end :]
        )


def _typed_values_needed(dtype: DType, numel: int) -> int | None:
    """How many typed-field values a tensor of ``numel`` elements must hold.

    ``None`` for the packed sub-byte types, which this adapter lists but never decodes.
    """
    if dtype.name.startswith("complex"):
        return 2 * numel  # real and imaginary parts interleaved
    if dtype.bits is not None and dtype.bits < 8:
        return None
    return numel


def _parse_external(entries: dict[str, str], where: str, expected: int | None) -> _External:
    location = entries.get("location")
    if not location:
        raise ModelFormatError(f"{where} is external but names no location")
    if expected is None:
        raise UnsupportedTensorError(f"{where}: external string data is not supported")

    def number(key: str, default: int) -> int:
        text = entries.get(key)
        if text is None:
            return default
        if not text.isascii() or not text.isdigit():
            raise ModelFormatError(f"{where} external_data {key} must be decimal, got {text!r}")
        return int(text)

    offset = number("offset", 0)
    length = number("length", expected)
    if length != expected:
        raise ModelFormatError(
            f"{where} external length is {length}; its shape and type need {expected}"
        )
    return _External(location, offset, length)
