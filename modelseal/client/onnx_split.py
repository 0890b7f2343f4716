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

from modelseal.models import _protowire as wire
from modelseal.models.errors import ModelFormatError

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

_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_T_DIMS, _T_DATA_TYPE, _T_SEGMENT, _T_NAME, _T_RAW_DATA = 1, 2, 3, 8, 9
_T_EXTERNAL_DATA, _T_DATA_LOCATION = 13, 14
_T_TYPED_DATA = frozenset({4, 5, 6, 7, 10, 11})
_EXTERNAL = 1
_LOCATION = "modelseal-memory"


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


def _entry(key: str, value: str) -> bytes:
    body = wire.len_record(1, key.encode()) + wire.len_record(2, value.encode())
    return wire.len_record(_T_EXTERNAL_DATA, body)


def _dims(buf: memoryview, record: wire.Record) -> list[int]:
    if record.wire_type == wire.VARINT:
        return [wire.read_varint(buf, record.value_start, record.end)[0]]
    if record.wire_type != wire.LEN:
        raise ModelFormatError("dims of an unexpected wire type")
    values, pos = [], record.value_start
    while pos < record.end:
        value, pos = wire.read_varint(buf, pos, record.end)
        values.append(value)
    return values


def _split_tensor(buf: memoryview, tensor: wire.Record) -> tuple[bytes, SplitInitializer] | None:
    """The tensor's new bytes (without the tag) and its location, or None to keep it inline."""
    records = list(wire.records(buf, tensor.value_start, tensor.end))
    dims: list[int] = []
    element_type = 0
    name: str | None = None
    raw: wire.Record | None = None
    for record in records:
        if record.number in (_T_SEGMENT, _T_EXTERNAL_DATA) or record.number in _T_TYPED_DATA:
            return None
        if record.number == _T_DATA_LOCATION:
            if (
                record.wire_type != wire.VARINT
                or wire.read_varint(buf, record.value_start, record.end)[0]
            ):
                return None
        elif record.number == _T_DIMS:
            dims += _dims(buf, record)
        elif record.number == _T_DATA_TYPE and record.wire_type == wire.VARINT:
            element_type = wire.read_varint(buf, record.value_start, record.end)[0]
        elif record.number == _T_NAME and record.wire_type == wire.LEN:
            try:
                name = bytes(buf[record.value_start : record.end]).decode("utf-8")
            except UnicodeDecodeError:
                return None
        elif record.number == _T_RAW_DATA and record.wire_type == wire.LEN:
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
        + wire.encode_varint(_T_DATA_LOCATION << 3 | wire.VARINT)
        + wire.encode_varint(_EXTERNAL)
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
        top = list(wire.records(buf, 0, len(buf)))
        graphs = [r for r in top if r.number == _MODEL_GRAPH and r.wire_type == wire.LEN]
        if len(graphs) != 1:
            return None
        (graph,) = graphs
        pieces: list[bytes | memoryview] = []
        found: list[SplitInitializer] = []
        for record in wire.records(buf, graph.value_start, graph.end):
            split = None
            if record.number == _GRAPH_INITIALIZER and record.wire_type == wire.LEN:
                split = _split_tensor(buf, record)
            if split is None:
                pieces.append(buf[record.start : record.end])
                continue
            body, where = split
            pieces.append(wire.len_record(_GRAPH_INITIALIZER, body))
            found.append(where)
    except ModelFormatError:
        return None
    if not found:
        return None
    graph_body = bytearray().join(pieces)
    out = bytearray()
    for record in top:
        if record is graph:
            out += wire.len_header(_MODEL_GRAPH, len(graph_body))
            out += graph_body
        else:
            out += buf[record.start : record.end]
    graph_body[:] = bytes(len(graph_body))
    return SplitModel(out, tuple(found))
