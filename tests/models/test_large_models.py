"""Large models: sealed as a stream, loaded lazily per tensor, with peak memory near the model size.

The memory checks run in a fresh interpreter and read its peak RSS (``VmHWM``); a
control child that decrypts the whole plaintext first shows that the check can
fail. The 2 GiB run is marked slow; the default run uses 64 MiB.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from modelseal.client.errors import ModelUnsupportedError
from modelseal.client.sealed_safetensors import SAFETENSORS_MEDIA_TYPE, SealedSafetensors
from modelseal.envelope import AtRest, OpenPolicy, seal_bytes, seal_file, seal_stream
from modelseal.errors import ChunkTagError
from modelseal.keys import KEK
from modelseal.models.bundle import (
    BUNDLE_MEDIA_TYPE,
    ManifestFields,
    ModelFormat,
    build_bundle,
    parse_bundle,
)
from modelseal.models.bundle_stream import BundleStream
from modelseal.models.errors import BundleError
from modelseal.models.safetensors_adapter import parse_header

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
FIELDS = ManifestFields(model_id="big", version="v1", format=ModelFormat.SAFETENSORS)


def write_random_safetensors(path: Path, total_bytes: int, tensor_bytes: int = 16 * MIB) -> None:
    """A safetensors file of float32 tensors with random values, written piece by piece."""
    count = max(1, total_bytes // tensor_bytes)
    rows = tensor_bytes // (4 * 1024)
    header: dict[str, object] = {"__metadata__": {"kind": "random"}}
    for i in range(count):
        begin = i * rows * 1024 * 4
        header[f"layer{i:03d}.weight"] = {
            "dtype": "F32",
            "shape": [rows, 1024],
            "data_offsets": [begin, begin + rows * 1024 * 4],
        }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(5)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for _ in range(count):
            out.write(rng.standard_normal((rows, 1024), dtype=np.float32).tobytes())


def _small(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    tensors = {
        "a": rng.standard_normal((100, 37)).astype(np.float32),
        "b": rng.integers(0, 100, (5000,)).astype(np.int64),
        "c": rng.standard_normal((3,)).astype(np.float16),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata={"who": "test"})
    return path, tensors


def test_a_sealed_safetensors_file_reads_each_tensor_exactly(tmp_path: Path) -> None:
    path, tensors = _small(tmp_path)
    kek = KEK.generate("models")
    sealed = tmp_path / "model.mseal"
    seal_file(path, sealed, AtRest(kek), ctype=SAFETENSORS_MEDIA_TYPE)
    with SealedSafetensors.open(sealed, kek, OpenPolicy()) as model:
        assert sorted(model) == ["a", "b", "c"]
        assert model.metadata == {"who": "test"}
        for name, expected in tensors.items():
            got = model[name]
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)


def test_a_streamed_bundle_is_byte_for_byte_the_in_memory_bundle(tmp_path: Path) -> None:
    path, _ = _small(tmp_path)
    extra = tmp_path / "notes.txt"
    extra.write_bytes(b"x" * 1000)
    expected = build_bundle(FIELDS, [("model.safetensors", path.read_bytes()), ("n", b"x" * 1000)])
    with BundleStream.from_files(FIELDS, [("model.safetensors", path), ("n", extra)]) as stream:
        assert stream.length == len(expected)
        got = bytearray()
        while piece := stream.read(777):
            got += piece
    assert got == expected


def test_a_file_that_changes_after_it_was_hashed_is_not_sealed(tmp_path: Path) -> None:
    path, _ = _small(tmp_path)
    kek = KEK.generate("models")
    stream = BundleStream.from_files(FIELDS, [("model.safetensors", path)])
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # same length, other bytes: only a second hash can tell
    path.write_bytes(data)
    with (
        stream,
        open(tmp_path / "model.mseal", "wb") as dst,
        pytest.raises(BundleError, match="changed since it was hashed"),
    ):
        seal_stream(stream, dst, AtRest(kek), length=stream.length, ctype=BUNDLE_MEDIA_TYPE)


def test_a_sealed_safetensors_bundle_is_read_lazily_and_verified(tmp_path: Path) -> None:
    path, tensors = _small(tmp_path)
    kek = KEK.generate("models")
    sealed = tmp_path / "model.mseal"
    with (
        BundleStream.from_files(FIELDS, [("model.safetensors", path)]) as stream,
        open(sealed, "wb") as dst,
    ):
        seal_stream(stream, dst, AtRest(kek), length=stream.length, ctype=BUNDLE_MEDIA_TYPE)
    with SealedSafetensors.open(sealed, kek, OpenPolicy()) as model:
        np.testing.assert_array_equal(model["b"], tensors["b"])
        model.verify()


def test_a_bundle_whose_file_does_not_match_its_hash_fails_verify(tmp_path: Path) -> None:
    path, _ = _small(tmp_path)
    bundle = build_bundle(FIELDS, [("model.safetensors", path.read_bytes())])
    bundle[-1] ^= 1  # inside tensor data: the header still parses
    kek = KEK.generate("models")
    sealed = tmp_path / "model.mseal"
    sealed.write_bytes(seal_bytes(bundle, AtRest(kek), ctype=BUNDLE_MEDIA_TYPE))
    with (
        SealedSafetensors.open(sealed, kek, OpenPolicy()) as model,
        pytest.raises(BundleError, match="sha256"),
    ):
        model.verify()


def test_a_tampered_tensor_chunk_is_refused(tmp_path: Path) -> None:
    path, _ = _small(tmp_path)
    kek = KEK.generate("models")
    sealed = tmp_path / "model.mseal"
    seal_file(path, sealed, AtRest(kek), ctype=SAFETENSORS_MEDIA_TYPE)
    data = bytearray(sealed.read_bytes())
    data[-100] ^= 1
    sealed.write_bytes(bytes(data))
    with SealedSafetensors.open(sealed, kek, OpenPolicy()) as model:
        # The last chunk holds the end of the buffer's last tensor.
        last = max(model.tensors(), key=lambda info: model._locate(info.name).end).name
        with pytest.raises(ChunkTagError):
            model.read(last)


def test_swapping_the_chunks_of_two_same_shape_tensors_is_refused(tmp_path: Path) -> None:
    """Lazy reads skip the bundle's whole-file hash: chunk authentication must catch a swap."""
    chunk = 16384  # FORMAT.md section 8: plaintext bytes per chunk, sealed with a 16-byte tag
    width = 3 * chunk // 4  # each tensor spans three chunks, so it wholly holds one
    tensors = {name: np.full((width,), i + 1, dtype=np.float32) for i, name in enumerate("ab")}
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    plain = path.read_bytes()
    _, where = parse_header(lambda start, stop: plain[start:stop], len(plain))
    bundle = build_bundle(FIELDS, [("model.safetensors", plain)])
    base = parse_bundle(bundle).manifest.entry.offset
    ia, ib = (-(-(base + where[name].begin) // chunk) for name in "ab")
    assert (ia + 1) * chunk <= base + where["a"].end  # chunk ia lies wholly inside "a"
    assert (ib + 1) * chunk <= base + where["b"].end  # chunk ib inside "b", not the final one
    kek = KEK.generate("models")
    data = bytearray(seal_bytes(bundle, AtRest(kek), ctype=BUNDLE_MEDIA_TYPE))
    body_start = len(data) - (56 + len(bundle) + 16 * (len(bundle) // chunk + 1))
    size = chunk + 16
    at_a, at_b = (body_start + 56 + i * size for i in (ia, ib))
    sealed = tmp_path / "model.mseal"
    sealed.write_bytes(bytes(data))
    with SealedSafetensors.open(sealed, kek, OpenPolicy()) as model:  # unswapped: reads fine
        np.testing.assert_array_equal(model.read("b"), tensors["b"])
    data[at_a : at_a + size], data[at_b : at_b + size] = (
        data[at_b : at_b + size],
        data[at_a : at_a + size],
    )
    sealed.write_bytes(bytes(data))
    with SealedSafetensors.open(sealed, kek, OpenPolicy()) as model:
        with pytest.raises(ChunkTagError):
            model.read("a")
        with pytest.raises(ChunkTagError):
            model.read("b")


def test_other_content_is_not_opened_as_safetensors(tmp_path: Path) -> None:
    kek = KEK.generate("models")
    sealed = tmp_path / "model.mseal"
    sealed.write_bytes(seal_bytes(b"not a model", AtRest(kek), ctype="application/onnx"))
    with pytest.raises(ModelUnsupportedError, match="not a safetensors"):
        SealedSafetensors.open(sealed, kek, OpenPolicy())
    onnx_bundle = build_bundle(
        ManifestFields(model_id="m", version="1", format=ModelFormat.ONNX), [("m.onnx", b"x")]
    )
    sealed.write_bytes(seal_bytes(onnx_bundle, AtRest(kek), ctype=BUNDLE_MEDIA_TYPE))
    with pytest.raises(ModelUnsupportedError, match="not safetensors"):
        SealedSafetensors.open(sealed, kek, OpenPolicy())
    assert parse_bundle(onnx_bundle).manifest.fields.format is ModelFormat.ONNX


_RSS_CHILD = r"""
import json, sys
from pathlib import Path

def peak_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

import numpy as np
from modelseal.client.sealed_safetensors import SAFETENSORS_MEDIA_TYPE, SealedSafetensors
from modelseal.envelope import AtRest, OpenPolicy, open_stream, seal_file
from modelseal.keys import KEK
args = json.loads(sys.argv[1])
kek = KEK("models", bytes.fromhex(args["kek"]))
baseline = peak_kib()
if args["seal"]:
    seal_file(args["plain"], args["sealed"], AtRest(kek), ctype=SAFETENSORS_MEDIA_TYPE, fsync=False)
after_seal = peak_kib()
tensors = {}
if args["mode"] == "lazy":
    with SealedSafetensors.open(args["sealed"], kek, OpenPolicy()) as model:
        for name in model:
            tensors[name] = model[name]
else:  # control: decrypt the whole plaintext, then copy each tensor out of it
    from safetensors.numpy import load
    with open(args["sealed"], "rb") as src:
        whole = open_stream(src, kek, OpenPolicy()).read_all()
    tensors = load(whole)
total = sum(t.nbytes for t in tensors.values())
print(json.dumps({"baseline": baseline, "after_seal": after_seal, "peak": peak_kib(),
                  "tensor_bytes": total}))
"""


def _rss_child(plain: Path, sealed: Path, kek: KEK, *, mode: str, seal: bool) -> dict[str, int]:
    args = {
        "plain": str(plain),
        "sealed": str(sealed),
        "kek": kek.secret_bytes().hex(),
        "mode": mode,
        "seal": seal,
    }
    result = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    report: dict[str, int] = json.loads(result.stdout)
    return report


def _check_peak_rss(tmp_path: Path, size_bytes: int, *, control: bool) -> None:
    plain = tmp_path / "big.safetensors"
    sealed = tmp_path / "big.mseal"
    write_random_safetensors(plain, size_bytes)
    model_kib = plain.stat().st_size // 1024
    kek = KEK.generate("models")
    try:
        lazy = _rss_child(plain, sealed, kek, mode="lazy", seal=True)
        # Sealing streams in constant memory: well under a tenth of the model.
        assert lazy["after_seal"] - lazy["baseline"] < max(model_kib // 10, 48 * 1024)
        # Loading every tensor costs the tensors themselves plus a small constant.
        assert lazy["tensor_bytes"] > 0.99 * size_bytes
        added = lazy["peak"] - lazy["baseline"]
        assert added < 1.1 * model_kib + 32 * 1024, lazy
        if control:
            whole = _rss_child(plain, sealed, kek, mode="whole", seal=False)
            assert whole["peak"] - whole["baseline"] > 1.9 * model_kib, whole
    finally:
        plain.unlink(missing_ok=True)
        sealed.unlink(missing_ok=True)


def test_loading_a_64_mib_sealed_model_peaks_near_its_size(tmp_path: Path) -> None:
    _check_peak_rss(tmp_path, 64 * MIB, control=True)


@pytest.mark.slow
def test_loading_a_2_gib_sealed_model_peaks_near_its_size(tmp_path: Path) -> None:
    _check_peak_rss(tmp_path, 2048 * MIB, control=False)


def test_every_tensor_of_the_64_mib_model_matches_the_plain_file(tmp_path: Path) -> None:
    plain = tmp_path / "big.safetensors"
    write_random_safetensors(plain, 64 * MIB)
    kek = KEK.generate("models")
    sealed = tmp_path / "big.mseal"
    seal_file(plain, sealed, AtRest(kek), ctype=SAFETENSORS_MEDIA_TYPE, fsync=False)
    expected = load_file(str(plain))
    with SealedSafetensors.open(sealed, kek, OpenPolicy()) as model:
        assert len(model) == len(expected) == 4
        for name in model:
            np.testing.assert_array_equal(model[name], expected[name])
