"""List, read and replace the tensors of a safetensors file, changing nothing else.

A safetensors file is ``u64le(N) || header (N bytes of JSON) || buffer``; the header
maps each tensor name to its dtype, shape and ``[begin, end)`` in the buffer. A
replacement has the tensor's exact dtype and shape, so it is written over the old
bytes in place: the header (``__metadata__`` included, padding and all) and every
other tensor's bytes stay as they were.

Parsing follows the format's rules strictly: a header of at most 100 000 000 bytes
starting with ``{``, valid I-JSON without duplicate names, known dtypes, offsets that
match each tensor's size and tile the buffer with no gap, overlap or trailing bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

from modelseal._ijson import decode_object, json_type
from modelseal.errors import UsageError
from modelseal.models.errors import ModelFormatError
from modelseal.models.tensors import TensorInfo, by_safetensors, checked_replacement, numpy_dtype

__all__ = ["MAX_HEADER_BYTES", "SafetensorsFile", "TensorLocation", "parse_header"]

MAX_HEADER_BYTES = 100_000_000
_METADATA_KEY = "__metadata__"
_TENSOR_MEMBERS = frozenset({"dtype", "shape", "data_offsets"})


@dataclass(frozen=True, slots=True)
class TensorLocation:
    """Where one tensor's bytes lie in a safetensors file.

    Attributes:
        info: The tensor's name, dtype and shape.
        begin: Offset of its first byte from the start of the file.
        end: Offset just past its last byte.
    """

    info: TensorInfo
    begin: int
    end: int


_Entry = TensorLocation


def _fail(message: str) -> ModelFormatError:
    return ModelFormatError(f"safetensors: {message}")


class SafetensorsFile:
    """A safetensors file open for tensor edits.

    Args:
        data: The whole file.

    Raises:
        ModelFormatError: The file breaks a rule of the format.
    """

    def __init__(self, data: Buffer) -> None:
        self._buf = bytearray(data)
        self._metadata, self._entries = _parse(self._buf)

    @property
    def metadata(self) -> Mapping[str, str] | None:
        """The ``__metadata__`` map, or ``None`` when the header has none."""
        return self._metadata

    def tensors(self) -> tuple[TensorInfo, ...]:
        """Every tensor, in buffer order."""
        return tuple(entry.info for entry in self._entries.values())

    def info(self, name: str) -> TensorInfo:
        """The description of tensor ``name``.

        Raises:
            UsageError: No tensor has that name.
        """
        return self._locate(name).info

    def read(self, name: str) -> npt.NDArray[np.generic]:
        """A copy of tensor ``name`` as a numpy array of its own dtype and shape.

        Raises:
            UsageError: No tensor has that name.
            UnsupportedTensorError: The dtype has no numpy equivalent here (4- and 6-bit).
        """
        entry = self._locate(name)
        dtype = numpy_dtype(entry.info)
        view = memoryview(self._buf)[entry.begin : entry.end]
        return np.frombuffer(view, dtype=dtype).reshape(entry.info.shape).copy()

    def replace(self, name: str, array: npt.ArrayLike) -> None:
        """Overwrite tensor ``name`` in place with ``array`` (exactly its dtype and shape).

        Raises:
            UsageError: Unknown name, or ``array`` has another dtype or shape.
            UnsupportedTensorError: The dtype has no numpy equivalent here.
        """
        entry = self._locate(name)
        self._buf[entry.begin : entry.end] = checked_replacement(entry.info, array)

    def to_bytes(self) -> bytes:
        """The file as it now stands."""
        return bytes(self._buf)

    def _locate(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise UsageError(f"safetensors file has no tensor named {name!r}")
        return entry


def _parse(buf: bytearray) -> tuple[Mapping[str, str] | None, dict[str, _Entry]]:
    return parse_header(lambda start, stop: bytes(buf[start:stop]), len(buf))


def parse_header(
    read_range: Callable[[int, int], bytes], length: int
) -> tuple[Mapping[str, str] | None, dict[str, TensorLocation]]:
    """Parse and check a safetensors header read through a random-access function.

    Reads only the 8-byte length and the header; checks every rule that the header
    and the file's ``length`` decide (the tensors tile the buffer exactly).

    Args:
        read_range: Returns the file's bytes ``[start, stop)``.
        length: The file's total length.

    Returns:
        The ``__metadata__`` map (or None) and every tensor's location, by name, in
        buffer order.

    Raises:
        ModelFormatError: The header breaks a rule of the format.
    """
    if length < 8:
        raise _fail(f"file is {length} bytes; the header length alone needs 8")
    (header_len,) = struct.unpack_from("<Q", read_range(0, 8), 0)
    if header_len > MAX_HEADER_BYTES:
        raise _fail(
            f"header length at offset 0 must be at most {MAX_HEADER_BYTES}, got {header_len}"
        )
    data_start = 8 + header_len
    if data_start > length:
        raise _fail(f"file truncated at offset {length}: the header ends at {data_start}")
    raw_header = read_range(8, data_start)
    if header_len == 0 or raw_header[0] != ord("{"):
        raise _fail("header at offset 8 must start with '{'")
    header = decode_object(raw_header, what="header", base_offset=8, error=_fail)
    metadata: Mapping[str, str] | None = None
    raw_meta = header.pop(_METADATA_KEY, None)
    if raw_meta is not None:
        if not isinstance(raw_meta, dict) or not all(isinstance(v, str) for v in raw_meta.values()):
            raise _fail(f"{_METADATA_KEY} must map strings to strings")
        metadata = MappingProxyType(dict(raw_meta))
    buffer_len = length - data_start
    entries = [_parse_entry(name, obj, data_start, buffer_len) for name, obj in header.items()]
    entries.sort(key=lambda e: (e.begin, e.end))
    position = data_start
    for entry in entries:
        if entry.begin != position:
            problem = "overlaps the tensor before it" if entry.begin < position else "leaves a gap"
            raise _fail(
                f"tensor {entry.info.name!r} at buffer offset {entry.begin - data_start} {problem}"
            )
        position = entry.end
    if position != length:
        raise _fail(f"{length - position} bytes after the last tensor are not covered")
    return metadata, {entry.info.name: entry for entry in entries}


def _parse_entry(name: str, obj: object, data_start: int, buffer_len: int) -> _Entry:
    where = f"tensor {name!r}"
    if not name:
        raise _fail("a tensor name is empty")
    if not isinstance(obj, dict):
        raise _fail(f"{where} must be an object, got {json_type(obj)}")
    if obj.keys() != _TENSOR_MEMBERS:
        raise _fail(f"{where} must have exactly the members {sorted(_TENSOR_MEMBERS)}")
    dtype_name = obj["dtype"]
    dtype = by_safetensors(dtype_name) if isinstance(dtype_name, str) else None
    if dtype is None or dtype.bits is None:
        raise _fail(f"{where} has unknown dtype {dtype_name!r}")
    shape = obj["shape"]
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _fail(f"{where} shape must be an array of non-negative integers")
    offsets = obj["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise _fail(f"{where} data_offsets must be two integers")
    begin, end = offsets
    if not 0 <= begin <= end <= buffer_len:
        raise _fail(
            f"{where} data_offsets [{begin}, {end}] are outside the {buffer_len}-byte buffer"
        )
    numel = 1
    for dim in shape:
        numel *= dim
    if numel * dtype.bits % 8:
        raise _fail(f"{where} of {numel} {dtype.name} elements does not fill whole bytes")
    nbytes = numel * dtype.bits // 8
    if end - begin != nbytes:
        raise _fail(f"{where} spans {end - begin} bytes; {dtype.name}{shape} needs {nbytes}")
    info = TensorInfo(name, dtype.name, tuple(shape), nbytes, "buffer")
    return _Entry(info, data_start + begin, data_start + end)
