"""Reading an ONNX ``TensorProto`` straight from the protobuf wire.

The ONNX adapter needs each initializer's name, type, shape, storage and the byte
spans of its data records, and must not rely on a re-serialised copy; this module
reads those members from the original bytes (field numbers from ``onnx.proto``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelseal.models import _protowire as wire
from modelseal.models.errors import ModelFormatError, UnsupportedTensorError

RAW_DATA = 9
DATA_FIELDS = {
    4: "float_data",
    5: "int32_data",
    6: "string_data",
    7: "int64_data",
    9: "raw_data",
    10: "double_data",
    11: "uint64_data",
}
_TENSOR_DIMS = 1
_TENSOR_DATA_TYPE = 2
_TENSOR_SEGMENT = 3
_TENSOR_NAME = 8
_TENSOR_EXTERNAL_DATA = 13
_TENSOR_DATA_LOCATION = 14
DATA_LOCATION_EXTERNAL = 1
# Wire types each data field may use: packed (LEN) or one scalar per record.
_DATA_WIRE_TYPES = {
    4: (wire.LEN, wire.FIXED32),
    5: (wire.LEN, wire.VARINT),
    6: (wire.LEN,),
    7: (wire.LEN, wire.VARINT),
    9: (wire.LEN,),
    10: (wire.LEN, wire.FIXED64),
    11: (wire.LEN, wire.VARINT),
}


@dataclass(frozen=True, slots=True)
class TensorFields:
    """The members of one TensorProto that the adapter uses.

    Attributes:
        name: The tensor's name.
        data_type: The ``TensorProto.DataType`` number (0 when absent).
        dims: The shape.
        data_location: 0 (inline) or 1 (external).
        external: The ``external_data`` key-value pairs.
        data: The records of the data fields, in file order.
    """

    name: str
    data_type: int
    dims: tuple[int, ...]
    data_location: int
    external: dict[str, str]
    data: tuple[wire.Record, ...]


def _utf8(buf: bytearray, record: wire.Record, what: str) -> str:
    try:
        return bytes(buf[record.value_start : record.end]).decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError(f"{what} at offset {record.start} is not UTF-8") from None


def parse_tensor(buf: bytearray, tensor: wire.Record) -> TensorFields:
    """Read the TensorProto members the adapter needs, straight from the wire.

    Scalar members given twice are refused: protobuf would silently keep the last,
    and two readers could then disagree about which tensor this is.
    """
    where = f"initializer at offset {tensor.start}"
    scalars: dict[int, int] = {}
    name: str | None = None
    dims: list[int] = []
    external: dict[str, str] = {}
    data: list[wire.Record] = []
    for r in wire.records(buf, tensor.value_start, tensor.end):
        if r.number in _DATA_WIRE_TYPES:
            if r.wire_type not in _DATA_WIRE_TYPES[r.number]:
                raise ModelFormatError(f"{where} has a malformed {DATA_FIELDS[r.number]}")
            data.append(r)
        elif r.number == _TENSOR_DIMS:
            if r.wire_type == wire.LEN:
                values = wire.decode_varints(memoryview(buf)[r.value_start : r.end])
                dims.extend(int(v) for v in values.view(np.int64))
            elif r.wire_type == wire.VARINT:
                dim, _ = wire.read_varint(buf, r.value_start, r.end)
                dims.append(dim - (1 << 64) if dim >> 63 else dim)
            else:
                raise ModelFormatError(f"{where} has malformed dims")
        elif r.number in (_TENSOR_DATA_TYPE, _TENSOR_DATA_LOCATION):
            if r.wire_type != wire.VARINT or r.number in scalars:
                raise ModelFormatError(f"{where} has a malformed or repeated field {r.number}")
            scalars[r.number], _ = wire.read_varint(buf, r.value_start, r.end)
        elif r.number == _TENSOR_NAME:
            if r.wire_type != wire.LEN or name is not None:
                raise ModelFormatError(f"{where} has a malformed or repeated name")
            name = _utf8(buf, r, "initializer name")
        elif r.number == _TENSOR_SEGMENT:
            raise UnsupportedTensorError(f"{where} is segmented, which is not supported")
        elif r.number == _TENSOR_EXTERNAL_DATA:
            if r.wire_type != wire.LEN:
                raise ModelFormatError(f"{where} has malformed external_data")
            key, text = _parse_entry(buf, r, where)
            if key in external:
                raise ModelFormatError(f"{where} repeats external_data key {key!r}")
            external[key] = text
        # Other members (doc_string, metadata_props, unknown fields) are kept as they are.
    if not name:
        raise ModelFormatError(f"{where} has no name")
    if any(d < 0 for d in dims):
        raise ModelFormatError(f"initializer {name!r} has a negative dimension: {dims}")
    return TensorFields(
        name=name,
        data_type=scalars.get(_TENSOR_DATA_TYPE, 0),
        dims=tuple(dims),
        data_location=scalars.get(_TENSOR_DATA_LOCATION, 0),
        external=external,
        data=tuple(data),
    )


def _parse_entry(buf: bytearray, record: wire.Record, where: str) -> tuple[str, str]:
    """A StringStringEntryProto: key = 1, value = 2."""
    parts: dict[int, str] = {}
    for r in wire.records(buf, record.value_start, record.end):
        if r.number in (1, 2):
            if r.wire_type != wire.LEN or r.number in parts:
                raise ModelFormatError(f"{where} has a malformed external_data entry")
            parts[r.number] = _utf8(buf, r, "external_data entry")
    return parts.get(1, ""), parts.get(2, "")


def typed_count(buf: bytearray, field: int, data: tuple[wire.Record, ...], where: str) -> int:
    """How many values the typed field's records hold."""
    width = {4: 4, 10: 8}.get(field)
    count = 0
    for r in data:
        if r.wire_type != wire.LEN or field == 6:
            count += 1
        elif width is not None:
            size = r.end - r.value_start
            if size % width:
                raise ModelFormatError(f"{where} has a packed field of {size} bytes")
            count += size // width
        else:
            count += wire.decode_varints(memoryview(buf)[r.value_start : r.end]).size
    return count
