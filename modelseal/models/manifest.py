"""The MSBUNDLE/1 manifest: what a bundle holds, where, and how to run it.

The manifest is one strict I-JSON object (``docs/MODELS.md`` §3). This module holds
its value types and its parser; :mod:`modelseal.models.bundle` lays the manifest
and the files out as bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeAlias

from modelseal._ijson import MAX_SAFE_INTEGER, decode_object, json_type
from modelseal.errors import UsageError
from modelseal.models.errors import BundleError
from modelseal.models.tensors import DTYPES

__all__ = [
    "ALIGNMENT_BYTES",
    "MAX_FILES",
    "FileEntry",
    "JSONValue",
    "Manifest",
    "ManifestFields",
    "ModelFormat",
    "RuntimeHint",
    "TensorSpec",
    "align",
    "parse_manifest",
]

ALIGNMENT_BYTES = 64
MAX_FILES = 256
MAX_TENSOR_SPECS = 256
MAX_RANK = 32
MAX_RUNTIME_HINTS = 64
MAX_MODEL_ID_CHARS = 128
MAX_VERSION_CHARS = 64
MAX_NAME_CHARS = 128

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MANIFEST_MEMBERS = frozenset(
    {"model_id", "version", "format", "files", "inputs", "outputs", "runtime", "binding"}
)

JSONValue: TypeAlias = "str | int | float | bool | list[JSONValue] | dict[str, JSONValue] | None"
RuntimeHint: TypeAlias = str | int | bool


class ModelFormat(StrEnum):
    """The format of a bundle's entry file, ``files[0]``."""

    ONNX = "onnx"
    SAFETENSORS = "safetensors"


def _fail(message: str) -> BundleError:
    return BundleError(message)


def _model_format(value: object) -> ModelFormat:
    if isinstance(value, str):
        try:
            return ModelFormat(value)
        except ValueError:
            pass
    raise _fail(f"format must be one of {[f.value for f in ModelFormat]}, got {value!r}")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of the model's signature.

    Attributes:
        name: The tensor's name in the model.
        dtype: A canonical dtype name (:data:`modelseal.models.tensors.DTYPES`).
        shape: Each dimension is a size (``>= 0``) or a symbolic name for a dynamic one.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def __post_init__(self) -> None:
        _check_name(self.name, "name", MAX_NAME_CHARS)
        if self.dtype not in DTYPES:
            raise _fail(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if len(self.shape) > MAX_RANK:
            raise _fail(f"shape of {self.name!r} must have at most {MAX_RANK} dimensions")
        for dim in self.shape:
            if isinstance(dim, str):
                _check_name(dim, "symbolic dimension", MAX_NAME_CHARS)
            elif isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim <= 2**31 - 1:
                raise _fail(f"dimension of {self.name!r} must be 0..2**31-1 or a name, got {dim!r}")

    def to_json(self) -> dict[str, JSONValue]:
        """The manifest form of the spec."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class FileEntry:
    """Where one file lies in the bundle.

    Attributes:
        name: The file name, 1..128 of ``[A-Za-z0-9._-]``, not starting with ``.``, ``_``
            or ``-``.
        offset: Byte offset of the file from the start of the bundle; a multiple of 64.
        length: The file's length in bytes.
        sha256: Lowercase hex SHA-256 of the file's bytes.
    """

    name: str
    offset: int
    length: int
    sha256: str

    @property
    def end(self) -> int:
        """The offset just past the file."""
        return self.offset + self.length

    def to_json(self) -> dict[str, JSONValue]:
        """The manifest form of the entry."""
        return {
            "name": self.name,
            "offset": self.offset,
            "length": self.length,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class ManifestFields:
    """The manifest members chosen by the producer (the file table is derived).

    Attributes:
        model_id: The model id (the container's ``mid``), 1..128 characters.
        version: The producer's version of the model, 1..64 characters.
        format: The format of the entry file ``files[0]``.
        inputs: The model's inputs.
        outputs: The model's outputs.
        runtime: Hints for the runtime (engine, opset, input scaling...): strings,
            integers or booleans, at most 64.
        binding: ``None``, or the description of the device binding the model needs.
    """

    model_id: str
    version: str
    format: ModelFormat
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    runtime: Mapping[str, RuntimeHint] = field(default_factory=lambda: MappingProxyType({}))
    binding: Mapping[str, JSONValue] | None = None

    def __post_init__(self) -> None:
        _check_name(self.model_id, "model_id", MAX_MODEL_ID_CHARS)
        _check_name(self.version, "version", MAX_VERSION_CHARS)
        object.__setattr__(self, "format", _model_format(self.format))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        for what, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            if len(specs) > MAX_TENSOR_SPECS:
                raise _fail(f"{what} must have at most {MAX_TENSOR_SPECS} entries")
            names = [spec.name for spec in specs]
            if len(set(names)) != len(names):
                raise _fail(f"{what} names must be unique, got {names}")
        if len(self.runtime) > MAX_RUNTIME_HINTS:
            raise _fail(f"runtime must have at most {MAX_RUNTIME_HINTS} hints")
        for key, value in self.runtime.items():
            _check_name(key, "runtime hint name", MAX_NAME_CHARS)
            if not isinstance(value, str | int):  # bool is an int
                raise _fail(f"runtime.{key} must be a string, integer or boolean")
            if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
                raise _fail(f"runtime.{key} is outside the I-JSON integer range")
        # Freeze the mappings so a parsed manifest cannot be edited behind the reader's back.
        object.__setattr__(self, "runtime", MappingProxyType(dict(self.runtime)))
        if self.binding is not None:
            object.__setattr__(self, "binding", MappingProxyType(dict(self.binding)))


@dataclass(frozen=True, slots=True)
class Manifest:
    """A bundle's manifest: the producer's fields and the file table.

    Attributes:
        fields: model id, version, format, signature, runtime hints and binding.
        files: The files in bundle order; ``files[0]`` is the entry file.
    """

    fields: ManifestFields
    files: tuple[FileEntry, ...]

    @property
    def entry(self) -> FileEntry:
        """The entry file: the model, in ``fields.format``."""
        return self.files[0]

    def file(self, name: str) -> FileEntry:
        """The entry for ``name``.

        Raises:
            UsageError: No file has that name.
        """
        for entry in self.files:
            if entry.name == name:
                return entry
        raise UsageError(f"bundle has no file named {name!r}")

    def encode(self) -> bytes:
        """Compact UTF-8 JSON with sorted keys: equal manifests give equal bytes."""
        f = self.fields
        obj: dict[str, Any] = {
            "model_id": f.model_id,
            "version": f.version,
            "format": f.format.value,
            "files": [e.to_json() for e in self.files],
            "inputs": [s.to_json() for s in f.inputs],
            "outputs": [s.to_json() for s in f.outputs],
            "runtime": dict(f.runtime),
            "binding": None if f.binding is None else dict(f.binding),
        }
        try:
            text = json.dumps(
                obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise _fail(f"manifest is not valid I-JSON: {exc}") from None
        return text.encode("utf-8")


def align(offset: int) -> int:
    """The first multiple of 64 at or after ``offset``."""
    return -(-offset // ALIGNMENT_BYTES) * ALIGNMENT_BYTES


def _check_name(value: object, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise _fail(f"{what} must be a string, got {json_type(value)}")
    if not 1 <= len(value) <= max_chars:
        raise _fail(f"{what} must be 1..{max_chars} characters, got {len(value)}")
    if not value.isprintable():
        raise _fail(f"{what} must not contain control characters, got {value!r}")
    return value


def _members(obj: object, what: str, required: frozenset[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _fail(f"{what} must be an object, got {json_type(obj)}")
    missing = sorted(required - obj.keys())
    if missing:
        raise _fail(f"{what} lacks member {missing[0]!r}")
    unknown = sorted(obj.keys() - required)
    if unknown:
        raise _fail(f"{what} has unknown member {unknown[0]!r}")
    return obj


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{what} must be an integer, got {json_type(value)}")
    if value < 0:
        raise _fail(f"{what} must be >= 0, got {value}")
    return value


def _parse_specs(obj: object, what: str) -> tuple[TensorSpec, ...]:
    if not isinstance(obj, list):
        raise _fail(f"{what} must be an array, got {json_type(obj)}")
    specs = []
    for i, item in enumerate(obj):
        spec = _members(item, f"{what}[{i}]", frozenset({"name", "dtype", "shape"}))
        shape = spec["shape"]
        if not isinstance(shape, list):
            raise _fail(f"{what}[{i}].shape must be an array, got {json_type(shape)}")
        dtype = spec["dtype"]
        if not isinstance(dtype, str):
            raise _fail(f"{what}[{i}].dtype must be a string, got {json_type(dtype)}")
        specs.append(TensorSpec(spec["name"], dtype, tuple(shape)))
    return tuple(specs)


def _parse_files(obj: object, manifest_end: int) -> tuple[FileEntry, ...]:
    if not isinstance(obj, list):
        raise _fail(f"files must be an array, got {json_type(obj)}")
    if not 1 <= len(obj) <= MAX_FILES:
        raise _fail(f"files must have 1..{MAX_FILES} entries, got {len(obj)}")
    entries: list[FileEntry] = []
    names: set[str] = set()
    previous_end = manifest_end
    for i, item in enumerate(obj):
        what = f"files[{i}]"
        member = _members(item, what, frozenset({"name", "offset", "length", "sha256"}))
        name = _check_name(member["name"], f"{what}.name", MAX_NAME_CHARS)
        if not _FILE_NAME.fullmatch(name):
            raise _fail(f"{what}.name must match {_FILE_NAME.pattern}, got {name!r}")
        if name in names:
            raise _fail(f"{what}.name {name!r} is a duplicate")
        names.add(name)
        offset = _check_int(member["offset"], f"{what}.offset")
        length = _check_int(member["length"], f"{what}.length")
        digest = member["sha256"]
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise _fail(f"{what}.sha256 must be 64 lowercase hex digits")
        if offset % ALIGNMENT_BYTES:
            raise _fail(f"{what}.offset must be a multiple of {ALIGNMENT_BYTES}, got {offset}")
        if offset < previous_end:
            where = "the manifest" if i == 0 else f"files[{i - 1}]"
            raise _fail(f"{what} at offset {offset} overlaps {where}, which ends at {previous_end}")
        if offset != align(previous_end):
            raise _fail(
                f"{what}.offset must be {align(previous_end)} (canonical layout), got {offset}"
            )
        entry = FileEntry(name, offset, length, digest)
        entries.append(entry)
        previous_end = entry.end
    return tuple(entries)


def parse_manifest(data: bytes, *, offset: int) -> Manifest:
    """Parse and check a manifest that starts at byte ``offset`` of its bundle.

    Checks everything that the manifest alone decides: members and their types,
    names, hashes' form and the canonical file table (alignment, order, no
    overlap). Whether the bundle is long enough is the caller's check.

    Raises:
        BundleError: The first rule broken, with its offset for JSON errors.
    """
    obj = decode_object(data, what="manifest", base_offset=offset, error=_fail)
    _members(obj, "manifest", _MANIFEST_MEMBERS)
    runtime = obj["runtime"]
    if not isinstance(runtime, dict):
        raise _fail(f"runtime must be an object, got {json_type(runtime)}")
    binding = obj["binding"]
    if binding is not None and not isinstance(binding, dict):
        raise _fail(f"binding must be null or an object, got {json_type(binding)}")
    if not isinstance(obj["model_id"], str) or not isinstance(obj["version"], str):
        raise _fail("model_id and version must be strings")
    fields = ManifestFields(
        model_id=obj["model_id"],
        version=obj["version"],
        format=_model_format(obj["format"]),
        inputs=_parse_specs(obj["inputs"], "inputs"),
        outputs=_parse_specs(obj["outputs"], "outputs"),
        runtime=runtime,
        binding=binding,
    )
    files = _parse_files(obj["files"], offset + len(data))
    return Manifest(fields, files)
