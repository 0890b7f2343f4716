"""MSBUNDLE/1: round trips, random access through a sealed package, and strict parsing."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Callable

import pytest

from modelseal.envelope import AtRest, OpenPolicy, open_stream, seal_bytes
from modelseal.errors import UsageError
from modelseal.keys import KEK
from modelseal.models.bundle import (
    ALIGNMENT_BYTES,
    MAGIC,
    MAX_MANIFEST_BYTES,
    BundleReader,
    ManifestFields,
    ModelFormat,
    TensorSpec,
    build_bundle,
    parse_bundle,
)
from modelseal.models.errors import BundleError

FIELDS = ManifestFields(
    model_id="digits",
    version="7",
    format=ModelFormat.ONNX,
    inputs=(TensorSpec("input", "float32", ("N", 64)),),
    outputs=(TensorSpec("logits", "float32", ("N", 10)),),
    runtime={"engine": "onnxruntime", "onnx_opset": 17, "fp16": False},
    binding={"kind": "input-permutation", "params": [3, 1, 2]},
)
FILES = [("model.onnx", b"\x01" * 100), ("extra.data", bytes(range(256)) * 3), ("empty.bin", b"")]
PREFIX_BYTES = len(MAGIC) + 4


def _bundle() -> bytes:
    return bytes(build_bundle(FIELDS, FILES))


def _manifest(data: bytes) -> tuple[int, dict[str, object]]:
    (length,) = struct.unpack_from(">I", data, len(MAGIC))
    return length, json.loads(data[PREFIX_BYTES : PREFIX_BYTES + length])


def _with_manifest(data: bytes, manifest: bytes) -> bytes:
    """Swap in another manifest; the bytes after the old manifest are kept as they were."""
    length, _ = _manifest(data)
    return MAGIC + struct.pack(">I", len(manifest)) + manifest + data[PREFIX_BYTES + length :]


def _edit_manifest(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replace text inside the manifest by text of the same length (keeps the layout)."""
    assert len(old) == len(new)
    length, _ = _manifest(data)
    manifest = data[PREFIX_BYTES : PREFIX_BYTES + length]
    assert manifest.count(old) == 1, old
    return data[:PREFIX_BYTES] + manifest.replace(old, new) + data[PREFIX_BYTES + length :]


def _reader(data: bytes) -> BundleReader:
    return BundleReader(lambda start, stop: data[start:stop], len(data))


def _assert_invalid(data: bytes, match: str) -> None:
    with pytest.raises(BundleError, match=match) as info:
        parse_bundle(data)
    assert info.value.code == "bundle_invalid"


# --- round trips -------------------------------------------------------------------------


def test_bundle_round_trips_manifest_and_files() -> None:
    bundle = parse_bundle(_bundle())
    assert bundle.manifest.fields == FIELDS
    assert dict(bundle.files) == dict(FILES)
    assert list(bundle.files) == [name for name, _ in FILES]
    assert bundle.entry == FILES[0][1]
    for entry, (name, content) in zip(bundle.manifest.files, FILES, strict=True):
        assert entry.name == name
        assert entry.length == len(content)
        assert entry.offset % ALIGNMENT_BYTES == 0
        assert entry.sha256 == hashlib.sha256(content).hexdigest()


def test_layout_is_canonical_with_zero_padding() -> None:
    data = _bundle()
    length, _ = _manifest(data)
    files = parse_bundle(data).manifest.files
    previous_end = PREFIX_BYTES + length
    for entry in files:
        assert entry.offset == -(-previous_end // 64) * 64
        assert data[previous_end : entry.offset] == bytes(entry.offset - previous_end)
        previous_end = entry.end
    assert len(data) == files[-1].end


def test_building_twice_gives_identical_bytes() -> None:
    assert build_bundle(FIELDS, FILES) == build_bundle(FIELDS, FILES)


def test_reader_reads_each_file_like_the_whole_parser() -> None:
    data = _bundle()
    reader = _reader(data)
    assert reader.manifest == parse_bundle(data).manifest
    for name, content in FILES:
        assert reader.read_file(name) == content


def test_reader_fetches_one_file_from_a_sealed_package_without_the_others() -> None:
    files = [("model.onnx", b"\xaa" * 70_000), ("big.data", b"\xbb" * 70_000), ("c", b"\xcc" * 9)]
    data = bytes(build_bundle(FIELDS, files))
    kek = KEK.generate("device")
    sealed = seal_bytes(data, AtRest(kek), ctype="application/vnd.modelseal.bundle")
    package = open_stream(io.BytesIO(sealed), kek, OpenPolicy())
    requested: list[tuple[int, int]] = []

    def read_range(start: int, stop: int) -> bytes:
        requested.append((start, stop))
        return package.read_range(start, stop)

    reader = BundleReader(read_range, package.length)
    assert reader.read_file("c") == b"\xcc" * 9
    model, big = reader.manifest.file("model.onnx"), reader.manifest.file("big.data")
    for start, stop in requested:
        assert stop <= model.offset or start >= big.end, (start, stop)


def test_reader_refuses_an_unknown_file_name() -> None:
    with pytest.raises(UsageError, match="no file named") as info:
        _reader(_bundle()).read_file("weights.bin")
    assert info.value.code == "usage_error"


# --- strict parsing ----------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 5, 11, 14, 15, 40, -1, -700])
def test_truncated_bundle_is_rejected(cut: int) -> None:
    data = _bundle()
    _assert_invalid(data[:cut], "truncated")


def test_bad_magic_is_rejected() -> None:
    data = _bundle()
    _assert_invalid(b"MSBUNDLE/2\n" + data[len(MAGIC) :], "bad magic at offset 0")
    _assert_invalid(b"PK\x03\x04", "bad magic")


@pytest.mark.parametrize("length", [0, MAX_MANIFEST_BYTES + 1, 2**32 - 1])
def test_manifest_length_out_of_range_is_rejected(length: int) -> None:
    data = _bundle()
    edited = data[: len(MAGIC)] + struct.pack(">I", length) + data[PREFIX_BYTES:]
    _assert_invalid(
        edited, f"manifest_len at offset 11 must be 1..{MAX_MANIFEST_BYTES}, got {length}"
    )


def test_manifest_length_past_the_end_is_rejected() -> None:
    data = _bundle()
    edited = data[: len(MAGIC)] + struct.pack(">I", len(data)) + data[PREFIX_BYTES:]
    _assert_invalid(edited, f"truncated at offset {len(data)}")


def test_offset_that_is_not_aligned_is_rejected() -> None:
    data = _bundle()
    offset = parse_bundle(data).manifest.files[1].offset
    edited = _edit_manifest(data, b'"offset":%d' % offset, b'"offset":%d' % (offset + 1))
    _assert_invalid(edited, r"files\[1\]\.offset must be a multiple of 64")


def test_offset_that_leaves_a_gap_is_rejected() -> None:
    data = _bundle()
    offset = parse_bundle(data).manifest.files[1].offset
    edited = _edit_manifest(data, b'"offset":%d' % offset, b'"offset":%d' % (offset + 64))
    _assert_invalid(edited, rf"files\[1\]\.offset must be {offset} \(canonical layout\)")


def test_overlapping_files_are_rejected() -> None:
    files = [("a.bin", b"a" * 1000), ("b.bin", b"b" * 1000)]
    data = bytes(build_bundle(FIELDS, files))
    first, second = parse_bundle(data).manifest.files
    assert second.offset - 64 >= first.offset
    old, new = b'"offset":%d' % second.offset, b'"offset":%d' % (second.offset - 64)
    edited = _edit_manifest(data, old, new)
    _assert_invalid(edited, rf"files\[1\] at offset {second.offset - 64} overlaps files\[0\]")


def test_first_file_overlapping_the_manifest_is_rejected() -> None:
    data = _bundle()
    offset = parse_bundle(data).manifest.files[0].offset
    edited = _edit_manifest(data, b'"offset":%d' % offset, b'"offset":%d' % (offset - 64))
    _assert_invalid(edited, r"files\[0\] at offset \d+ overlaps the manifest")


def test_length_running_past_the_end_is_rejected() -> None:
    data = _bundle()
    edited = _edit_manifest(data, b'"length":0', b'"length":1')
    _assert_invalid(edited, "truncated")


def test_trailing_bytes_are_rejected() -> None:
    _assert_invalid(_bundle() + b"\x00", "trailing data at offset .*: 1 bytes")


def test_hash_mismatch_is_rejected_by_parser_and_reader() -> None:
    data = bytearray(_bundle())
    entry = parse_bundle(bytes(data)).manifest.files[1]
    data[entry.offset + 5] ^= 1
    _assert_invalid(bytes(data), f"'extra.data' at offset {entry.offset} does not match its sha256")
    reader = _reader(bytes(data))
    assert reader.read_file("model.onnx") == FILES[0][1]  # other files are unaffected
    with pytest.raises(BundleError, match="does not match its sha256") as info:
        reader.read_file("extra.data")
    assert info.value.code == "bundle_invalid"


def test_non_zero_padding_is_rejected_by_parser_and_reader() -> None:
    data = bytearray(_bundle())
    entry = parse_bundle(bytes(data)).manifest.files[1]
    data[entry.offset - 1] = 0x20
    _assert_invalid(bytes(data), "padding before 'extra.data'")
    with pytest.raises(BundleError, match="padding") as info:
        _reader(bytes(data)).read_file("extra.data")
    assert info.value.code == "bundle_invalid"


def test_duplicate_file_names_are_rejected() -> None:
    files = [("a.bin", b"x"), ("b.bin", b"y")]
    data = bytes(build_bundle(FIELDS, files))
    _assert_invalid(
        _edit_manifest(data, b'"b.bin"', b'"a.bin"'), r"files\[1\]\.name 'a.bin' is a duplicate"
    )
    with pytest.raises(BundleError, match="duplicate") as info:
        build_bundle(FIELDS, [("a.bin", b"x"), ("a.bin", b"y")])
    assert info.value.code == "bundle_invalid"


def _manifest_case(edit: Callable[[dict[str, object]], object]) -> bytes:
    data = _bundle()
    _, manifest = _manifest(data)
    edit(manifest)
    return _with_manifest(data, json.dumps(manifest).encode())


def _set(key: str, value: object) -> Callable[[dict[str, object]], object]:
    return lambda m: m.__setitem__(key, value)


def _set_file(key: str, value: object) -> Callable[[dict[str, object]], object]:
    return lambda m: m["files"][0].__setitem__(key, value)  # type: ignore[index]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_set("extra", 1), "unknown member 'extra'"),
        (lambda m: m.pop("runtime"), "lacks member 'runtime'"),
        (_set("format", "tflite"), "format must be one of"),
        (_set("model_id", ""), "model_id must be 1..128"),
        (_set("model_id", "a\nb"), "control characters"),
        (_set("version", 7), "must be strings"),
        (_set("files", []), "files must have 1..256"),
        (_set("files", {}), "files must be an array"),
        (_set("runtime", {"x": 1.5}), r"runtime\.x must be a string, integer or boolean"),
        (_set("runtime", []), "runtime must be an object"),
        (_set("binding", "yes"), "binding must be null or an object"),
        (_set("inputs", [{"name": "x", "dtype": "float31", "shape": [1]}]), "dtype must be"),
        (_set("inputs", [{"name": "x", "dtype": "float32", "shape": [-1]}]), "dimension"),
        (_set("inputs", [{"name": "x", "dtype": "float32", "shape": [1.0]}]), "dimension"),
        (_set("inputs", [{"name": "x", "dtype": "float32"}]), r"inputs\[0\] lacks"),
        (_set("outputs", [{"name": "y", "dtype": "int64", "shape": []}] * 2), "unique"),
        (_set_file("name", "../model.onnx"), r"files\[0\]\.name must match"),
        (_set_file("name", "dir/model.onnx"), r"files\[0\]\.name must match"),
        (_set_file("sha256", "AB" * 32), "64 lowercase hex"),
        (_set_file("offset", -64), r"files\[0\]\.offset must be >= 0"),
        (_set_file("length", True), r"files\[0\]\.length must be an integer"),
        (_set_file("size", 1), r"files\[0\] has unknown member 'size'"),
    ],
)
def test_manifest_that_breaks_a_rule_is_rejected(
    edit: Callable[[dict[str, object]], object], match: str
) -> None:
    _assert_invalid(_manifest_case(edit), match)


@pytest.mark.parametrize(
    ("manifest", "match"),
    [
        (b"[]", "must be a JSON object"),
        (b"{", "is not JSON"),
        (b'{"a":1,"a":2}', "duplicate member 'a'"),
        (b'{"a":NaN}', "NaN"),
        (b'{"a":9007199254740993}', "I-JSON range"),
        (b'{"a":-9007199254740993}', "I-JSON range"),
        # Past 4300 digits int() raises its own ValueError, which once escaped the parser.
        (b'{"a":' + b"9" * 5000 + b"}", "I-JSON range"),
        (b'\xef\xbb\xbf{"a":1}', "byte-order mark"),
        (b'{"a":"\xff"}', "not valid UTF-8 at offset 21"),
        (b'{"a":"\\ud800"}', "lone surrogate"),
        (b"[" * 100 + b"]" * 100, "nests deeper"),
    ],
)
def test_manifest_that_is_not_strict_i_json_is_rejected(manifest: bytes, match: str) -> None:
    _assert_invalid(_with_manifest(_bundle(), manifest), match)


def test_reader_rejects_a_source_that_returns_short_reads() -> None:
    data = _bundle()
    with pytest.raises(BundleError, match="truncated") as info:
        BundleReader(lambda start, stop: data[start : stop - 1], len(data))
    assert info.value.code == "bundle_invalid"


def test_reader_rejects_a_bundle_whose_length_disagrees_with_the_source() -> None:
    data = _bundle()
    with pytest.raises(BundleError, match="trailing") as info:
        BundleReader(lambda start, stop: (data + bytes(64))[start:stop], len(data) + 64)
    assert info.value.code == "bundle_invalid"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"format": "tflite"}, "format must be one of"),
        ({"runtime": {"scale": 0.5}}, r"runtime\.scale"),
        ({"binding": {"x": float("nan")}}, "not valid I-JSON"),
        ({"model_id": "m" * 129}, "model_id must be 1..128"),
    ],
)
def test_builder_refuses_fields_a_reader_would_reject(
    kwargs: dict[str, object], match: str
) -> None:
    values: dict[str, object] = {"model_id": "m", "version": "1", "format": ModelFormat.ONNX}
    values.update(kwargs)
    with pytest.raises(BundleError, match=match) as info:
        build_bundle(ManifestFields(**values), [("m", b"")])  # type: ignore[arg-type]
    assert info.value.code == "bundle_invalid"


@pytest.mark.parametrize(
    ("files", "match"),
    [([], "1..256 files"), ([("bad name", b"")], "must match"), ([(".hidden", b"")], "must match")],
)
def test_builder_refuses_bad_file_tables(files: list[tuple[str, bytes]], match: str) -> None:
    with pytest.raises(BundleError, match=match) as info:
        build_bundle(FIELDS, files)
    assert info.value.code == "bundle_invalid"
