"""The ONNX adapter: tensors read exactly, replaced in place, and nothing else touched."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelseal.errors import UsageError
from modelseal.models import _protowire as wire
from modelseal.models import digits
from modelseal.models.errors import ModelFormatError, UnsupportedTensorError
from modelseal.models.onnx_adapter import ONNXModel

from .conftest import run_onnx

RNG = np.random.default_rng(7)


def _x() -> np.ndarray:
    return digits.load_split().x_test[:32]


def _initializers(data: bytes) -> dict[str, bytes]:
    """Each initializer's serialised TensorProto, by name."""
    model = onnx.load_model_from_string(data)
    return {t.name: t.SerializeToString() for t in model.graph.initializer}


def _changed_span(old: bytes, new: bytes) -> tuple[int, int]:
    assert len(old) == len(new)
    diff = np.flatnonzero(np.frombuffer(old, np.uint8) != np.frombuffer(new, np.uint8))
    return int(diff[0]), int(diff[-1]) + 1


def _typed_gemm_model() -> bytes:
    """A 64->10 Gemm whose weights sit in float_data (typed), not raw_data."""
    weight = RNG.normal(size=(10, 64)).astype(np.float32)
    bias = RNG.normal(size=10).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w", "b"], ["logits"], transB=1)],
        "typed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [
            helper.make_tensor("w", TensorProto.FLOAT, [10, 64], weight.ravel(), raw=False),
            helper.make_tensor("b", TensorProto.FLOAT, [10], bias, raw=False),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


BAG = {
    "f32": np.array([1.5, -0.0, np.inf, 3e-38], dtype=np.float32),
    "f64": np.array([[1e300, -2.5]], dtype=np.float64),
    "f16": np.array([1.5, -2.0, 65504.0], dtype=np.float16),
    "bf16": np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16),
    "f8": np.array([1.5, -2.0], dtype=ml_dtypes.float8_e4m3fn),
    "i8": np.array([-128, -1, 0, 127], dtype=np.int8),
    "u8": np.array([0, 255], dtype=np.uint8),
    "i16": np.array([-32768, 32767], dtype=np.int16),
    "u16": np.array([0, 65535], dtype=np.uint16),
    "i32": np.array([-(2**31), -1, 0, 2**31 - 1], dtype=np.int32),
    "i64": np.array([-(2**63), -1, 0, 2**63 - 1], dtype=np.int64),
    "u32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "bool": np.array([True, False, True]),
    "c64": np.array([1 + 2j, -3.5j], dtype=np.complex64),
    "empty": np.zeros((0, 3), dtype=np.float32),
}


def _bag_model(*, raw: bool) -> bytes:
    """Initializers of every numpy-readable type, typed fields or raw_data."""
    tensors = []
    for name, array in BAG.items():
        if raw:
            tensors.append(numpy_helper.from_array(array, name))
        else:
            data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
            tensors.append(
                helper.make_tensor(name, data_type, array.shape, array.ravel(), raw=False)
            )
    tensors.append(helper.make_tensor("strings", TensorProto.STRING, [2], [b"ab", b"c"]))
    graph = helper.make_graph([], "bag", [], [], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# --- listing and reading -----------------------------------------------------------------


def test_listing_matches_what_onnx_reads(base_onnx: bytes) -> None:
    model = onnx.load_model_from_string(base_onnx)
    listed = ONNXModel(base_onnx).tensors()
    assert [(t.name, t.shape) for t in listed] == [
        (t.name, tuple(t.dims)) for t in model.graph.initializer
    ]
    assert {t.dtype for t in listed} == {"float32"}
    assert {t.storage for t in listed} == {"raw_data"}
    assert [t.nbytes for t in listed] == [64 * 64 * 4, 64 * 4, 10 * 64 * 4, 10 * 4]


@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "typed"])
def test_every_numpy_type_reads_bit_for_bit(raw: bool) -> None:
    model = ONNXModel(_bag_model(raw=raw))
    infos = {t.name: t for t in model.tensors()}
    for name, array in BAG.items():
        got = model.read(name)
        assert got.dtype == array.dtype, name
        assert got.shape == array.shape, name
        assert got.tobytes() == array.tobytes(), name
        assert infos[name].nbytes == array.nbytes, name
        assert (infos[name].storage == "raw_data") == raw or array.size == 0, name
    assert infos["strings"].dtype == "string"
    assert infos["strings"].nbytes == 3


def test_a_string_tensor_is_listed_but_not_read() -> None:
    model = ONNXModel(_bag_model(raw=False))
    with pytest.raises(UnsupportedTensorError, match="string") as info:
        model.read("strings")
    assert info.value.code == "tensor_unsupported"


# --- replacing -------------------------------------------------------------------------------


def test_replacing_tensors_with_themselves_leaves_the_file_byte_identical(
    base_onnx: bytes,
) -> None:
    for data in (base_onnx, _typed_gemm_model(), _bag_model(raw=True), _bag_model(raw=False)):
        model = ONNXModel(data)
        for info in model.tensors():
            if info.dtype != "string":
                model.replace(info.name, model.read(info.name))
        assert model.to_bytes() == data


def test_replacing_a_raw_tensor_changes_only_its_bytes_and_the_output(base_onnx: bytes) -> None:
    model = ONNXModel(base_onnx)
    bias = model.read("fc2.bias")
    model.replace("fc2.bias", bias + np.float32(1.0))
    edited = model.to_bytes()
    start, stop = _changed_span(base_onnx, edited)
    raw_start = base_onnx.find(bias.tobytes())
    assert raw_start <= start < stop <= raw_start + bias.nbytes  # inside fc2.bias's raw_data
    assert edited[raw_start : raw_start + bias.nbytes] == (bias + np.float32(1.0)).tobytes()
    before, after = _initializers(base_onnx), _initializers(edited)
    for name in ("fc1.weight", "fc1.bias", "fc2.weight"):
        assert after[name] == before[name]
    onnx.checker.check_model(onnx.load_model_from_string(edited))
    shift = run_onnx(edited, _x()) - run_onnx(base_onnx, _x())
    np.testing.assert_allclose(shift, 1.0, atol=1e-5)


def test_a_model_edited_with_the_same_weights_gives_identical_outputs(base_onnx: bytes) -> None:
    model = ONNXModel(base_onnx)
    model.replace("fc1.weight", model.read("fc1.weight").copy())
    assert np.array_equal(run_onnx(model.to_bytes(), _x()), run_onnx(base_onnx, _x()))


def test_replacing_a_typed_float_tensor_keeps_it_typed_and_runs(tmp_path: Path) -> None:
    data = _typed_gemm_model()
    model = ONNXModel(data)
    assert model.info("w").storage == "float_data"
    weight = model.read("w")
    doubled = weight * np.float32(2.0)
    model.replace("w", doubled)
    edited = model.to_bytes()
    assert len(edited) == len(data)  # packed floats: the same size, written in place
    assert ONNXModel(edited).info("w").storage == "float_data"
    assert _initializers(edited)["b"] == _initializers(data)["b"]
    x = _x()
    bias = model.read("b")
    expected = x @ doubled.T + bias
    np.testing.assert_allclose(run_onnx(edited, x), expected, rtol=1e-5, atol=1e-5)


def test_replacing_varint_tensors_reencodes_only_them() -> None:
    data = _bag_model(raw=False)
    model = ONNXModel(data)
    new_values = {
        "i8": np.array([5, -6, 7, -8], dtype=np.int8),
        "i64": np.array([1, 2**40, -(2**40), 0], dtype=np.int64),
        "u64": np.array([2**63, 1], dtype=np.uint64),
        "f16": np.array([0.5, 1e-3, -65504.0], dtype=np.float16),
        "bf16": np.array([100.0, -0.25, 0.0], dtype=ml_dtypes.bfloat16),
        "bool": np.array([False, True, False]),
    }
    for name, array in new_values.items():
        model.replace(name, array)
    edited = model.to_bytes()
    onnx.checker.check_model(onnx.load_model_from_string(edited))
    before, after = _initializers(data), _initializers(edited)
    reloaded = {t.name: t for t in onnx.load_model_from_string(edited).graph.initializer}
    for name in BAG:
        if name in new_values:
            assert numpy_helper.to_array(reloaded[name]).tobytes() == new_values[name].tobytes()
            assert ONNXModel(edited).info(name).storage != "raw_data"
        else:
            assert after[name] == before[name], name
    assert after["strings"] == before["strings"]


def test_unpacked_typed_data_is_read_and_repacked_on_replace() -> None:
    # ONNX writers pack repeated numbers, but the wire format also allows one record
    # per value; build such a tensor by hand.
    values = [3, -4, 5]
    tensor = _varint_field(1, 3) + _varint_field(2, TensorProto.INT32)  # dims [3], INT32
    tensor += b"".join(_varint_field(5, value) for value in values)
    data = _wire_model(tensor + wire.len_record(8, b"unpacked"))
    reference = onnx.load_model_from_string(data)
    assert list(reference.graph.initializer[0].int32_data) == values
    model = ONNXModel(data)
    assert model.read("unpacked").tolist() == values
    model.replace("unpacked", np.array([7, 8, -9], dtype=np.int32))
    edited = onnx.load_model_from_string(model.to_bytes())
    assert list(edited.graph.initializer[0].int32_data) == [7, 8, -9]
    assert edited.graph.name == "g"
    assert edited.ir_version == 8


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros(10, dtype=np.float64), "must have dtype float32, got float64"),
        (np.zeros(11, dtype=np.float32), r"must have shape \(10,\), got \(11,\)"),
        (np.zeros((1, 10), dtype=np.float32), "must have shape"),
        ([0.0] * 10, "must have dtype float32"),
    ],
)
def test_a_replacement_of_another_dtype_or_shape_is_refused(
    base_onnx: bytes, array: object, match: str
) -> None:
    model = ONNXModel(base_onnx)
    with pytest.raises(UsageError, match=match) as info:
        model.replace("fc2.bias", array)  # type: ignore[arg-type]
    assert info.value.code == "usage_error"
    assert model.to_bytes() == base_onnx


def test_a_big_endian_replacement_is_stored_little_endian(base_onnx: bytes) -> None:
    model = ONNXModel(base_onnx)
    bias = model.read("fc2.bias") + np.float32(1.0)
    model.replace("fc2.bias", bias.astype(">f4"))
    assert model.read("fc2.bias").tobytes() == bias.astype("<f4").tobytes()


def test_an_unknown_tensor_name_is_refused(base_onnx: bytes) -> None:
    with pytest.raises(UsageError, match=r"no initializer named 'fc3\.weight'") as info:
        ONNXModel(base_onnx).read("fc3.weight")
    assert info.value.code == "usage_error"


# --- external data ---------------------------------------------------------------------------


def test_external_data_is_listed_read_and_replaced_in_its_file(
    base_onnx: bytes, tmp_path: Path
) -> None:
    proto = onnx.load_model_from_string(base_onnx)
    onnx.save_model(
        proto,
        tmp_path / "model.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    onnx_bytes = (tmp_path / "model.onnx").read_bytes()
    weights = (tmp_path / "weights.bin").read_bytes()
    model = ONNXModel(onnx_bytes, {"weights.bin": weights})
    assert {t.storage for t in model.tensors()} == {"external"}
    original = ONNXModel(base_onnx)
    for info in original.tensors():
        assert model.read(info.name).tobytes() == original.read(info.name).tobytes()

    model.replace("fc2.bias", original.read("fc2.bias") + np.float32(1.0))
    assert model.to_bytes() == onnx_bytes  # the .onnx file does not change at all
    new_weights = model.external_files()["weights.bin"]
    start, stop = _changed_span(weights, new_weights)
    assert stop - start <= 40
    (tmp_path / "weights.bin").write_bytes(new_weights)
    shift = run_onnx(str(tmp_path / "model.onnx"), _x()) - run_onnx(base_onnx, _x())
    np.testing.assert_allclose(shift, 1.0, atol=1e-5)


def test_external_data_that_was_not_supplied_is_reported(base_onnx: bytes, tmp_path: Path) -> None:
    onnx.save_model(
        onnx.load_model_from_string(base_onnx),
        tmp_path / "m.onnx",
        save_as_external_data=True,
        location="w.bin",
        size_threshold=0,
    )
    model = ONNXModel((tmp_path / "m.onnx").read_bytes())
    names = [t.name for t in model.tensors()]
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    with pytest.raises(UsageError, match=r"external data file 'w\.bin' was not supplied") as info:
        model.read("fc1.bias")
    assert info.value.code == "usage_error"
    short = ONNXModel((tmp_path / "m.onnx").read_bytes(), {"w.bin": b"\x00" * 10})
    with pytest.raises(ModelFormatError, match="runs past the end") as bad:
        short.read("fc2.bias")
    assert bad.value.code == "model_invalid"


# --- malformed models ------------------------------------------------------------------------


def _wire_model(*tensors: bytes) -> bytes:
    """A ModelProto written field by field, with the given TensorProto encodings."""
    graph = b"".join(wire.len_record(5, t) for t in tensors) + wire.len_record(2, b"g")
    return wire.encode_varint(1 << 3) + wire.encode_varint(8) + wire.len_record(7, graph)


def _varint_field(number: int, value: int) -> bytes:
    return wire.encode_varint(number << 3) + wire.encode_varint(value % (1 << 64))


def _tensor_model(tensor: TensorProto, *more: TensorProto) -> bytes:
    graph = helper.make_graph([], "g", [], [], [tensor, *more])
    return helper.make_model(graph).SerializeToString()


def _raw(name: str, data_type: int, dims: list[int], raw: bytes) -> TensorProto:
    tensor = TensorProto(name=name, data_type=data_type, dims=dims)
    tensor.raw_data = raw
    return tensor


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "exactly one graph, found 0"),
        (b"\x0a", "truncated"),
        (b"\xff" * 11, "longer than 10 bytes"),
        (b"\x3b\x00", "wire type 3"),
        (wire.len_record(7, b"\x2a\x05abc"), "runs past its message"),
        (_tensor_model(_raw("w", TensorProto.FLOAT, [3], b"\x00" * 11)), "raw_data is 11 bytes"),
        (_tensor_model(_raw("w", 99, [1], b"\x00")), "unknown element type 99"),
        (_tensor_model(_raw("", TensorProto.FLOAT, [1], b"\x00" * 4)), "has no name"),
        (
            _tensor_model(
                _raw("w", TensorProto.FLOAT, [1], b"\x00" * 4),
                _raw("w", TensorProto.FLOAT, [1], b"\x00" * 4),
            ),
            "'w' is a duplicate",
        ),
        (
            _wire_model(
                _varint_field(1, 3)
                + _varint_field(2, TensorProto.FLOAT)
                + wire.len_record(4, b"\x00" * 8)  # two packed floats for three elements
                + wire.len_record(8, b"w")
            ),
            "holds 2 values in float_data; shape",
        ),
        (
            _wire_model(
                _varint_field(1, 2)
                + _varint_field(2, TensorProto.INT64)
                + wire.len_record(5, b"\x01\x02")  # int32_data where int64_data belongs
                + wire.len_record(8, b"w")
            ),
            "stores data in int32_data, not int64_data",
        ),
        (
            _wire_model(
                _varint_field(2, TensorProto.FLOAT)
                + wire.len_record(8, b"w")
                + wire.len_record(8, b"v")
            ),
            "repeated name",
        ),
        (
            _wire_model(_varint_field(1, -1) + _varint_field(2, 1) + wire.len_record(8, b"w")),
            "negative dimension",
        ),
        (
            _wire_model(
                _varint_field(2, TensorProto.FLOAT)
                + wire.len_record(8, b"w")
                + wire.len_record(9, b"")
                + wire.len_record(4, b"")
            ),
            "more than one field",
        ),
    ],
)
def test_a_malformed_model_is_rejected(data: bytes, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match) as info:
        ONNXModel(data)
    assert info.value.code == "model_invalid"


def test_an_out_of_range_typed_value_is_rejected_on_read() -> None:
    tensor = helper.make_tensor("w", TensorProto.INT8, [1], [0], raw=False)
    tensor.int32_data[0] = 300  # protobuf allows it; an int8 cannot hold it
    model = ONNXModel(_tensor_model(tensor))
    with pytest.raises(ModelFormatError, match=r"outside -128\.\.127") as info:
        model.read("w")
    assert info.value.code == "model_invalid"


def test_a_segmented_tensor_is_refused_as_unsupported() -> None:
    tensor = _raw("w", TensorProto.FLOAT, [1], b"\x00" * 4)
    tensor.segment.begin = 0
    tensor.segment.end = 1
    with pytest.raises(UnsupportedTensorError, match="segmented") as info:
        ONNXModel(_tensor_model(tensor))
    assert info.value.code == "tensor_unsupported"


# --- the wire helpers ------------------------------------------------------------------------

EDGE_VALUES = [0, 1, 127, 128, 300, 2**31 - 1, 2**32, 2**35 - 1, 2**63, 2**64 - 1]


def test_vectorised_varints_match_the_scalar_encoding() -> None:
    values = np.array(EDGE_VALUES, dtype=np.uint64)
    packed = wire.encode_varints(values)
    assert packed == b"".join(wire.encode_varint(v) for v in EDGE_VALUES)
    assert wire.decode_varints(packed).tolist() == EDGE_VALUES
    position, decoded = 0, []
    while position < len(packed):
        value, position = wire.read_varint(packed, position, len(packed))
        decoded.append(value)
    assert decoded == EDGE_VALUES


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x80", "end inside a varint"),
        (b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\xff" * 9 + b"\x02", "exceeds 64 bits"),
    ],
)
def test_malformed_packed_varints_are_rejected(data: bytes, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match) as info:
        wire.decode_varints(data)
    assert info.value.code == "model_invalid"
