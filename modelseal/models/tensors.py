"""Element types and tensor descriptions shared by the model adapters.

Dtype names are lowercase and follow numpy and ml_dtypes spelling (``float32``,
``bfloat16``, ``float8_e4m3fn``). Each maps to at most one ONNX element type and at
most one safetensors dtype string. Data is always little-endian, as both file formats
store it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

import ml_dtypes
import numpy as np
import numpy.typing as npt

from modelseal.errors import UsageError
from modelseal.models.errors import UnsupportedTensorError

__all__ = [
    "DTYPES",
    "DType",
    "TensorInfo",
    "TensorStore",
    "by_onnx",
    "by_safetensors",
    "checked_replacement",
]


@dataclass(frozen=True, slots=True)
class DType:
    """One element type.

    Attributes:
        name: The canonical name, such as ``"float32"``.
        bits: Bits per element; ``None`` for strings, which have no fixed size.
        numpy: The little-endian numpy dtype, or ``None`` when numpy cannot hold it
            element by element (strings, packed 4- and 6-bit types).
        onnx: The ONNX ``TensorProto.DataType`` number, if ONNX has the type.
        safetensors: The safetensors dtype string, if safetensors has the type.
    """

    name: str
    bits: int | None
    numpy: np.dtype[np.generic] | None
    onnx: int | None
    safetensors: str | None

    def nbytes(self, numel: int) -> int | None:
        """Bytes that ``numel`` elements take packed, rounded up to whole bytes."""
        if self.bits is None:
            return None
        return (numel * self.bits + 7) // 8


def _np(spec: object) -> np.dtype[np.generic]:
    return np.dtype(spec).newbyteorder("<")  # type: ignore[call-overload, no-any-return]


_TABLE = (
    DType("bool", 8, _np(np.bool_), 9, "BOOL"),
    DType("uint8", 8, _np(np.uint8), 2, "U8"),
    DType("int8", 8, _np(np.int8), 3, "I8"),
    DType("uint16", 16, _np(np.uint16), 4, "U16"),
    DType("int16", 16, _np(np.int16), 5, "I16"),
    DType("uint32", 32, _np(np.uint32), 12, "U32"),
    DType("int32", 32, _np(np.int32), 6, "I32"),
    DType("uint64", 64, _np(np.uint64), 13, "U64"),
    DType("int64", 64, _np(np.int64), 7, "I64"),
    DType("float16", 16, _np(np.float16), 10, "F16"),
    DType("bfloat16", 16, _np(ml_dtypes.bfloat16), 16, "BF16"),
    DType("float32", 32, _np(np.float32), 1, "F32"),
    DType("float64", 64, _np(np.float64), 11, "F64"),
    DType("complex64", 64, _np(np.complex64), 14, "C64"),
    DType("complex128", 128, _np(np.complex128), 15, None),
    DType("float8_e4m3fn", 8, _np(ml_dtypes.float8_e4m3fn), 17, "F8_E4M3"),
    DType("float8_e4m3fnuz", 8, _np(ml_dtypes.float8_e4m3fnuz), 18, None),
    DType("float8_e5m2", 8, _np(ml_dtypes.float8_e5m2), 19, "F8_E5M2"),
    DType("float8_e5m2fnuz", 8, _np(ml_dtypes.float8_e5m2fnuz), 20, None),
    DType("float8_e8m0fnu", 8, _np(ml_dtypes.float8_e8m0fnu), 24, "F8_E8M0"),
    DType("uint4", 4, None, 21, None),
    DType("int4", 4, None, 22, None),
    DType("float4_e2m1fn", 4, None, 23, "F4"),
    DType("uint2", 2, None, 25, None),
    DType("int2", 2, None, 26, None),
    DType("float6_e2m3fn", 6, None, 27, "F6_E2M3"),
    DType("float6_e3m2fn", 6, None, 28, "F6_E3M2"),
    DType("string", None, None, 8, None),
)

DTYPES: Mapping[str, DType] = MappingProxyType({d.name: d for d in _TABLE})
"""Every known element type, by canonical name."""

_BY_ONNX = {d.onnx: d for d in _TABLE if d.onnx is not None}
_BY_SAFETENSORS = {d.safetensors: d for d in _TABLE if d.safetensors is not None}


def by_onnx(number: int) -> DType | None:
    """The dtype of an ONNX element type number, or ``None`` if unknown."""
    return _BY_ONNX.get(number)


def by_safetensors(name: str) -> DType | None:
    """The dtype of a safetensors dtype string, or ``None`` if unknown."""
    return _BY_SAFETENSORS.get(name)


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """What a model file says about one stored tensor.

    Attributes:
        name: The tensor's name (ONNX initializer name, safetensors key).
        dtype: The canonical dtype name (see :data:`DTYPES`).
        shape: The dimensions, outermost first.
        nbytes: Bytes of the tensor's data (for strings, the sum of their lengths).
        storage: Where the data lives: for ONNX ``raw_data``, ``external`` or the typed
            field (``float_data``, ``int32_data``, ``int64_data``, ``double_data``,
            ``uint64_data``, ``string_data``); for safetensors ``buffer``.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    storage: str


class TensorStore(Protocol):
    """A model file whose stored tensors can be listed, read and replaced in place."""

    def tensors(self) -> tuple[TensorInfo, ...]:
        """Every stored tensor, in file order."""
        ...

    def read(self, name: str) -> npt.NDArray[np.generic]:
        """A copy of tensor ``name`` as a numpy array."""
        ...

    def replace(self, name: str, array: npt.ArrayLike) -> None:
        """Overwrite tensor ``name`` with ``array`` (same dtype and shape)."""
        ...

    def to_bytes(self) -> bytes:
        """The file as it now stands."""
        ...


def numpy_dtype(info: TensorInfo) -> np.dtype[np.generic]:
    """The little-endian numpy dtype of ``info``.

    Raises:
        UnsupportedTensorError: numpy cannot hold the element type.
    """
    dtype = DTYPES[info.dtype].numpy
    if dtype is None:
        raise UnsupportedTensorError(
            f"tensor {info.name!r} has element type {info.dtype}, which is not read as numpy here"
        )
    return dtype


def checked_replacement(info: TensorInfo, array: npt.ArrayLike) -> bytes:
    """The little-endian bytes of ``array`` if it may replace the tensor ``info``.

    The replacement must have exactly the tensor's dtype and shape: nothing is cast
    or broadcast, so a replacement can never change a tensor's meaning by accident.

    Raises:
        UnsupportedTensorError: numpy cannot hold the tensor's element type.
        UsageError: ``array`` has another dtype or shape.
    """
    expected = numpy_dtype(info)
    value = np.asarray(array)
    # Compare without byte order: a big-endian float32 array is still a float32 tensor.
    if value.dtype.newbyteorder("<") != expected:
        raise UsageError(
            f"replacement for {info.name!r} must have dtype {info.dtype}, got {value.dtype}"
        )
    if value.shape != info.shape:
        raise UsageError(
            f"replacement for {info.name!r} must have shape {info.shape}, got {value.shape}"
        )
    return np.ascontiguousarray(value, dtype=expected).tobytes()
