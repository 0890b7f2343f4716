"""The safetensors adapter: exact reads, in-place replacement, strict parsing."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from modelseal.errors import UsageError
from modelseal.models import digits, reference
from modelseal.models.errors import ModelFormatError, UnsupportedTensorError
from modelseal.models.mlp import MLPParams
from modelseal.models.safetensors_adapter import SafetensorsFile

METADATA = {"format": "np", "model": "digits", "note": "kept byte for byte"}


def _weights() -> dict[str, np.ndarray]:
    tensors = {name: np.array(t) for name, t in reference.base_model().tensors().items()}
    tensors["steps"] = np.array([1, -(2**63), 2**63 - 1], dtype=np.int64)
    tensors["scalar"] = np.array(0.25, dtype=np.float64)
    tensors["nothing"] = np.zeros((0, 5), dtype=np.float16)
    return tensors


def _file() -> bytes:
    return safetensors.numpy.save(_weights(), metadata=METADATA)


def _bf16_file() -> bytes:
    # safetensors.numpy cannot load bfloat16, so this file is kept apart from the others.
    half = np.array([[1.5, -2.0]], dtype=ml_dtypes.bfloat16)
    return safetensors.numpy.save({"half": half, "other": np.ones(3, np.float32)})


def _logits(params: dict[str, np.ndarray]) -> np.ndarray:
    names = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
    mlp = MLPParams(*(params[name] for name in names))
    return mlp.logits(digits.load_split().x_test[:32])


def _header(data: bytes) -> dict[str, object]:
    (length,) = struct.unpack_from("<Q", data, 0)
    return json.loads(data[8 : 8 + length])


def _with_header(data: bytes, header: dict[str, object] | bytes) -> bytes:
    """Swap in another header; the buffer after the old one is kept."""
    (length,) = struct.unpack_from("<Q", data, 0)
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + length :]


def _assert_invalid(data: bytes, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match) as info:
        SafetensorsFile(data)
    assert info.value.code == "model_invalid"


def test_listing_and_reads_match_the_safetensors_library() -> None:
    data = _file()
    model = SafetensorsFile(data)
    assert model.metadata == METADATA
    loaded = safetensors.numpy.load(data)
    originals = _weights()
    for info in model.tensors():
        got = model.read(info.name)
        assert got.dtype == originals[info.name].dtype, info.name
        assert got.shape == originals[info.name].shape == info.shape
        assert got.tobytes() == originals[info.name].tobytes(), info.name
        assert info.nbytes == originals[info.name].nbytes
        assert got.tobytes() == loaded[info.name].tobytes()
    assert {t.name for t in model.tensors()} == set(originals)


def test_replacing_tensors_with_themselves_leaves_the_file_byte_identical() -> None:
    data = _file()
    model = SafetensorsFile(data)
    for info in model.tensors():
        model.replace(info.name, model.read(info.name))
    assert model.to_bytes() == data


def test_a_model_rebuilt_from_an_unchanged_file_gives_identical_outputs() -> None:
    model = SafetensorsFile(_file())
    model.replace("fc1.weight", model.read("fc1.weight"))
    loaded = safetensors.numpy.load(model.to_bytes())
    assert np.array_equal(_logits(loaded), _logits(_weights()))


def test_replacing_a_tensor_changes_only_its_bytes_and_the_output_as_expected() -> None:
    data = _file()
    model = SafetensorsFile(data)
    bias = model.read("fc2.bias")
    model.replace("fc2.bias", bias + np.float32(1.0))
    edited = model.to_bytes()
    assert len(edited) == len(data)
    (header_len,) = struct.unpack_from("<Q", data, 0)
    assert edited[: 8 + header_len] == data[: 8 + header_len]  # header and metadata untouched
    begin, end = _header(data)["fc2.bias"]["data_offsets"]  # type: ignore[index]
    start, stop = 8 + header_len + begin, 8 + header_len + end
    assert edited[:start] == data[:start]
    assert edited[stop:] == data[stop:]
    assert edited[start:stop] == (bias + np.float32(1.0)).tobytes()
    loaded = safetensors.numpy.load(edited)
    shift = _logits(loaded) - _logits(_weights())
    np.testing.assert_allclose(shift, 1.0, atol=1e-5)


def test_bfloat16_tensors_are_read_and_replaced() -> None:
    data = _bf16_file()
    model = SafetensorsFile(data)
    assert model.info("half").dtype == "bfloat16"
    assert model.read("half").tobytes() == np.array([[1.5, -2.0]], ml_dtypes.bfloat16).tobytes()
    new = np.array([[3.0, -0.5]], dtype=ml_dtypes.bfloat16)
    model.replace("half", new)
    assert model.read("half").tobytes() == new.tobytes()
    assert model.read("other").tobytes() == np.ones(3, np.float32).tobytes()
    assert len(model.to_bytes()) == len(data)


@pytest.mark.parametrize(
    ("name", "array", "match"),
    [
        ("fc2.bias", np.zeros(10, dtype=np.float64), "must have dtype float32, got float64"),
        ("fc2.bias", np.zeros((2, 5), dtype=np.float32), "must have shape"),
        ("steps", np.zeros(3, dtype=np.int32), "must have dtype int64"),
        ("fc3.bias", np.zeros(10, dtype=np.float32), "no tensor named 'fc3.bias'"),
    ],
)
def test_a_replacement_that_does_not_fit_is_refused(
    name: str, array: np.ndarray, match: str
) -> None:
    data = _file()
    model = SafetensorsFile(data)
    with pytest.raises(UsageError, match=match) as info:
        model.replace(name, array)
    assert info.value.code == "usage_error"
    assert model.to_bytes() == data


def test_a_four_bit_tensor_is_listed_but_not_read() -> None:
    header = {"q": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}
    model = SafetensorsFile(_with_header(struct.pack("<Q", 0), header) + b"\x12\x34")
    assert model.info("q").nbytes == 2
    with pytest.raises(UnsupportedTensorError, match="float4_e2m1fn") as info:
        model.read("q")
    assert info.value.code == "tensor_unsupported"


def _tensor(dtype: str, shape: list[int], offsets: list[int]) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


def _case(header: dict[str, object], buffer: bytes = b"\x00" * 8) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + buffer


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x01\x00", "needs 8"),
        (struct.pack("<Q", 100_000_001) + b"{}", "must be at most 100000000"),
        (struct.pack("<Q", 50) + b"{}", "truncated at offset 10"),
        (struct.pack("<Q", 4) + b"[12]", "must start with '{'"),
        (struct.pack("<Q", 0), "must start with '{'"),
        (_with_header(b"\x00" * 8, b'{"a":{},"a":{}}'), "duplicate member 'a'"),
        (_with_header(b"\x00" * 8, b'{"a":'), "header is not JSON"),
        (_case({"a": _tensor("F32", [2], [0, 8]), "__metadata__": {"k": 1}}), "strings to"),
        (_case({"a": _tensor("F31", [2], [0, 8])}), "unknown dtype 'F31'"),
        (_case({"a": _tensor("F32", [-2], [0, 8])}), "non-negative integers"),
        (_case({"a": _tensor("F32", [3], [0, 8])}), "spans 8 bytes; float32"),
        (_case({"a": _tensor("F32", [2], [0, 9])}), "outside the 8-byte buffer"),
        (_case({"a": _tensor("F32", [1], [4, 8])}), "leaves a gap"),
        (_case({"a": _tensor("F32", [1], [0, 4])}), "4 bytes after the last tensor"),
        (
            _case({"a": _tensor("F32", [2], [0, 8]), "b": _tensor("F32", [1], [4, 8])}),
            "overlaps the tensor before it",
        ),
        (_case({"a": {**_tensor("F32", [2], [0, 8]), "x": 1}}), "exactly the members"),
        (_case({"a": _tensor("F32", [2], [0.0, 8])}), "two integers"),
        (_case({"": _tensor("F32", [2], [0, 8])}), "name is empty"),
        (_case({"a": _tensor("F6_E2M3", [3], [0, 8])}), "does not fill whole bytes"),
    ],
)
def test_a_malformed_file_is_rejected(data: bytes, match: str) -> None:
    _assert_invalid(data, match)


def test_the_safetensors_library_also_rejects_a_gap_we_reject() -> None:
    # Cross-check one rule against the reference implementation.
    data = _case({"a": _tensor("F32", [1], [4, 8])})
    _assert_invalid(data, "gap")
    with pytest.raises(Exception, match=r"(?i)incomplete|invalid|offset"):
        safetensors.numpy.load(data)
