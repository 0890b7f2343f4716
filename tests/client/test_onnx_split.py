"""Handing large in-memory weights to ONNX Runtime as external initializers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime  # type: ignore[import-untyped]
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelseal.client.errors import ModelUnsupportedError
from modelseal.client.memory import WipeableBytes, wipe
from modelseal.client.onnx_split import MIN_SPLIT_BYTES, split_initializers
from modelseal.client.runtime import session_from_plaintext

RNG = np.random.default_rng(3)
W1 = RNG.standard_normal((64, 32)).astype(np.float32)  # 8 KiB: split
B1 = RNG.standard_normal(32).astype(np.float32)  # 128 B: stays inline
W2 = RNG.standard_normal((32, 48)).astype(np.float16)  # 3 KiB: split
SCALE = np.full((1, 48), 0.5, dtype=np.float32)  # stored as float_data: stays inline
IDS = np.arange(600, dtype=np.int64)  # 4.8 KiB of int64: split


def model_bytes() -> bytes:
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [1, 48], SCALE.ravel().tolist())
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "W1", "B1"], ["h"]),
            helper.make_node("Cast", ["h"], ["h16"], to=TensorProto.FLOAT16),
            helper.make_node("MatMul", ["h16", "W2"], ["o16"]),
            helper.make_node("Cast", ["o16"], ["o"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["o", "scale"], ["logits"]),
            helper.make_node("ReduceSum", ["ids"], ["id_sum"], keepdims=0),
        ],
        "split-test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 48]),
            helper.make_tensor_value_info("id_sum", TensorProto.INT64, []),
        ],
        initializer=[
            numpy_helper.from_array(W1, "W1"),
            numpy_helper.from_array(B1, "B1"),
            numpy_helper.from_array(W2, "W2"),
            scale,
            numpy_helper.from_array(IDS, "ids"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


X = RNG.standard_normal((3, 64)).astype(np.float32)


def reference_outputs(model: bytes) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return list(session.run(["logits", "id_sum"], {"input": X}))


def test_large_raw_initializers_are_located_in_place_and_the_rest_stays_inline() -> None:
    model = model_bytes()
    split = split_initializers(memoryview(model))
    assert split is not None
    by_name = {item.name: item for item in split.initializers}
    assert sorted(by_name) == ["W1", "W2", "ids"]
    for name, array in (("W1", W1), ("W2", W2), ("ids", IDS)):
        item = by_name[name]
        assert item.dims == array.shape
        assert model[item.offset : item.offset + item.length] == array.tobytes()
    assert len(split.graph) < len(model) - W1.nbytes - W2.nbytes - IDS.nbytes + 1024
    graph = onnx.load_from_string(bytes(split.graph))
    kinds = {t.name: t.data_location for t in graph.graph.initializer}
    assert kinds == {
        "W1": TensorProto.EXTERNAL,
        "B1": TensorProto.DEFAULT,
        "W2": TensorProto.EXTERNAL,
        "scale": TensorProto.DEFAULT,
        "ids": TensorProto.EXTERNAL,
    }
    assert all(not t.raw_data for t in graph.graph.initializer if t.name in by_name)


def test_a_session_from_the_split_model_computes_what_the_whole_model_does() -> None:
    model = model_bytes()
    expected = reference_outputs(model)
    with WipeableBytes(len(model)) as plaintext:
        plaintext.view[:] = model
        session, _ = session_from_plaintext(plaintext.view, "application/onnx", split_min_bytes=0)
        wipe(plaintext.view)
        # Wiped before the first run: ONNX Runtime copied the weights while it loaded.
        got = session.run(["logits", "id_sum"], {"input": X})
    np.testing.assert_array_equal(got[0], expected[0])
    assert got[1] == expected[1] == IDS.sum()


def test_models_without_large_raw_initializers_are_not_split() -> None:
    small = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=[numpy_helper.from_array(np.ones(4, np.float32), "c")],
    )
    model = helper.make_model(small, opset_imports=[helper.make_opsetid("", 17)])
    assert MIN_SPLIT_BYTES > 16
    assert split_initializers(memoryview(model.SerializeToString())) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x0b\x0c",  # a protobuf group (wire type 3)
        b"\x3a\xff\xff\xff\xff\x0f",  # a graph whose length runs past the end
        b"\x3a\x00\x3a\x00",  # two graphs
        b"\x80" * 11,  # a varint longer than 10 bytes
    ],
)
def test_bytes_the_walker_cannot_follow_are_left_to_onnx_runtime(data: bytes) -> None:
    assert split_initializers(memoryview(data)) is None
    with WipeableBytes(len(data) + 2) as plaintext:
        plaintext.view[:] = data + b"\x00\x00"
        with pytest.raises(ModelUnsupportedError, match="ONNX Runtime could not load") as caught:
            session_from_plaintext(plaintext.view, "application/onnx", split_min_bytes=0)
    assert caught.value.code == "model_unsupported"
