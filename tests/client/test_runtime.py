"""Loading at-rest models into ONNX Runtime from memory; wipeable plaintext buffers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelseal.client.errors import InputError, ModelUnsupportedError
from modelseal.client.memory import PAGE_BYTES, WipeableBytes, release_pages, wipe
from modelseal.client.runtime import load_at_rest, session_from_plaintext
from modelseal.envelope import AtRest, Claims, seal_bytes
from modelseal.errors import DEKUnwrapError, LicenceExpiredError
from modelseal.keys import KEK
from modelseal.models.bundle import BUNDLE_MEDIA_TYPE, ManifestFields, ModelFormat, build_bundle
from modelseal.models.errors import BundleError

NOW = 1_800_000_000
LEXP = NOW + 86400
WEIGHTS = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
BIAS = np.array([0.5, -0.5, 0.0], dtype=np.float32)


def gemm_model(name: str = "tiny", inputs: int = 1) -> bytes:
    """``logits = input @ W + b`` (a second input, if any, is added to the result)."""
    nodes = [helper.make_node("Gemm", ["input", "W", "b"], ["gemm"])]
    graph_inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])]
    if inputs == 2:
        graph_inputs.append(helper.make_tensor_value_info("offset", TensorProto.FLOAT, ["N", 3]))
        nodes.append(helper.make_node("Add", ["gemm", "offset"], ["logits"]))
    else:
        nodes.append(helper.make_node("Identity", ["gemm"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        name,
        graph_inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(WEIGHTS, "W"), numpy_helper.from_array(BIAS, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def bundle_of(model: bytes, fmt: ModelFormat = ModelFormat.ONNX) -> bytearray:
    fields = ManifestFields(model_id="tiny", version="1", format=fmt)
    return build_bundle(fields, [("model.onnx", model)])


def claims(lexp: int | None = LEXP) -> Claims:
    return Claims(
        iss="test", sub="u", aud="d", mid="tiny", jti="j1", iat=NOW - 10, exp=NOW + 900, lexp=lexp
    )


def at_rest(tmp_path: Path, plaintext: bytes | bytearray, ctype: str, kek: KEK) -> Path:
    path = tmp_path / "tiny.mseal"
    path.write_bytes(seal_bytes(plaintext, AtRest(kek, claims=claims()), ctype=ctype))
    return path


@pytest.fixture
def kek() -> KEK:
    return KEK.generate("models")


X = np.array([[1, 0, 0, 0], [0, 1, 0, 2]], dtype=np.float32)
EXPECTED = X @ WEIGHTS + BIAS


def test_a_bare_onnx_model_loads_from_memory_and_runs(tmp_path: Path, kek: KEK) -> None:
    loaded = load_at_rest(at_rest(tmp_path, gemm_model(), "application/onnx", kek), kek, now=NOW)
    assert loaded.manifest is None
    assert loaded.header.claims == claims()
    assert [i.name for i in loaded.inputs] == ["input"]
    assert loaded.outputs[0].shape == ("N", 3)
    np.testing.assert_allclose(loaded.run(X)["logits"], EXPECTED, rtol=1e-6)


def test_a_bundle_loads_its_onnx_entry_and_keeps_its_manifest(tmp_path: Path, kek: KEK) -> None:
    path = at_rest(tmp_path, bundle_of(gemm_model()), BUNDLE_MEDIA_TYPE, kek)
    loaded = load_at_rest(path, kek, now=NOW)
    assert loaded.manifest is not None
    assert loaded.manifest.entry.name == "model.onnx"
    np.testing.assert_allclose(loaded.run({"input": X.tolist()})["logits"], EXPECTED, rtol=1e-6)


def test_the_licence_is_judged_on_every_load(tmp_path: Path, kek: KEK) -> None:
    path = at_rest(tmp_path, gemm_model(), "application/onnx", kek)
    load_at_rest(path, kek, now=LEXP + 60)  # within the default leeway
    with pytest.raises(LicenceExpiredError, match="fetch the model again") as caught:
        load_at_rest(path, kek, now=LEXP + 61)
    assert caught.value.code == "licence_expired"


def test_an_at_rest_model_opens_only_under_its_own_kek(tmp_path: Path, kek: KEK) -> None:
    path = at_rest(tmp_path, gemm_model(), "application/onnx", kek)
    with pytest.raises(DEKUnwrapError) as caught:
        load_at_rest(path, KEK.generate("models"), now=NOW)
    assert caught.value.code == "dek_unwrap_failed"


@pytest.mark.parametrize("ctype", ["application/octet-stream", "application/vnd.modelseal.test"])
def test_content_that_onnx_runtime_cannot_take_is_refused(
    tmp_path: Path, kek: KEK, ctype: str
) -> None:
    path = at_rest(tmp_path, gemm_model(), ctype, kek)
    with pytest.raises(ModelUnsupportedError, match="cannot be loaded") as caught:
        load_at_rest(path, kek, now=NOW)
    assert caught.value.code == "model_unsupported"


def test_a_bundle_holding_another_model_format_is_refused(tmp_path: Path, kek: KEK) -> None:
    bundle = bundle_of(b"not onnx", ModelFormat.SAFETENSORS)
    path = at_rest(tmp_path, bundle, BUNDLE_MEDIA_TYPE, kek)
    with pytest.raises(ModelUnsupportedError, match="safetensors, not onnx") as caught:
        load_at_rest(path, kek, now=NOW)
    assert caught.value.code == "model_unsupported"


def test_bytes_onnx_runtime_cannot_parse_are_refused(tmp_path: Path, kek: KEK) -> None:
    path = at_rest(tmp_path, b"\x08\x01garbage" * 10, "application/onnx", kek)
    with pytest.raises(ModelUnsupportedError, match="ONNX Runtime could not load") as caught:
        load_at_rest(path, kek, now=NOW)
    assert caught.value.code == "model_unsupported"


def test_a_bundle_whose_model_does_not_match_its_hash_is_refused() -> None:
    bundle = bundle_of(gemm_model())
    bundle[-1] ^= 0x01
    with pytest.raises(BundleError, match="does not match its sha256") as caught:
        session_from_plaintext(memoryview(bundle), BUNDLE_MEDIA_TYPE)
    assert caught.value.code == "bundle_invalid"


def test_a_bundle_with_non_zero_padding_is_refused() -> None:
    bundle = bundle_of(gemm_model())
    manifest_end = 15 + int.from_bytes(bundle[11:15], "big")
    assert bundle[manifest_end] == 0  # the builder pads the manifest to 64 bytes
    bundle[manifest_end] = 1
    with pytest.raises(BundleError, match="padding") as caught:
        session_from_plaintext(memoryview(bundle), BUNDLE_MEDIA_TYPE)
    assert caught.value.code == "bundle_invalid"


def test_inputs_are_checked_against_the_model(tmp_path: Path, kek: KEK) -> None:
    one = load_at_rest(at_rest(tmp_path, gemm_model(), "application/onnx", kek), kek, now=NOW)
    two_path = tmp_path / "two"
    two_path.mkdir()
    two = load_at_rest(
        at_rest(two_path, gemm_model(inputs=2), "application/onnx", kek), kek, now=NOW
    )
    cases: list[tuple[object, object, str]] = [
        (one, {"other": X}, "no input 'other'"),
        (one, np.array([["a", "b", "c", "d"]]), "must be numeric"),
        (one, np.zeros((2, 5), dtype=np.float32), "refused the input"),
        (two, X, "several inputs"),
        (two, {"input": X}, "input 'offset' is missing"),
    ]
    for model, data, match in cases:
        with pytest.raises(InputError, match=match) as caught:
            model.run(data)  # type: ignore[attr-defined]
        assert caught.value.code == "input_invalid"
    offset = np.ones((2, 3), dtype=np.float64)  # converted to the input's float32
    got = two.run({"input": X, "offset": offset})["logits"]
    np.testing.assert_allclose(got, EXPECTED + 1, rtol=1e-6)


def test_wipeable_bytes_is_a_bytes_object_that_wipe_zeroes_in_place() -> None:
    buffer = WipeableBytes(1000)
    assert buffer.wipeable
    buffer.view[:] = b"\xa5" * 1000
    value = buffer.value
    assert type(value) is bytes
    assert value == b"\xa5" * 1000
    buffer.wipe()
    assert value == bytes(1000)  # the very object handed out is zeroed
    buffer.wipe()  # idempotent
    with pytest.raises(ValueError, match="wiped"):
        _ = buffer.view
    assert "wiped" in repr(buffer)


def test_the_session_outlives_the_wiped_model_bytes() -> None:
    model = gemm_model()
    with WipeableBytes(len(model)) as buffer:
        buffer.view[:] = model
        session, _ = session_from_plaintext(buffer.view, "application/onnx")
        handed = buffer.value
    assert handed == bytes(len(model))
    (logits,) = session.run(["logits"], {"input": X})
    np.testing.assert_allclose(logits, EXPECTED, rtol=1e-6)


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_wiping_large_wipeable_bytes_gives_its_pages_back() -> None:
    size = 64 << 20
    buffer = WipeableBytes(size)
    buffer.view[:] = b"\xa5" * size
    value = buffer.value  # the runtime would hold this reference
    before = resident_bytes()
    buffer.wipe()
    after = resident_bytes()
    assert before - after > size * 3 // 4
    assert value[: 1 << 20] == bytes(1 << 20)
    assert value[-(1 << 20) :] == bytes(1 << 20)


def test_releasing_pages_leaves_the_partial_pages_at_both_ends_alone() -> None:
    page = PAGE_BYTES
    data = bytearray(b"\xa5" * (8 * page))
    base = np.frombuffer(data, dtype=np.uint8).ctypes.data
    start = base + (-base % page) + page + 100  # 100 bytes past a page boundary, inside data
    length = 3 * page
    release_pages(start, length)
    offset = start - base
    first_whole = offset + (-start % page)
    end_whole = (start + length) // page * page - base
    view = memoryview(data)
    assert view[:first_whole] == b"\xa5" * first_whole  # shared page at the start kept
    assert view[first_whole:end_whole] == bytes(end_whole - first_whole)
    assert view[end_whole:] == b"\xa5" * (len(data) - end_whole)  # and at the end


def test_wipe_zeroes_a_bytearray() -> None:
    data = bytearray(b"secret model")
    wipe(data)
    assert data == bytearray(len(b"secret model"))


def test_a_large_model_loads_with_its_weights_as_external_initializers(
    tmp_path: Path, kek: KEK
) -> None:
    from modelseal.client.runtime import SPLIT_MIN_MODEL_BYTES

    side = 1536  # one 9 MiB float32 weight: above the split threshold
    weight = np.random.default_rng(5).standard_normal((side, side)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["logits"])],
        "large",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", side])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = proto.SerializeToString()
    assert len(model) >= SPLIT_MIN_MODEL_BYTES
    loaded = load_at_rest(at_rest(tmp_path, model, "application/onnx", kek), kek, now=NOW)
    x = np.random.default_rng(6).standard_normal((2, side)).astype(np.float32)
    np.testing.assert_allclose(loaded.run(x)["logits"], x @ weight, rtol=1e-4, atol=1e-3)
