"""Just enough of the protobuf wire format to edit one field of an ONNX file in place.

The ONNX adapter must change a tensor's bytes and leave every other byte of the
file as it was. Re-serialising a parsed ``ModelProto`` cannot promise that (field
order, packed versus unpacked repeats and unknown fields are the serialiser's
choice), so the adapter locates records here and splices bytes instead.

Reference: https://protobuf.dev/programming-guides/encoding/ (facts only).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelseal.models.errors import ModelFormatError

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5

_MAX_VARINT_BYTES = 10


@dataclass(frozen=True, slots=True)
class Record:
    """One field record of a message.

    Attributes:
        number: The field number.
        wire_type: 0 (varint), 1 (fixed64), 2 (length-delimited) or 5 (fixed32).
        start: Offset of the record's tag.
        value_start: Offset of the value (after the length prefix for wire type 2).
        end: Offset just past the record.
    """

    number: int
    wire_type: int
    start: int
    value_start: int
    end: int


def read_varint(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``pos``; return ``(value, next_pos)``.

    Raises:
        ModelFormatError: The varint runs past ``end``, is longer than 10 bytes or
            exceeds 64 bits.
    """
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= end:
            raise ModelFormatError(f"protobuf varint at offset {pos} is truncated")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >> 64:
                raise ModelFormatError(f"protobuf varint at offset {pos} exceeds 64 bits")
            return value, pos + i + 1
    raise ModelFormatError(f"protobuf varint at offset {pos} is longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    """The shortest varint encoding of ``0 <= value < 2**64``."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"varint value must be 0..2**64-1, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def records(buf: bytes | bytearray | memoryview, start: int, end: int) -> Iterator[Record]:
    """The field records of the message occupying ``buf[start:end]``.

    Raises:
        ModelFormatError: A record is malformed, uses a group wire type, or runs past ``end``.
    """
    pos = start
    while pos < end:
        tag, value_pos = read_varint(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise ModelFormatError(f"protobuf field number 0 at offset {pos}")
        if wire_type == VARINT:
            _, next_pos = read_varint(buf, value_pos, end)
        elif wire_type == FIXED64:
            next_pos = value_pos + 8
        elif wire_type == FIXED32:
            next_pos = value_pos + 4
        elif wire_type == LEN:
            length, value_pos = read_varint(buf, value_pos, end)
            next_pos = value_pos + length
        else:
            raise ModelFormatError(f"protobuf wire type {wire_type} at offset {pos} is not allowed")
        if next_pos > end:
            raise ModelFormatError(f"protobuf field {number} at offset {pos} runs past its message")
        yield Record(number, wire_type, pos, value_pos, next_pos)
        pos = next_pos


def len_header(number: int, length: int) -> bytes:
    """The tag and length prefix of a length-delimited record of field ``number``.

    For callers that append a payload they must not copy (a buffer they later wipe).
    """
    return encode_varint(number << 3 | LEN) + encode_varint(length)


def len_record(number: int, payload: bytes) -> bytes:
    """A length-delimited record of field ``number``."""
    return len_header(number, len(payload)) + payload


def decode_varints(data: bytes | memoryview) -> npt.NDArray[np.uint64]:
    """Decode a packed run of varints (vectorised for large tensors).

    Raises:
        ModelFormatError: The run ends inside a varint, or one is longer than 10 bytes
            or exceeds 64 bits.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, dtype=np.uint64)
    last = raw < 0x80
    if not last[-1]:
        raise ModelFormatError("packed varints end inside a varint")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if int(lengths.max()) > _MAX_VARINT_BYTES:
        raise ModelFormatError("packed varint is longer than 10 bytes")
    # The tenth byte of a varint carries only bit 63.
    tenth = starts[lengths == _MAX_VARINT_BYTES] + 9
    if tenth.size and int(raw[tenth].max()) > 1:
        raise ModelFormatError("packed varint exceeds 64 bits")
    position = np.arange(raw.size) - np.repeat(starts, lengths)
    parts = (raw & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts)


def encode_varints(values: npt.NDArray[np.uint64]) -> bytes:
    """Encode ``values`` as a packed run of shortest varints (vectorised)."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    if values.size == 0:
        return b""
    sizes = np.ones(values.shape, dtype=np.int64)
    for k in range(1, _MAX_VARINT_BYTES):
        sizes += values >= np.uint64(1) << np.uint64(7 * k)
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    out = np.zeros(int(sizes.sum()), dtype=np.uint8)
    for k in range(_MAX_VARINT_BYTES):
        present = sizes > k
        if not present.any():
            break
        chunk = (values[present] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (sizes[present] > k + 1).astype(np.uint64) << np.uint64(7)
        out[offsets[present] + k] = (chunk | more).astype(np.uint8)
    return out.tobytes()
