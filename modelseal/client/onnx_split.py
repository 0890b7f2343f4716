"""Handing an in-memory ONNX model to ONNX Runtime without copying its weights twice.

``onnxruntime.InferenceSession(bytes)`` copies the whole model into a C++ string
before parsing it, then copies every weight again out of the parsed protobuf: for
large models that costs far more than decrypting them. Instead, the plaintext is
walked here at the protobuf wire level (no parse, no copy of any weight) and split:

* a *graph*: the ``ModelProto`` with every large ``raw_data`` initializer of the
  main graph turned into an external-data reference (``data_location = EXTERNAL``,
  ``external_data = {location, offset 0, length}``), all other bytes as they were;
* *initializers*: for each of them, where its little-endian bytes lie in the
  plaintext, with its ONNX element type and dimensions.

The runtime then passes the weights as ``OrtValue`` views of the decrypted buffer
to ``SessionOptions.add_external_initializers`` (ONNX Runtime >= 1.12 copies them
into the graph while it loads and does not keep the caller's buffers) and builds
the session from the small graph. Anything this walker does not handle (wire
groups, a model without exactly one graph, typed-data or segmented tensors,
complex or string elements) is left inline; a model it cannot walk at all makes
:func:`split_initializers` return None and the caller loads the bytes as they are.

Wire format facts: https://protobuf.dev/programming-guides/encoding/.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = [
    "ELEMENT_BYTES",
    "MIN_SPLIT_BYTES",
    "SplitInitializer",
    "SplitModel",
    "split_initializers",
]

MIN_SPLIT_BYTES = 1024
"""Initializers smaller than this stay in the graph (shape inference reads small ones)."""

# ONNX TensorProto.DataType -> bytes per element, for the fixed-size types numpy can view.
ELEMENT_BYTES = {
    1: 4,  # FLOAT
    2: 1,  # UINT8
    3: 1,  # INT8
    4: 2,  # UINT16
    5: 2,  # INT16
    6: 4,  # INT32
    7: 8,  # INT64
    9: 1,  # BOOL
    10: 2,  # FLOAT16
    11: 8,  # DOUBLE
    12: 4,  # UINT32
    13: 8,  # UINT64
    16: 2,  # BFLOAT16
}

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_T_DIMS, _T_DATA_TYPE, _T_SEGMENT, _T_NAME, _T_RAW_DATA = 1, 2, 3, 8, 9
_T_EXTERNAL_DATA, _T_DATA_LOCATION = 13, 14
_T_TYPED_DATA = frozenset({4, 5, 6, 7, 10, 11})
_EXTERNAL = 1
_LOCATION = "modelseal-memory"


class _NotWalkableError(Exception):
    """The bytes use protobuf features this walker does not follow."""


@dataclass(frozen=True, slots=True)
class SplitInitializer:
    """Where one initializer's data lies in the plaintext.

    Attributes:
        name: The initializer's name.
        element_type: Its ONNX ``TensorProto.DataType``.
        dims: Its dimensions.
        offset: Offset of its raw little-endian bytes in the plaintext.
        length: Their length.
    """

    name: str
    element_type: int
    dims: tuple[int, ...]
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class SplitModel:
    """The graph with external references, and the initializers it refers to.

    ``graph`` is a ``bytearray`` so that the caller can wipe it.
    """

    graph: bytearray
    initializers: tuple[SplitInitializer, ...]


@dataclass(frozen=True, slots=True)
class _Record:
    number: int
    wire_type: int
    start: int
    value_start: int
    end: int


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if pos >= end:
            raise _NotWalkableError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >= 1 << 64:
                raise _NotWalkableError("varint over 64 bits")
            return value, pos
    raise _NotWalkableError("varint longer than 10 bytes")


def _records(buf: memoryview, start: int, end: int) -> list[_Record]:
    records = []
    pos = start
    while pos < end:
        tag, value_start = _varint(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise _NotWalkableError("field number 0")
        if wire_type == _VARINT:
            _, stop = _varint(buf, value_start, end)
        elif wire_type == _FIXED64:
            stop = value_start + 8
        elif wire_type == _FIXED32:
            stop = value_start + 4
        elif wire_type == _LEN:
            length, value_start = _varint(buf, value_start, end)
            stop = value_start + length
        else:
            raise _NotWalkableError(f"wire type {wire_type}")
        if stop > end:
            raise _NotWalkableError("record runs past its message")
        records.append(_Record(number, wire_type, pos, value_start, stop))
        pos = stop
    return records


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_record(number: int, payload: bytes | bytearray | memoryview) -> bytes:
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(payload))


def _entry(key: str, value: str) -> bytes:
    body = b"".join(_len_record(n, s.encode()) + s.encode() for n, s in ((1, key), (2, value)))
    return _len_record(_T_EXTERNAL_DATA, body) + body


def _dims(buf: memoryview, record: _Record) -> list[int]:
    if record.wire_type == _VARINT:
        return [_varint(buf, record.value_start, record.end)[0]]
    if record.wire_type != _LEN:
        raise _NotWalkableError("dims of an unexpected wire type")
    values, pos = [], record.value_start
    while pos < record.end:
        value, pos = _varint(buf, pos, record.end)
        values.append(value)
    return values


def _split_tensor(buf: memoryview, tensor: _Record) -> tuple[bytes, SplitInitializer] | None:
    """The tensor's new bytes (without the tag) and its location, or None to keep it inline."""
    records = _records(buf, tensor.value_start, tensor.end)
    dims: list[int] = []
    element_type = 0
    name: str | None = None
    raw: _Record | None = None
    for record in records:
        if record.number in (_T_SEGMENT, _T_EXTERNAL_DATA) or record.number in _T_TYPED_DATA:
            return None
        if record.number == _T_DATA_LOCATION:
            if record.wire_type != _VARINT or _varint(buf, record.value_start, record.end)[0]:
                return None
        elif record.number == _T_DIMS:
            dims += _dims(buf, record)
        elif record.number == _T_DATA_TYPE and record.wire_type == _VARINT:
            element_type = _varint(buf, record.value_start, record.end)[0]
        elif record.number == _T_NAME and record.wire_type == _LEN:
            try:
                name = bytes(buf[record.value_start : record.end]).decode("utf-8")
            except UnicodeDecodeError:
                return None
        elif record.number == _T_RAW_DATA and record.wire_type == _LEN:
            if raw is not None:
                return None
            raw = record
    if raw is None or not name or element_type not in ELEMENT_BYTES:
        return None
    count = 1
    for dim in dims:
        count *= dim
    length = raw.end - raw.value_start
    if length != count * ELEMENT_BYTES[element_type] or length < MIN_SPLIT_BYTES:
        return None
    kept = b"".join(
        bytes(buf[r.start : r.end])
        for r in records
        if r.number not in (_T_RAW_DATA, _T_DATA_LOCATION)
    )
    body = (
        kept
        + _encode_varint(_T_DATA_LOCATION << 3 | _VARINT)
        + _encode_varint(_EXTERNAL)
        + _entry("location", _LOCATION)
        + _entry("offset", "0")
        + _entry("length", str(length))
    )
    where = SplitInitializer(name, element_type, tuple(dims), raw.value_start, length)
    return body, where


def split_initializers(model: memoryview) -> SplitModel | None:
    """Split a serialised ``ModelProto`` (see module docstring).

    Returns:
        The split model, or None when nothing is worth splitting or the bytes use
        protobuf features this walker does not follow (the caller then loads the
        model as it is, and ONNX Runtime judges it).
    """
    if sys.byteorder != "little":
        return None  # raw_data is little-endian; views of it would be misread
    buf = memoryview(model).cast("B")
    try:
        top = _records(buf, 0, len(buf))
        graphs = [r for r in top if r.number == _MODEL_GRAPH and r.wire_type == _LEN]
        if len(graphs) != 1:
            return None
        (graph,) = graphs
        pieces: list[bytes | memoryview] = []
        found: list[SplitInitializer] = []
        for record in _records(buf, graph.value_start, graph.end):
            split = None
            if record.number == _GRAPH_INITIALIZER and record.wire_type == _LEN:
                split = _split_tensor(buf, record)
            if split is None:
                pieces.append(buf[record.start : record.end])
                continue
            body, where = split
            pieces.append(_len_record(_GRAPH_INITIALIZER, body) + body)
            found.append(where)
    except _NotWalkableError:
        return None
    if not found:
        return None
    graph_body = bytearray().join(pieces)
    out = bytearray()
    for record in top:
        if record is graph:
            out += _len_record(_MODEL_GRAPH, graph_body)
            out += graph_body
        else:
            out += buf[record.start : record.end]
    graph_body[:] = bytes(len(graph_body))
    return SplitModel(out, tuple(found))
