#!/usr/bin/env python3
"""Write the MSBUNDLE/1 parsing vectors to ``tests/models/vectors/testdata/``.

Run from anywhere::

    python tests/models/vectors/generate.py

Each file is one scenario (format in ``README.md``): a few ``key: value`` lines,
an empty line, then the bundle bytes. Bundles hold no randomness, so the files
are the same on every run; ``tests/models/test_bundle_vectors.py`` checks that
they still match this script.

Invalid vectors are assembled here by hand rather than by patching valid output,
so that each breaks exactly one rule: apart from the defect, the layout is
canonical, the padding zero and every hash right.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Running the script by path puts its own directory first on sys.path, not the repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from modelseal.models.bundle import (
    MAGIC,
    ManifestFields,
    ModelFormat,
    TensorSpec,
    build_bundle,
)

TESTDATA = Path(__file__).resolve().parent / "testdata"

MODEL = bytes(range(256)) * 2 + b"\x08\x07"  # 514 bytes: not a multiple of 64
WEIGHTS = b"\x5a" * 64  # exactly one alignment unit
FILES = [("model.onnx", MODEL), ("weights.bin", WEIGHTS), ("empty.txt", b"")]


def _manifest(files: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "model_id": "digits",
        "version": "1",
        "format": "onnx",
        "files": files,
        "inputs": [{"name": "input", "dtype": "float32", "shape": ["N", 64]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["N", 10]}],
        "runtime": {"engine": "onnxruntime", "onnx_opset": 17},
        "binding": None,
    }
    manifest.update(overrides)
    return manifest


def _align(offset: int) -> int:
    return -(-offset // 64) * 64


def assemble(
    files: list[tuple[str, bytes]],
    *,
    edit: Callable[[dict[str, Any]], None] = lambda m: None,
    encode: Callable[[dict[str, Any]], bytes] | None = None,
    write_at_stated_offsets: bool = True,
    **overrides: Any,
) -> bytes:
    """A bundle laid out canonically for whatever manifest ``edit`` leaves.

    The file table is computed for the final manifest length (iterating, as the
    builder does) and ``edit`` may then break one rule. The files are written at
    the offsets the edited table states, or at the canonical ones when
    ``write_at_stated_offsets`` is false (so that a bad offset cannot overwrite
    the manifest).
    """
    encoder = encode or (lambda m: json.dumps(m, separators=(",", ":")).encode())
    length = 0
    for _ in range(8):
        entries, position = [], len(MAGIC) + 4 + length
        for name, content in files:
            position = _align(position)
            digest = hashlib.sha256(content).hexdigest()
            entries.append(
                {"name": name, "offset": position, "length": len(content), "sha256": digest}
            )
            position += len(content)
        manifest = _manifest([dict(e) for e in entries], **overrides)
        edit(manifest)
        encoded = encoder(manifest)
        if len(encoded) == length:
            break
        length = len(encoded)
    table = manifest["files"] if write_at_stated_offsets else entries
    starts = [entry["offset"] for entry in table]
    ends = [start + len(content) for start, (_, content) in zip(starts, files, strict=True)]
    end = max([len(MAGIC) + 4 + length, *ends])
    out = bytearray(end)
    out[: len(MAGIC)] = MAGIC
    struct.pack_into(">I", out, len(MAGIC), length)
    out[len(MAGIC) + 4 : len(MAGIC) + 4 + length] = encoded
    for start, (_, content) in zip(starts, files, strict=True):
        out[start : start + len(content)] = content
    return bytes(out)


def _valid_aligned_manifest() -> bytes:
    """A bundle whose manifest ends exactly on a 64-byte boundary (no padding)."""
    for extra in range(64):
        fields = ManifestFields("m" * (1 + extra), "1", ModelFormat.SAFETENSORS)
        data = bytes(build_bundle(fields, [("weights.safetensors", WEIGHTS)]))
        (length,) = struct.unpack_from(">I", data, len(MAGIC))
        if (len(MAGIC) + 4 + length) % 64 == 0:
            return data
    raise AssertionError("no model_id length aligns the manifest")


def _set_file(index: int, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["files"][index].__setitem__(key, value)


def _shift_file(index: int, delta: int) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["files"][index].__setitem__("offset", m["files"][index]["offset"] + delta)


def vectors() -> dict[str, tuple[dict[str, str], bytes]]:
    """Every vector: name -> (header fields, bundle bytes)."""
    valid = assemble(FILES)
    out: dict[str, tuple[dict[str, str], bytes]] = {}

    def ok(name: str, comment: str, data: bytes, files: list[tuple[str, bytes]]) -> None:
        listing = ",".join(f"{n}:{hashlib.sha256(c).hexdigest()}" for n, c in files)
        out[name] = ({"expect": "success", "files": listing, "comment": comment}, data)

    def bad(name: str, comment: str, data: bytes) -> None:
        out[name] = ({"expect": "bundle_invalid", "comment": comment}, data)

    fields = ManifestFields(
        "digits",
        "1",
        ModelFormat.ONNX,
        inputs=(TensorSpec("input", "float32", ("N", 64)),),
        outputs=(TensorSpec("logits", "float32", ("N", 10)),),
        runtime={"engine": "onnxruntime", "onnx_opset": 17},
    )
    ok("ok_built", "written by build_bundle", bytes(build_bundle(fields, FILES)), FILES)
    ok("ok_compact_json", "manifest JSON in another member order", valid, FILES)
    ok(
        "ok_pretty_json",
        "manifest JSON with whitespace and non-ASCII text",
        assemble(
            FILES,
            encode=lambda m: json.dumps(m, indent=2, ensure_ascii=False).encode(),
            version="1.0-\u00e9t\u00e9",
        ),
        FILES,
    )
    ok(
        "ok_manifest_ends_aligned",
        "no padding after the manifest",
        _valid_aligned_manifest(),
        [("weights.safetensors", WEIGHTS)],
    )
    ok(
        "ok_binding_object",
        "binding is an object with nested members",
        assemble(FILES, binding={"kind": "permutation", "seed": [1, 2, 3], "strict": True}),
        FILES,
    )

    bad("bad_magic", "first byte changed", b"X" + valid[1:])
    bad("bad_magic_version_2", "MSBUNDLE/2", valid.replace(b"MSBUNDLE/1\n", b"MSBUNDLE/2\n", 1))
    bad("truncated_in_magic", "6 bytes", valid[:6])
    bad("truncated_in_length", "13 bytes", valid[:13])
    bad("truncated_in_manifest", "ends inside the manifest", valid[:40])
    bad("truncated_last_file", "last non-empty file lacks its final byte", assemble(FILES[:2])[:-1])
    bad(
        "manifest_len_zero",
        "manifest_len = 0",
        valid[: len(MAGIC)] + struct.pack(">I", 0) + valid[len(MAGIC) + 4 :],
    )
    bad(
        "manifest_len_too_big",
        "manifest_len = 2**20 + 1",
        valid[: len(MAGIC)] + struct.pack(">I", 2**20 + 1) + valid[len(MAGIC) + 4 :],
    )
    bad("manifest_not_object", "manifest is a JSON array", assemble(FILES, encode=lambda m: b"[]"))
    bad(
        "manifest_not_utf8",
        "a string holds byte 0xff",
        assemble(FILES, encode=lambda m: json.dumps(m).encode().replace(b'"1"', b'"\xff"', 1)),
    )
    bad(
        "manifest_duplicate_member",
        "model_id twice",
        assemble(FILES, encode=lambda m: b'{"model_id":"x",' + json.dumps(m).encode()[1:]),
    )
    bad(
        "manifest_bom",
        "UTF-8 byte-order mark before the JSON",
        assemble(FILES, encode=lambda m: b"\xef\xbb\xbf" + json.dumps(m).encode()),
    )
    bad(
        "manifest_unknown_member",
        "extra top-level member",
        assemble(FILES, edit=lambda m: m.__setitem__("watermark", "x")),
    )
    bad(
        "manifest_missing_binding",
        "binding absent (it must be present, possibly null)",
        assemble(FILES, edit=lambda m: m.pop("binding")),
    )
    bad("manifest_bad_format", "format tflite", assemble(FILES, format="tflite"))
    bad("manifest_float_hint", "runtime hint is a float", assemble(FILES, runtime={"x": 0.5}))
    bad(
        "manifest_big_integer",
        "files[2].length = 2**53, beyond the I-JSON range",
        assemble(FILES, edit=_set_file(2, "length", 2**53)),
    )
    bad(
        "manifest_bad_dtype",
        "inputs[0].dtype float31",
        assemble(FILES, inputs=[{"name": "input", "dtype": "float31", "shape": [1]}]),
    )
    bad("no_files", "files is empty", assemble([]))
    bad(
        "file_name_traversal",
        "file name ../model.onnx",
        assemble(FILES, edit=_set_file(0, "name", "../model.onnx")),
    )
    bad(
        "file_name_duplicate",
        "two files named model.onnx",
        assemble(FILES, edit=_set_file(1, "name", "model.onnx")),
    )
    bad(
        "file_sha256_uppercase",
        "sha256 in uppercase hex",
        assemble(
            FILES,
            edit=lambda m: m["files"][0].__setitem__("sha256", m["files"][0]["sha256"].upper()),
        ),
    )
    bad(
        "file_offset_unaligned",
        "files[1].offset is not a multiple of 64",
        assemble(FILES, edit=_shift_file(1, 1)),
    )
    bad(
        "file_offset_gap",
        "files[1] starts 64 bytes after its canonical offset",
        assemble(FILES, edit=_shift_file(1, 64)),
    )
    bad(
        "file_overlaps_previous",
        "files[1] starts inside files[0]",
        assemble(FILES, edit=_shift_file(1, -64)),
    )
    bad(
        "file_overlaps_manifest",
        "files[0] starts inside the manifest",
        assemble(FILES, edit=_shift_file(0, -64), write_at_stated_offsets=False),
    )
    bad("file_hash_mismatch", "one byte of files[1] changed", _flip_in_file(valid, 1))
    bad("padding_not_zero", "a padding byte before files[1] is 0x20", _dirty_padding(valid))
    bad("trailing_bytes", "one zero byte after the last file", valid + b"\x00")
    return out


def _entries(data: bytes) -> list[dict[str, Any]]:
    (length,) = struct.unpack_from(">I", data, len(MAGIC))
    files: list[dict[str, Any]] = json.loads(data[len(MAGIC) + 4 : len(MAGIC) + 4 + length])[
        "files"
    ]
    return files


def _flip_in_file(data: bytes, index: int) -> bytes:
    entry = _entries(data)[index]
    out = bytearray(data)
    out[entry["offset"]] ^= 1
    return bytes(out)


def _dirty_padding(data: bytes) -> bytes:
    entry = _entries(data)[1]
    out = bytearray(data)
    out[entry["offset"] - 1] = 0x20
    return bytes(out)


def encode_vector(header: dict[str, str], data: bytes) -> bytes:
    """The file form of a vector: header lines, an empty line, the bundle."""
    lines = "".join(f"{key}: {value}\n" for key, value in header.items())
    return lines.encode("ascii") + b"\n" + data


def main() -> None:
    TESTDATA.mkdir(exist_ok=True)
    written = vectors()
    for stale in TESTDATA.iterdir():
        if stale.name not in written:
            stale.unlink()
    for name, (header, data) in written.items():
        (TESTDATA / name).write_bytes(encode_vector(header, data))
    print(f"wrote {len(written)} vectors to {TESTDATA}")


if __name__ == "__main__":
    main()
