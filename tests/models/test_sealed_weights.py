"""Sealed-weights mode: the graph and each tensor are separate encrypted ranges.

Properties checked: a sealed-weights load gives exactly the outputs of a plain
load; no buffer the loader creates (or asks the container for) ever holds the
whole serialised model; the bundle's plaintext never sits contiguous in the
loading process's memory (a scan of a fresh child process, with a positive
control); our buffers are zero once the session exists and ONNX Runtime keeps
its own copy; tampering is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelseal.client import sealed_weights as loader
from modelseal.client.errors import ModelUnsupportedError
from modelseal.client.runtime import load_at_rest
from modelseal.envelope import AtRest, Package, seal_bytes
from modelseal.errors import ChunkTagError
from modelseal.keys import KEK
from modelseal.models import digits, reference
from modelseal.models.bundle import (
    BUNDLE_MEDIA_TYPE,
    ManifestFields,
    ModelFormat,
    build_bundle,
    parse_bundle,
)
from modelseal.models.errors import BundleError
from modelseal.models.sealed_weights import (
    GRAPH_FILE_NAME,
    WEIGHTS_HINT,
    WEIGHTS_HINT_VALUE,
    build_sealed_weights_bundle,
    external_tensors,
)

from .conftest import USER_A

FIELDS = ManifestFields(model_id="digits", version="v1", format=ModelFormat.ONNX)
RNG = np.random.default_rng(11)
ROOT = Path(__file__).resolve().parents[2]


def _mixed_model() -> bytes:
    """A model with weights of several types and sizes, and a shape tensor used by Reshape."""
    w1 = RNG.standard_normal((64, 256)).astype(np.float32)
    w2 = RNG.standard_normal((256, 256)).astype(np.float16)
    w3 = RNG.standard_normal((256, 64)).astype(np.float32)
    bias = RNG.standard_normal(64).astype(np.float64)
    shape = np.array([-1, 8, 8], dtype=np.int64)
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h1"]),
        helper.make_node("Cast", ["h1"], ["h1h"], to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["h1h", "w2"], ["h2h"]),
        helper.make_node("Cast", ["h2h"], ["h2"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["h2", "w3"], ["h3"]),
        helper.make_node("Cast", ["bias"], ["bias32"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["h3", "bias32"], ["h4"]),
        helper.make_node("Reshape", ["h4", "shape"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 8, 8])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(w3, "w3"),
            numpy_helper.from_array(bias, "bias"),
            numpy_helper.from_array(shape, "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


def _plain_run(model: bytes, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: x})[0])


def _seal(tmp_path: Path, bundle: bytes | bytearray, kek: KEK) -> Path:
    path = tmp_path / "model.mseal"
    path.write_bytes(seal_bytes(bundle, AtRest(kek), ctype=BUNDLE_MEDIA_TYPE))
    return path


@pytest.fixture(scope="module")
def mixed() -> bytes:
    return _mixed_model()


@pytest.mark.parametrize("which", ["reference", "mixed"])
def test_sealed_weights_load_gives_the_same_outputs_as_a_plain_load(
    tmp_path: Path, which: str, mixed: bytes
) -> None:
    model = reference.iml_onnx(USER_A) if which == "reference" else mixed
    x = digits.load_split().x_test[:50].astype(np.float32)
    kek = KEK.generate("models")
    path = _seal(tmp_path, build_sealed_weights_bundle(FIELDS, model), kek)
    loaded = load_at_rest(path, kek)
    assert loaded.manifest is not None
    assert loaded.manifest.fields.runtime[WEIGHTS_HINT] == WEIGHTS_HINT_VALUE
    got = loaded.session.run(None, {loaded.inputs[0].name: x})[0]
    np.testing.assert_array_equal(got, _plain_run(model, x))


def test_every_weight_leaves_the_graph_as_its_own_file(mixed: bytes) -> None:
    bundle = parse_bundle(build_sealed_weights_bundle(FIELDS, mixed))
    graph = bundle.files[GRAPH_FILE_NAME]
    tensors = external_tensors(graph, bundle.manifest)
    # The int64 shape tensor stays in the graph: shape inference must read it there.
    assert [t.name for t in tensors] == ["w1", "w2", "w3", "bias"]
    for tensor in tensors:
        stored = bundle.files[tensor.file]
        assert stored not in graph
        assert len(stored) == tensor.nbytes
    # The graph is small: structure only.
    assert len(graph) < 1024 < min(len(bundle.files[t.file]) for t in tensors[:3])


def test_no_buffer_the_loader_creates_holds_the_whole_model(
    tmp_path: Path, mixed: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = build_sealed_weights_bundle(FIELDS, mixed)
    kek = KEK.generate("models")
    path = _seal(tmp_path, bundle, kek)
    sizes: list[int] = []
    real_new_buffer = loader._new_buffer
    real_read_range = Package.read_range
    real_read_range_into = Package.read_range_into
    real_wipeable = loader.WipeableBytes

    def new_buffer(nbytes: int) -> np.ndarray:
        sizes.append(nbytes)
        return real_new_buffer(nbytes)

    def read_range(self: Package, start: int, stop: int) -> bytes:
        sizes.append(stop - start)
        return real_read_range(self, start, stop)

    def read_range_into(self: Package, start: int, out: Any) -> int:
        sizes.append(memoryview(out).nbytes)
        return real_read_range_into(self, start, out)

    def wipeable(length: int) -> Any:
        sizes.append(length)
        return real_wipeable(length)

    monkeypatch.setattr(loader, "_new_buffer", new_buffer)
    monkeypatch.setattr(loader, "WipeableBytes", wipeable)
    monkeypatch.setattr(Package, "read_range", read_range)
    monkeypatch.setattr(Package, "read_range_into", read_range_into)
    monkeypatch.setattr(Package, "read_all", lambda self: pytest.fail("read_all was called"))
    monkeypatch.setattr(Package, "readinto", lambda self, out: pytest.fail("readinto was called"))
    loaded = load_at_rest(path, kek)
    largest_tensor = max(t.nbytes for t in external_tensors(*_graph_and_manifest(bundle)))
    assert sizes
    assert max(sizes) == largest_tensor
    assert max(sizes) < len(mixed) / 2
    assert max(sizes) < len(bundle) / 2
    assert loaded.session is not None


def _graph_and_manifest(bundle: bytes | bytearray) -> tuple[bytes, Any]:
    parsed = parse_bundle(bundle)
    return parsed.files[GRAPH_FILE_NAME], parsed.manifest


def test_our_buffers_are_zero_after_the_session_is_built_and_the_runtime_kept_a_copy(
    tmp_path: Path, mixed: bytes
) -> None:
    kek = KEK.generate("models")
    path = _seal(tmp_path, build_sealed_weights_bundle(FIELDS, mixed), kek)
    loaded = load_at_rest(path, kek)
    arrays = [a for a in loaded._pinned if isinstance(a, np.ndarray) and a.dtype == np.uint8]
    assert len(arrays) == 4
    assert all(not a.any() for a in arrays)
    # The session still computes the right answer from zeroed buffers: ONNX Runtime
    # copied every weight into memory of its own (documented in docs/MODELS.md).
    x = RNG.random((4, 64), dtype=np.float32)
    got = loaded.session.run(None, {"input": x})[0]
    np.testing.assert_array_equal(got, _plain_run(mixed, x))


_SCAN_CHILD = r"""
import json, sys
from modelseal.envelope import OpenPolicy, open_stream
from modelseal.keys import KEK
args = json.loads(sys.stdin.read())
kek = KEK("models", bytes.fromhex(args["kek"]))
if args["mode"] == "sealed-weights":
    from modelseal.client.runtime import load_at_rest
    loaded = load_at_rest(args["path"], kek)
else:  # positive control: the whole bundle decrypted into one buffer
    with open(args["path"], "rb") as src:
        whole = open_stream(src, kek, OpenPolicy()).read_all()
head = bytes.fromhex(args["head"])
tail = bytes.fromhex(args["tail"])
gap = args["gap"]
hits = 0
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", buffering=0) as mem:
    for line in maps:
        fields = line.split()
        if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
            continue
        start, stop = (int(v, 16) for v in fields[0].split("-"))
        try:
            mem.seek(start)
            region = mem.read(stop - start)
        except (OSError, OverflowError, ValueError):
            continue
        at = region.find(head)
        while at != -1:
            after = at + len(head) + gap
            if region[after : after + len(tail)] == tail:
                hits += 1
            at = region.find(head, at + 1)
print(json.dumps({"hits": hits}))
"""


def _scan_child(path: Path, kek_hex: str, mode: str, head: bytes, tail: bytes, gap: int) -> int:
    args = {
        "path": str(path),
        "kek": kek_hex,
        "mode": mode,
        "head": head.hex(),
        "tail": tail.hex(),
        "gap": gap,
    }
    result = subprocess.run(
        [sys.executable, "-c", _SCAN_CHILD],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    return int(json.loads(result.stdout)["hits"])


def test_the_bundle_plaintext_is_never_contiguous_in_the_loading_process(
    tmp_path: Path, mixed: bytes
) -> None:
    bundle = build_sealed_weights_bundle(FIELDS, mixed)
    manifest = parse_bundle(bundle).manifest
    first, second = manifest.file("w0000.bin"), manifest.file("w0001.bin")
    # The marker spans the end of one tensor, the padding and the start of the next:
    # bytes that sit together only where the bundle's plaintext is held as a whole.
    # The child gets the two halves apart and never joins them.
    head = bytes(bundle[first.end - 48 : first.end])
    tail = bytes(bundle[second.offset : second.offset + 48])
    gap = second.offset - first.end
    kek = KEK.generate("models")
    path = _seal(tmp_path, bundle, kek)
    kek_hex = kek.secret_bytes().hex()
    assert _scan_child(path, kek_hex, "whole", head, tail, gap) >= 1  # the scan can find it
    assert _scan_child(path, kek_hex, "sealed-weights", head, tail, gap) == 0


def test_a_tampered_tensor_ciphertext_is_refused(tmp_path: Path, mixed: bytes) -> None:
    bundle = build_sealed_weights_bundle(FIELDS, mixed)
    kek = KEK.generate("models")
    path = _seal(tmp_path, bundle, kek)
    data = bytearray(path.read_bytes())
    data[-40_000] ^= 1  # inside the body, in a tensor's chunk
    path.write_bytes(bytes(data))
    with pytest.raises(ChunkTagError):
        load_at_rest(path, kek)


def test_a_tensor_that_does_not_match_its_hash_is_refused(tmp_path: Path, mixed: bytes) -> None:
    bundle = build_sealed_weights_bundle(FIELDS, mixed)
    manifest = parse_bundle(bundle).manifest
    w2 = manifest.file("w0001.bin")
    bundle[w2.offset + 10] ^= 0x40  # sealed as it is: the AEAD is happy, the hash is not
    kek = KEK.generate("models")
    with pytest.raises(BundleError, match="does not match its sha256"):
        load_at_rest(_seal(tmp_path, bundle, kek), kek)


def test_a_graph_that_points_a_tensor_at_another_file_is_refused(mixed: bytes) -> None:
    bundle = parse_bundle(build_sealed_weights_bundle(FIELDS, mixed))
    graph = bundle.files[GRAPH_FILE_NAME].replace(b"w0001.bin", b"w0000.bin")
    files = [(GRAPH_FILE_NAME, graph)] + [
        (f.name, bundle.files[f.name]) for f in bundle.manifest.files[1:]
    ]
    rebuilt = parse_bundle(build_bundle(bundle.manifest.fields, files))
    with pytest.raises(BundleError, match="another tensor uses"):
        external_tensors(rebuilt.files[GRAPH_FILE_NAME], rebuilt.manifest)


def test_a_bundle_file_no_tensor_refers_to_is_refused(mixed: bytes) -> None:
    bundle = parse_bundle(build_sealed_weights_bundle(FIELDS, mixed))
    files = [(f.name, bundle.files[f.name]) for f in bundle.manifest.files]
    files.append(("extra.bin", b"\x00" * 100))
    rebuilt = parse_bundle(build_bundle(bundle.manifest.fields, files))
    with pytest.raises(BundleError, match="not referenced"):
        external_tensors(rebuilt.files[GRAPH_FILE_NAME], rebuilt.manifest)


def test_an_ordinary_bundle_is_not_loaded_as_sealed_weights(tmp_path: Path) -> None:
    bundle = build_bundle(FIELDS, [("model.onnx", reference.iml_onnx(USER_A))])
    kek = KEK.generate("models")
    path = _seal(tmp_path, bundle, kek)
    with open(path, "rb") as src:
        from modelseal.envelope import OpenPolicy, open_stream

        package = open_stream(src, kek, OpenPolicy())
        with pytest.raises(ModelUnsupportedError, match="not a sealed-weights"):
            loader.load_sealed_weights(package)
    assert load_at_rest(path, kek).manifest is not None  # the whole-bundle path still works


def test_small_tensors_can_stay_in_the_graph(mixed: bytes) -> None:
    bundle = parse_bundle(build_sealed_weights_bundle(FIELDS, mixed, min_tensor_bytes=1024))
    tensors = external_tensors(bundle.files[GRAPH_FILE_NAME], bundle.manifest)
    assert [t.name for t in tensors] == ["w1", "w2", "w3"]


def test_the_reference_generator_can_issue_a_sealed_weights_iml(tmp_path: Path) -> None:
    from modelseal.server.generators import GenerationRequest

    request = GenerationRequest(USER_A, "digits", "phone", "jti", {"sealed_weights": True})
    bundle = reference.generate_iml(request)
    manifest = parse_bundle(bundle).manifest
    assert manifest.fields.runtime[WEIGHTS_HINT] == WEIGHTS_HINT_VALUE
    assert manifest.entry.name == GRAPH_FILE_NAME
    kek = KEK.generate("models")
    loaded = load_at_rest(_seal(tmp_path, bundle, kek), kek)
    x = digits.load_split().x_test[:20].astype(np.float32)
    got = loaded.session.run(None, {"input": x})[0]
    np.testing.assert_array_equal(got, _plain_run(reference.iml_onnx(USER_A), x))


def test_a_non_boolean_sealed_weights_option_is_refused() -> None:
    from modelseal.errors import UsageError
    from modelseal.server.generators import GenerationRequest

    request = GenerationRequest(USER_A, "digits", "phone", "jti", {"sealed_weights": "yes"})
    with pytest.raises(UsageError, match="sealed_weights must be a boolean"):
        reference.generate_iml(request)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"offset\x12\x010", b"offset\x12\x011"),  # starts inside the file, ends past it
        (b"location\x12\tw0001.bin", b"location\x12\tw9999.bin"),  # names no bundle file
    ],
)
def test_a_reference_outside_its_own_file_is_refused(mixed: bytes, old: bytes, new: bytes) -> None:
    bundle = parse_bundle(build_sealed_weights_bundle(FIELDS, mixed))
    graph = bundle.files[GRAPH_FILE_NAME]
    assert graph.count(old) >= 1
    files = [(GRAPH_FILE_NAME, graph.replace(old, new, 1))] + [
        (f.name, bundle.files[f.name]) for f in bundle.manifest.files[1:]
    ]
    rebuilt = parse_bundle(build_bundle(bundle.manifest.fields, files))
    with pytest.raises(BundleError, match=r"must cover all|not a weight file"):
        external_tensors(rebuilt.files[GRAPH_FILE_NAME], rebuilt.manifest)
